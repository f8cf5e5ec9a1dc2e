"""Commands for ``pacsd.admin.v1.AETitleService``: ``pacsctl ae ...``.

Like the other change commands, ``add`` and ``remove`` are idempotent so that
provisioning scripts can re-apply a list of peers: an identical entry or a missing one
is reported with ``changed: false`` and exit status 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from pacsd.admin.v1 import aetitles_pb2
from pacsd.client._json import message_to_dict
from pacsd.client.aetitles import PERMISSIONS, AETitleChange, PermissionsArg, permission_names
from pacsd.client.cli import render
from pacsd.client.cli._base import EXIT_ERROR, CliContext, Seconds

# -- rendering ---------------------------------------------------------------------------


def ae_list(entries: Sequence[aetitles_pb2.AETitle]) -> str:
    if not entries:
        return "no AE titles"
    return render.table(
        [
            [
                e.ae_title,
                e.host,
                str(e.port),
                _addresses_text(e),
                _permissions_text(e),
                _one_line(e.description) or "-",
            ]
            for e in entries
        ],
        header=["AE TITLE", "HOST", "PORT", "ALLOWED FROM", "PERMISSIONS", "DESCRIPTION"],
    )


def ae_detail(e: aetitles_pb2.AETitle) -> str:
    return render.table(
        [
            ["AE TITLE", e.ae_title],
            ["HOST", e.host],
            ["PORT", str(e.port)],
            ["ALLOWED FROM", _addresses_text(e)],
            ["PERMISSIONS", _permissions_text(e)],
            ["DESCRIPTION", _one_line(e.description) or "-"],
        ]
    )


def entry_dict(e: aetitles_pb2.AETitle) -> dict[str, Any]:
    """The entry for JSON output: permissions by name, or "all" when unrestricted."""
    out = message_to_dict(e)
    names = permission_names(e)
    out["permissions"] = "all" if names is None else names
    return out


def _addresses_text(e: aetitles_pb2.AETitle) -> str:
    return ",".join(e.allowed_addresses) or "any"


def _permissions_text(e: aetitles_pb2.AETitle) -> str:
    names = permission_names(e)
    if names is None:
        return "all"
    return ",".join(names) or "none"


def change_text(action: str, result: AETitleChange) -> str:
    """``AE title ARCHIVE added`` or ``AE title ARCHIVE already registered (no change)``."""
    e = result.ae_title
    where = f"{e.host}:{e.port}"
    if action == "add":
        if result.changed:
            return f"AE title {e.ae_title} added ({where})"
        return f"AE title {e.ae_title} already registered as {where} (no change)"
    if result.changed:
        return f"AE title {e.ae_title} updated ({where})"
    return f"AE title {e.ae_title} unchanged (no change)"


def echo_text(ae_title: str, rsp: aetitles_pb2.EchoAETitleResponse) -> str:
    if rsp.success:
        return (
            f"C-ECHO to {ae_title}: success (status 0x{rsp.status:04X}, {rsp.round_trip_ms:.1f} ms)"
        )
    return f"C-ECHO to {ae_title} failed: {_one_line(rsp.error) or 'no reason given'}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cli(ctx: click.Context) -> CliContext:
    cli = ctx.find_object(CliContext)
    assert cli is not None  # the root group always creates it
    return cli


# -- commands ----------------------------------------------------------------------------


@click.group()
def ae() -> None:
    """Manage the AE title registry: the DICOM peers this server knows.

    Add-ins reach peers by AE title through it (C-MOVE destinations, forwarding);
    "ae echo" checks that a registered peer answers.
    """


@ae.command("list")
@click.pass_context
def ae_list_cmd(ctx: click.Context) -> None:
    """Every registered peer, sorted by AE title."""
    cli = _cli(ctx)
    entries = cli.client().aetitles.list()
    cli.emit({"ae_titles": [entry_dict(e) for e in entries]}, ae_list(entries))


@ae.command("get")
@click.argument("ae_title")
@click.pass_context
def ae_get(ctx: click.Context, ae_title: str) -> None:
    """Host, port and description of AE_TITLE."""
    cli = _cli(ctx)
    entry = cli.client().aetitles.get(ae_title)
    cli.emit({"ae_title": entry_dict(entry)}, ae_detail(entry))


def _emit_change(cli: CliContext, action: str, result: AETitleChange) -> None:
    cli.emit(
        {"ae_title": entry_dict(result.ae_title), "changed": result.changed},
        change_text(action, result),
    )


_PERMISSIONS_HELP = (
    f"Comma-separated: {','.join(PERMISSIONS)}; 'all' (every one) or 'none' "
    "(admitted, every request refused)."
)


def _permissions(value: str | None) -> PermissionsArg:
    """--permissions as the SDK takes it; a misspelt name is a usage error (exit 2)."""
    if value is None:
        return None
    text = value.strip().lower()
    if text == "all":
        return "all"
    if text == "none":
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PERMISSIONS]
    if unknown or not names:
        raise click.BadParameter(
            f"{', '.join(unknown) or value!r} not a permission; use {_PERMISSIONS_HELP}",
            param_hint="--permissions",
        )
    return names


@ae.command("add")
@click.argument("ae_title")
@click.argument("host")
@click.argument("port", type=int)
@click.option("--description", default="", metavar="TEXT", help="Free text for people.")
@click.option(
    "--allow-address",
    "allow_addresses",
    multiple=True,
    metavar="ADDR",
    help="IP, CIDR network or host name this AE may call from (repeatable) [any].",
)
@click.option("--permissions", metavar="LIST", help=_PERMISSIONS_HELP + " [all]")
@click.pass_context
def ae_add(
    ctx: click.Context,
    ae_title: str,
    host: str,
    port: int,
    description: str,
    allow_addresses: tuple[str, ...],
    permissions: str | None,
) -> None:
    """Register AE_TITLE at HOST:PORT.

    Adding the identical entry again changes nothing (exit 0); an entry with the same
    AE title and other values is refused (AE_TITLE_EXISTS): use "ae update".
    """
    granted = _permissions(permissions)
    cli = _cli(ctx)
    result = cli.client().aetitles.create(
        ae_title,
        host,
        port,
        description,
        allowed_addresses=allow_addresses,
        permissions=granted,
    )
    _emit_change(cli, "add", result)


@ae.command("update")
@click.argument("ae_title")
@click.option("--host", metavar="HOST", help="New hostname or IP address.")
@click.option("--port", type=int, metavar="PORT", help="New TCP port.")
@click.option("--description", metavar="TEXT", help='New description ("" clears it).')
@click.option(
    "--allow-address",
    "allow_addresses",
    multiple=True,
    metavar="ADDR",
    help="Replace the allowed addresses with these (repeatable).",
)
@click.option("--any-address", is_flag=True, help="Allow calls from any address again.")
@click.option("--permissions", metavar="LIST", help="Replace the permissions. " + _PERMISSIONS_HELP)
@click.pass_context
def ae_update(
    ctx: click.Context,
    ae_title: str,
    host: str | None,
    port: int | None,
    description: str | None,
    allow_addresses: tuple[str, ...],
    any_address: bool,
    permissions: str | None,
) -> None:
    """Change the given fields of AE_TITLE; the others keep their values."""
    if allow_addresses and any_address:
        raise click.UsageError("--allow-address and --any-address exclude each other")
    addresses: tuple[str, ...] | None = None
    if allow_addresses or any_address:
        addresses = allow_addresses
    granted = _permissions(permissions)
    if (host, port, description, addresses, granted) == (None, None, None, None, None):
        raise click.UsageError(
            "give at least one of --host, --port, --description, --allow-address, "
            "--any-address, --permissions"
        )
    cli = _cli(ctx)
    result = cli.client().aetitles.update(
        ae_title,
        host=host,
        port=port,
        description=description,
        allowed_addresses=addresses,
        permissions=granted,
    )
    _emit_change(cli, "update", result)


@ae.command("remove")
@click.argument("ae_title")
@click.pass_context
def ae_remove(ctx: click.Context, ae_title: str) -> None:
    """Forget AE_TITLE; removing one that is not registered changes nothing (exit 0)."""
    cli = _cli(ctx)
    changed = cli.client().aetitles.delete(ae_title)
    text = (
        f"AE title {ae_title} removed"
        if changed
        else f"AE title {ae_title} is not registered (no change)"
    )
    cli.emit({"changed": changed}, text)


@ae.command("echo")
@click.argument("ae_title")
@click.option(
    "--peer-timeout",
    type=Seconds(allow_zero=False),
    metavar="SECONDS",
    help="How long the server waits for the peer [default: what fits in --timeout].",
)
@click.pass_context
def ae_echo(ctx: click.Context, ae_title: str, peer_timeout: float | None) -> None:
    """Have the server send a C-ECHO to AE_TITLE; exits 1 unless the peer answered
    with success."""
    cli = _cli(ctx)
    rsp = cli.client().aetitles.echo(ae_title, peer_timeout=peer_timeout)
    cli.emit({"ae_title": ae_title, "echo": message_to_dict(rsp)}, echo_text(ae_title, rsp))
    if not rsp.success:
        ctx.exit(EXIT_ERROR)


COMMANDS: tuple[click.Command, ...] = (ae,)
