"""``pacsctl certs ...``: keys and certificates for TLS.

``init`` and ``issue`` run locally (no server): they make a development CA and the
certificates pacsd, DICOM peers and control-plane clients present. Commands that ask a
running server about its certificates join the same ``certs`` group.

``show`` and ``reload`` work on fleets (``--endpoints``/``--fleet``) like every server
command; ``init`` and ``issue`` are ``LOCAL_ONLY`` and refuse fleet options: they write
files on this machine, and "once per server" would only write the same files again.

``pacsd.client.certs`` (and so ``cryptography``) is imported inside the commands: the
rest of pacsctl, and ``pacsd.client``, must work with only grpcio and protobuf.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
import grpc
from pacsd.client.cli import render
from pacsd.client.cli._base import CliContext
from pacsd.client.cli.fleet import LOCAL_ONLY
from pacsd.client.errors import PacsdError

if TYPE_CHECKING:
    from pacsd.admin.v1 import security_pb2
    from pacsd.client.certs import Issued, KeyType, Usage

DEFAULT_CA_DIR = "pacsd-ca"
KEY_TYPES = ("rsa", "ec")
USAGES = ("server", "client", "both")
#: Longest validity in days (pacsd.client.certs.MAX_DAYS, repeated to avoid the import).
MAX_DAYS = 100 * 366

#: CertsError reason -> the gRPC code pacsctl reports it under, so local failures look
#: like server ones to scripts: one stderr line, ``(CODE/REASON)``, exit status 1.
_CODES = {
    "CERTS_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "CERTS_CA_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "CERTS_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "CERTS_BAD_FILE": grpc.StatusCode.FAILED_PRECONDITION,
    "CERTS_IO_ERROR": grpc.StatusCode.UNKNOWN,
}


def _cli(ctx: click.Context) -> CliContext:
    cli = ctx.find_object(CliContext)
    assert cli is not None  # the root group always creates it
    return cli


@contextmanager
def _certs_errors() -> Iterator[None]:
    """Bad values are usage errors (exit 2, nothing written); anything else is a
    PacsdError, which pacsctl reports like a server error (exit 1)."""
    from pacsd.client.certs import BAD_INPUT, CertsError

    try:
        yield
    except CertsError as exc:
        if exc.reason == BAD_INPUT:
            raise click.UsageError(str(exc)) from None
        metadata = {"path": str(exc.path)} if exc.path is not None else {}
        raise PacsdError(
            str(exc),
            code=_CODES.get(exc.reason, grpc.StatusCode.UNKNOWN),
            reason=exc.reason,
            metadata=metadata,
        ) from None


def _document(issued: Issued) -> dict[str, Any]:
    """Issued's files plus what describe() reads back: the JSON for scripts."""
    from pacsd.client.certs import describe

    document = describe(issued.cert).to_dict()
    document.pop("path")
    return {**issued.to_dict(), **document}


def _text(headline: str, document: dict[str, Any]) -> str:
    rows = [
        ["CERTIFICATE", document["cert"]],
        ["KEY", f"{document['key']} (mode 0600)"],
        ["CA CERTIFICATE", document["ca_cert"]],
        ["SUBJECT", document["subject"]],
        ["ISSUER", document["issuer"]],
        ["SANS", ", ".join(document["sans"]) or "-"],
        ["USAGES", ", ".join(document["usages"]) or ("CA" if document["is_ca"] else "-")],
        ["KEY TYPE", document["key_type"]],
        ["NOT AFTER", document["not_after"]],
        ["SHA-256", document["fingerprint_sha256"]],
    ]
    return f"{headline}\n{render.table(rows)}"


