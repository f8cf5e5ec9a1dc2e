"""Commands for ``pacsd.admin.v1.AssociationService``: ``pacsctl assoc ...``.

``watch`` prints one line per event, like ``logs -f`` (JSON lines with ``-w json``)
and ends normally on Ctrl-C. ``abort`` is for the association that is stuck or
unwanted; it is not idempotent in the way the other changes are: an association that
is not live is NOT_FOUND (exit 1), since there is nothing left to abort.

On a fleet (``--endpoints``/``--fleet``) ``list`` runs on every server (a SERVER
column), ``watch`` merges every server's events, and ``get``/``abort`` take
``SERVER/ID``: association IDs are per server ("a7" exists on many), so the server is
part of the address and only that server is asked. A plain ID is enough when the fleet
has one server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import click
from pacsd.admin.v1 import associations_pb2
from pacsd.client._json import message_to_dict
from pacsd.client._stream import DropCallback, Stream
from pacsd.client.associations import event_type_name
from pacsd.client.cli import render
from pacsd.client.cli._base import CliContext
from pacsd.client.cli.fleet import ADDRESSED, FLEET_NATIVE, stream_on_fleet
from pacsd.client.cli.storage import size_text
from pacsd.client.client import Client

# -- rendering ---------------------------------------------------------------------------


def _started(a: associations_pb2.Association) -> str:
    return a.start_time.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def assoc_list(items: Sequence[associations_pb2.Association]) -> str:
    if not items:
        return "no associations"
    return render.table(
        [
            [
                a.id,
                str(a.worker),
                a.calling_ae,
                a.called_ae,
                f"{a.peer_host}:{a.peer_port}",
                _started(a),
                f"{a.messages_received}/{a.messages_sent}",
                f"{size_text(a.bytes_received)}/{size_text(a.bytes_sent)}",
                str(len(a.accepted_contexts)),
                render.yes_no(a.tls),
            ]
            for a in items
        ],
        header=[
            "ID",
            "WORKER",
            "CALLING",
            "CALLED",
            "PEER",
            "STARTED",
            "MESSAGES IN/OUT",
            "BYTES IN/OUT",
            "CONTEXTS",
            "TLS",
        ],
    )


def assoc_detail(a: associations_pb2.Association) -> str:
    summary = render.table(
        [
            ["ID", a.id],
            ["WORKER", str(a.worker)],
            ["CALLING AE", a.calling_ae],
            ["CALLED AE", a.called_ae],
            ["PEER", f"{a.peer_host}:{a.peer_port}"],
            ["STARTED", _started(a)],
            ["MESSAGES", f"{a.messages_received} received / {a.messages_sent} sent"],
            [
                "BYTES",
                f"{a.bytes_received} received / {a.bytes_sent} sent",
            ],
            [
                "TLS",
                render.yes_no(a.tls) + (f" ({a.tls_peer_subject})" if a.tls_peer_subject else ""),
            ],
        ]
    )
    contexts = render.table(
        [
            [
                str(cx.id),
                cx.abstract_syntax_name or cx.abstract_syntax,
                cx.transfer_syntax,
                "/".join(r for r, on in (("SCP", cx.scp_role), ("SCU", cx.scu_role)) if on) or "-",
            ]
            for cx in a.accepted_contexts
        ],
        header=["ID", "ABSTRACT SYNTAX", "TRANSFER SYNTAX", "ROLES"],
    )
    return f"{summary}\n\nACCEPTED CONTEXTS\n{contexts}" if a.accepted_contexts else summary


def event_line(e: associations_pb2.AssociationEvent) -> str:
    """``2026-...Z MESSAGE_RECEIVED a3 CT1->PACSD 127.0.0.1:5104 C-STORE-RQ id=1 1.2.3``."""
    when = e.time.ToDatetime(tzinfo=UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    line = (
        f"{stamp} {event_type_name(e.type)} {e.association_id} "
        f"{e.calling_ae}->{e.called_ae} {e.peer}"
    )
    if e.HasField("message"):
        m = e.message
        line += f" {m.service}-{'RSP' if m.response else 'RQ'} id={m.message_id}"
        if m.HasField("status"):
            line += f" status=0x{m.status:04X}"
        if m.sop_instance_uid:
            line += f" {m.sop_instance_uid}"
    if e.reason:
        line += f" ({e.reason})"
    return line


def _cli(ctx: click.Context) -> CliContext:
    cli = ctx.find_object(CliContext)
    assert cli is not None  # the root group always creates it
    return cli


# -- commands ----------------------------------------------------------------------------


@click.group()
def assoc() -> None:
    """Show, abort and watch the DICOM associations the server is serving."""


@assoc.command("list")
@click.pass_context
def assoc_list_cmd(ctx: click.Context) -> None:
    """Live associations, oldest first: peer, AE titles, messages and bytes so far."""
    cli = _cli(ctx)
    items = cli.client().associations.list()
    cli.emit({"associations": [message_to_dict(a) for a in items]}, assoc_list(items))


@assoc.command("get")
@click.argument("association_id", metavar="ID")
@click.pass_context
def assoc_get(ctx: click.Context, association_id: str) -> None:
    """One live association, with its accepted presentation contexts.

    With --endpoints/--fleet, ID is SERVER/ID (e.g. pacs2/a7): only that server is asked.
    """
    cli = _cli(ctx)
    item = cli.client().associations.get(association_id)
    cli.emit({"association": message_to_dict(item)}, assoc_detail(item))


@assoc.command("abort")
@click.argument("association_id", metavar="ID")
@click.pass_context
def assoc_abort(ctx: click.Context, association_id: str) -> None:
    """Send the peer an A-ABORT and free the association (thread, socket, any
    half-received dataset). Returns once the connection is closed.

    With --endpoints/--fleet, ID is SERVER/ID (e.g. pacs2/a7): only that server is asked.
    """
    cli = _cli(ctx)
    a = cli.client().associations.abort(association_id)
    cli.emit(
        {"association": message_to_dict(a), "aborted": True},
        f"association {a.id} ({a.calling_ae} -> {a.called_ae} from "
        f"{a.peer_host}:{a.peer_port}) aborted",
    )


@assoc.command("watch")
@click.option("--assoc", "association_id", default="", metavar="ID", help="Only this association.")
@click.option(
    "--ae", "ae_title", default="", metavar="AE_TITLE", help="Only associations with this AE."
)
@click.option("--lifecycle-only", is_flag=True, help="Association events only, no DIMSE messages.")
@click.pass_context
def assoc_watch(
    ctx: click.Context, association_id: str, ae_title: str, lifecycle_only: bool
) -> None:
    """Print association events and DIMSE message summaries as they happen, until
    Ctrl-C. With -w json each event is one line {"event": {...}}.

    With --endpoints/--fleet, every server's events at once: each line starts with
    the server's name ({"server": ..., "event": {...}} with -w json). A server that
    fails is reported once and the others go on; exit 4 then.
    """
    cli = _cli(ctx)
    if cli.fleet is not None:

        def open_stream(client: Client, on_dropped: DropCallback) -> Stream[Any]:
            return client.associations.watch(
                association_id=association_id,
                ae_title=ae_title,
                lifecycle_only=lifecycle_only,
                on_dropped=on_dropped,
            )

        stream_on_fleet(ctx, cli, open_stream, line=event_line, key="event", noun="events")
        return

    def on_dropped(count: int, total: int) -> None:
        if cli.json:
            click.echo(json.dumps({"dropped": {"count": count, "total": total}}))
        else:
            click.echo(
                f"pacsctl: {count} events dropped by the server: this reader fell behind "
                f"({total} in all)",
                err=True,
            )

    stream = cli.client().associations.watch(
        association_id=association_id,
        ae_title=ae_title,
        lifecycle_only=lifecycle_only,
        on_dropped=on_dropped,
    )
    try:
        for event in stream:
            if cli.json:
                click.echo(json.dumps({"event": message_to_dict(event)}, allow_nan=False))
            else:
                click.echo(event_line(event))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: exit 0
    finally:
        stream.cancel()


setattr(assoc_get, ADDRESSED, "association_id")
setattr(assoc_abort, ADDRESSED, "association_id")
setattr(assoc_watch, FLEET_NATIVE, True)  # merges the servers' streams itself

COMMANDS: tuple[click.Command, ...] = (assoc,)
