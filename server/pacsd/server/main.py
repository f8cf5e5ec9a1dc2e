"""``pacsd``: the server's command line."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click
from pacsd.server.config import ConfigError, load_settings
from pacsd.server.version import VERSION


def _fail(message: str) -> None:
    click.echo(f"pacsd: error: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="pacsd")
def cli() -> None:
    """pacsd: an extensible DICOM server framework."""


@cli.command()
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="TOML settings file."
)
@click.option("--ae-title", help="AE title answered on the DICOM port [PACSD].")
@click.option("--dicom-host", help="Address of the DICOM listener [127.0.0.1].")
@click.option("--dicom-port", type=int, help="DICOM port; 0 picks a free one [11112].")
@click.option(
    "--control-host",
    help="Address of the gRPC control plane; off loopback it needs TLS and credentials "
    "[127.0.0.1].",
)
@click.option("--control-port", type=int, help="Control-plane port; 0 picks a free one [50051].")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory [./pacsd-data].")
@click.option("--log-level", help="DEBUG, INFO, WARNING, ERROR or CRITICAL [INFO].")
@click.option(
    "--metrics-port", type=int, help="Prometheus endpoint port; 0 picks a free one [disabled]."
)
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run the DICOM server and its control plane until SIGTERM, SIGINT or Shutdown.

    Every option also reads from PACSD_<OPTION> (e.g. PACSD_DICOM_PORT) and from the
    config file; a flag beats the environment, which beats the file.
    """
    try:
        settings = load_settings(flags, config_file)
    except ConfigError as exc:
        _fail(str(exc))
        return

    from pacsd.server import logsetup
    from pacsd.server.runtime import Runtime, StartupError

    try:
        logsetup.configure(settings.log_level, settings)
    except logsetup.LogSetupError as exc:
        _fail(str(exc))
        return
    runtime = Runtime(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        runtime.request_shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        line = runtime.start()
    except StartupError as exc:
        _fail(str(exc))
        return
    click.echo(line)
    sys.stdout.flush()
    runtime.wait()
    runtime.shutdown()


@cli.group()
def index() -> None:
    """Maintain the instance index offline (no pacsd may be serving the data directory)."""


@index.command("rebuild")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="TOML settings file."
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory [./pacsd-data].")
def index_rebuild(config_file: Path | None, **flags: Any) -> None:
    """Drop every index row and index every file under DATA_DIR/blobs again.

    For an index that was lost or damaged: the files are the truth, the index is
    derived from them. Settings load as for "serve" (index_url included). Refuses
    while a pacsd holds the data directory's lock, since it would serve from an
    index being emptied under it.
    """
    try:
        settings = load_settings(flags, config_file)
    except ConfigError as exc:
        _fail(str(exc))
        return

    from pacsd.server import logsetup
    from pacsd.server.storage.archive import Archive
    from pacsd.server.storage.blobs import BlobStore
    from pacsd.server.storage.index.db import IndexUnavailable, open_index_db
    from pacsd.server.storage.index.repository import Index
    from pacsd.server.storage.lock import DataDirLock, DataDirLocked

    logsetup.configure(settings.log_level)
    if not settings.data_dir.is_dir():
        _fail(f"data directory {settings.data_dir} does not exist")
        return
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
    except DataDirLocked as exc:
        _fail(f"{exc}; stop that pacsd first")
        return
    except OSError as exc:
        _fail(f"cannot lock {lock.path}: {exc.strerror}")
        return
    try:
        try:
            db = open_index_db(settings.index_url, settings.data_dir)
        except IndexUnavailable as exc:
            _fail(str(exc))
            return
        node = _server_id(settings.data_dir)
        archive = Archive(BlobStore(settings.data_dir), Index(db), node=node)
        try:
            count = archive.rebuild()
        finally:
            archive.close()
            db.close()
    finally:
        lock.release()
    click.echo(f"rebuilt {count} instances")


@cli.group()
def token() -> None:
    """Bearer tokens for the control plane (docs/security.md)."""


@token.command("create")
@click.option("--name", required=True, help="Who or what uses the token; shown in audit records.")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["viewer", "operator", "admin"]),
    help="viewer: read; operator: lifecycle, AE titles, associations; admin: everything.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object with token, sha256 and the TOML table.",
)
def token_create(name: str, role: str, output: str) -> None:
    """Print a new random token once, with the table to add to the settings file.

    The server stores only the token's SHA-256, so the token cannot be shown again:
    hand it to its user now (e.g. as PACSCTL_TOKEN). Restart pacsd after adding the
    table.
    """
    import json

    from pacsd.server.config import ControlToken
    from pacsd.server.control.tokens import hash_token, new_token, toml_entry
    from pydantic import ValidationError

    secret = new_token()
    try:
        entry = ControlToken(name=name, role=role, sha256=hash_token(secret))  # type: ignore[arg-type]
    except ValidationError as exc:
        _fail(f"invalid --name {name!r}: {exc.errors()[0]['msg']}")
        return
    snippet = toml_entry(entry.name, entry.role, entry.sha256)
    if output == "json":
        document = {
            "name": entry.name,
            "role": entry.role,
            "token": secret,
            "sha256": entry.sha256,
            "toml": snippet,
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"token: {secret}")
    click.echo("")
    click.echo("# Add to the settings file and restart pacsd. The token is not stored")
    click.echo("# anywhere and cannot be shown again.")
    click.echo(snippet, nl=False)


@cli.command("hash-password")
def hash_password() -> None:
    """Print the hash of a DICOM User Identity passcode, for the dicom_users setting.

    The passcode is read from standard input (its first line) or, on a terminal, from a
    prompt that does not echo; it is never shown or logged. Each run uses a new salt,
    so hashing the same passcode twice gives two different, equally valid hashes.
    """
    from pacsd.server.passcodes import hash_passcode

    if sys.stdin.isatty():
        passcode = click.prompt(
            "Passcode", hide_input=True, confirmation_prompt=True, err=True, type=str
        )
    else:
        passcode = sys.stdin.readline().rstrip("\r\n")
    if not passcode:
        _fail("the passcode is empty")
        return
    click.echo(hash_passcode(passcode))


def _server_id(data_dir: Path) -> str:
    """This data directory's server ID (the node its files belong to in the index)."""
    from pacsd.server.storage.database import ServerDatabase

    db = ServerDatabase.open(data_dir)
    try:
        return db.meta("server_id") or ""
    finally:
        db.close()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