def _stem(common_name: str) -> str:
    """A file stem from a common name: "operator alice" -> "operator-alice",
    "*.example.org" -> "example.org"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", common_name.strip()).strip("-.") or "cert"


def _ca_dir_option(help_text: str) -> Any:
    return click.option(
        "--dir",
        "ca_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_CA_DIR,
        show_default=True,
        envvar="PACSCTL_CA_DIR",
        show_envvar=True,
        metavar="DIR",
        help=help_text,
    )


_days = click.IntRange(min=1, max=MAX_DAYS)
_key_type = click.Choice(KEY_TYPES, case_sensitive=False)


@click.group()
def certs() -> None:
    """Keys and certificates for TLS (DICOM and the control plane).

    "init" and "issue" work locally, without a server: a development CA and the
    certificates it signs, for servers, DICOM clients and pacsctl/SDK clients (no
    --endpoints/--fleet). "show" and "reload" ask a running server (or every server
    of a fleet) about its DICOM TLS certificates.
    """


@certs.command("init")
@_ca_dir_option("Directory to create the CA in (ca.crt, ca.key).")
@click.option(
    "--cn",
    "common_name",
    default="pacsd development CA",
    show_default=True,
    metavar="NAME",
    help="Common name of the CA.",
)
@click.option("--days", type=_days, default=3650, show_default=True, help="Validity.")
@click.option("--key-type", type=_key_type, default="rsa", show_default=True, help="Key type.")
@click.option(
    "--force", is_flag=True, help="Replace an existing CA (its certificates stop verifying)."
)
@click.pass_context
def certs_init(
    ctx: click.Context, ca_dir: Path, common_name: str, days: int, key_type: str, force: bool
) -> None:
    """Create a self-signed development CA: DIR/ca.crt and DIR/ca.key (mode 0600).

    Refuses to replace an existing CA unless --force is given.
    """
    from pacsd.client.certs import create_ca

    cli = _cli(ctx)
    with _certs_errors():
        issued = create_ca(
            ca_dir,
            common_name,
            days=days,
            key_type=cast("KeyType", key_type.lower()),
            force=force,
        )
        document = _document(issued)
    cli.emit({"certificate": document}, _text(f"created CA in {ca_dir}", document))


@certs.command("issue")
@click.option("--cn", "common_name", required=True, metavar="NAME", help="Common name.")
@click.option(
    "--san",
    "sans",
    multiple=True,
    metavar="NAME|IP",
    help="Subject alternative name; repeat for several. An IP address becomes an IP SAN, "
    "anything else a DNS name (prefix DNS: or IP: to force). Default: the common name.",
)
@click.option(
    "--name",
    "file_stem",
    metavar="FILE_STEM",
    help="Write FILE_STEM.crt and FILE_STEM.key [default: the common name].",
)
@_ca_dir_option("Directory of the CA that signs (ca.crt, ca.key).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Directory to write the certificate and key to [default: the CA directory].",
)
@click.option(
    "--usage",
    type=click.Choice(USAGES, case_sensitive=False),
    default="both",
    show_default=True,
    help="Extended key usage: serverAuth, clientAuth or both.",
)
@click.option("--days", type=_days, default=825, show_default=True, help="Validity.")
@click.option("--key-type", type=_key_type, default="rsa", show_default=True, help="Key type.")
@click.option("--force", is_flag=True, help="Replace existing files of the same name.")
@click.pass_context
def certs_issue(
    ctx: click.Context,
    common_name: str,
    sans: tuple[str, ...],
    file_stem: str | None,
    ca_dir: Path,
    out_dir: Path | None,
    usage: str,
    days: int,
    key_type: str,
    force: bool,
) -> None:
    """Issue a certificate and key signed by the CA in --dir.

    Use --usage server for pacsd (DICOM TLS and the control plane), client for DICOM
    peers and pacsctl/SDK clients, both for a host that is both. Refuses to replace
    existing files unless --force is given.
    """
    from pacsd.client.certs import issue_certificate

    cli = _cli(ctx)
    with _certs_errors():
        issued = issue_certificate(
            ca_dir,
            file_stem if file_stem is not None else _stem(common_name),
            common_name,
            sans,
            out_dir=out_dir,
            usage=cast("Usage", usage.lower()),
            days=days,
            key_type=cast("KeyType", key_type.lower()),
            force=force,
        )
        document = _document(issued)
    cli.emit({"certificate": document}, _text(f"issued {usage.lower()} certificate", document))


# -- the server's DICOM TLS certificates (SecurityService) -------------------------------


def _tls_text(headline: str, tls: security_pb2.TlsStatus) -> str:
    if not tls.enabled:
        return f"{headline}: no DICOM TLS listener is configured"
    where = f"{tls.host}:{tls.port}" if tls.listening else f"{tls.host} (not listening)"
    rows = [
        [
            c.role,
            c.subject,
            c.not_after.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ"),
            c.sha256_fingerprint,
            c.path,
        ]
        for c in tls.certificates
    ]
    table = render.table(rows, header=["ROLE", "SUBJECT", "NOT AFTER", "SHA-256", "FILE"])
    return f"{headline}: DICOM TLS on {where}, provided by {tls.provider or '-'}\n{table}"


@certs.command("show")
@click.pass_context
def certs_show(ctx: click.Context) -> None:
    """The certificates the server's DICOM TLS listener serves (role viewer)."""
    from pacsd.client._json import message_to_dict

    cli = _cli(ctx)
    tls = cli.client().security.certificates()
    cli.emit({"tls": message_to_dict(tls)}, _tls_text("certificates", tls))


@certs.command("reload")
@click.pass_context
def certs_reload(ctx: click.Context) -> None:
    """Read the server's certificate, key and CA files again (role admin).

    Replace the files first; the DICOM TLS port stays open and the next association is
    served with the new certificate. Files that cannot be used leave the old ones in
    force (exit 1, reason CERTIFICATE_INVALID).
    """
    from pacsd.client._json import message_to_dict

    cli = _cli(ctx)
    tls = cli.client().security.reload()
    cli.emit({"tls": message_to_dict(tls)}, _tls_text("certificates reloaded", tls))


for _command in (certs_init, certs_issue):
    setattr(_command, LOCAL_ONLY, True)

#: Registered by cli/main.py.
COMMANDS: tuple[click.Command, ...] = (certs,)
