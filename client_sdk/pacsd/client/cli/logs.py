"""Commands for ``pacsd.admin.v1.LogService``: ``pacsctl logs`` and ``pacsctl log-level``.

``logs`` prints one line per record, like the server's console, so a remote operator
reads the same thing as someone on the machine; ``-w json`` prints JSON lines (one
object per line, flushed as it comes) for ``jq`` and log shippers, since one JSON
document cannot end while ``--follow`` goes on. Ctrl-C ends a follow normally
(exit 0): it is how one stops watching, not a failure.

With ``--endpoints``/``--fleet`` every server's log is read at once and merged
(``fleet.stream_on_fleet``): each line starts with its server's name, each JSON line
has ``"server"``; a tail is printed in time order, a follow as records arrive.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import click
from pacsd.admin.v1 import logs_pb2
from pacsd.client._json import message_to_dict
from pacsd.client._stream import DropCallback, Stream
from pacsd.client.cli import render
from pacsd.client.cli._base import CliContext
from pacsd.client.cli.fleet import FLEET_NATIVE, stream_on_fleet
from pacsd.client.client import Client
from pacsd.client.logs import LEVELS, LogLevels, level_name

#: Records ``logs`` starts with: the last 100 kept, or 10 before following (as tail -f).
DEFAULT_TAIL = 100
DEFAULT_FOLLOW_TAIL = 10

# -- rendering ---------------------------------------------------------------------------


def timestamp(msg: logs_pb2.LogRecord) -> str:
    when = msg.time.ToDatetime(tzinfo=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def record_line(r: logs_pb2.LogRecord) -> str:
    """``2026-11-29T14:17:19.393Z INFO    [storage a2 CT1->PACSD] message``."""
    assoc = f" {r.association_id} {r.calling_ae}->{r.called_ae}" if r.association_id else ""
    line = f"{timestamp(r)} {level_name(r.level):<7} [{r.source}{assoc}] {r.message}"
    if r.exception:
        line += "\n" + textwrap.indent(r.exception.rstrip("\n"), "    ")
    return line


def levels_text(levels: LogLevels) -> str:
    rows = [["(default)", levels.default]]
    rows += [[source, level] for source, level in levels.sources.items()]
    return render.table(rows, header=["SOURCE", "LEVEL"])


def levels_document(levels: LogLevels) -> dict[str, object]:
    return {"default_level": levels.default, "sources": dict(levels.sources)}


def _record_time(r: logs_pb2.LogRecord) -> tuple[int, int, int]:
    return (r.time.seconds, r.time.nanos, r.sequence)


def _cli(ctx: click.Context) -> CliContext:
    cli = ctx.find_object(CliContext)
    assert cli is not None  # the root group always creates it
    return cli


# -- commands ----------------------------------------------------------------------------


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records until Ctrl-C.")
@click.option(
    "--level",
    type=click.Choice(LEVELS, case_sensitive=False),
    help="Only records at this level or above.",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="NAME",
    help='Only records of this source ("core", "control", an add-in); repeatable.',
)
@click.option("--assoc", "association_id", default="", metavar="ID", help="Only this association.")
@click.option(
    "--ae", "ae_title", default="", metavar="AE_TITLE", help="Only associations with this AE."
)
@click.option(
    "--tail",
    type=click.IntRange(min=0),
    metavar="N",
    help=f"Start with the last N records kept in memory [{DEFAULT_TAIL}; "
    f"{DEFAULT_FOLLOW_TAIL} with -f].",
)
@click.pass_context
def logs(
    ctx: click.Context,
    follow: bool,
    level: str | None,
    sources: Sequence[str],
    association_id: str,
    ae_title: str,
    tail: int | None,
) -> None:
    """Print the server's log: the records it keeps in memory and, with -f, new ones
    as they are logged.

    Every record says its time, level, source and, when it was logged for an
    association, the association's ID and AE titles. With -w json each record is one
    line {"record": {...}}. If this reader falls behind, the server drops records
    rather than slow down, and says how many ({"dropped": {...}} with -w json, a
    line on stderr otherwise).

    With --endpoints/--fleet, every server's log at once: each line starts with the
    server's name ({"server": ..., "record": {...}} with -w json); a tail is merged
    in time order, a follow printed as records arrive. A server that fails is
    reported once and the others go on; exit 4 then.
    """
    cli = _cli(ctx)
    if tail is None:
        tail = DEFAULT_FOLLOW_TAIL if follow else DEFAULT_TAIL
    if cli.fleet is not None:

        def open_stream(client: Client, on_dropped: DropCallback) -> Stream[Any]:
            return client.logs.stream(
                follow=follow,
                tail=tail or 0,
                level=level,
                sources=sources,
                association_id=association_id,
                ae_title=ae_title,
                on_dropped=on_dropped,
            )

        stream_on_fleet(
            ctx,
            cli,
            open_stream,
            line=record_line,
            key="record",
            noun="records",
            sort_key=None if follow else _record_time,
        )
        return

    def on_dropped(count: int, total: int) -> None:
        if cli.json:
            click.echo(json.dumps({"dropped": {"count": count, "total": total}}))
        else:
            click.echo(
                f"pacsctl: {count} records dropped by the server: this reader fell behind "
                f"({total} in all)",
                err=True,
            )

    stream = cli.client().logs.stream(
        follow=follow,
        tail=tail,
        level=level,
        sources=sources,
        association_id=association_id,
        ae_title=ae_title,
        on_dropped=on_dropped,
    )
    try:
        for record in stream:
            if cli.json:
                click.echo(json.dumps({"record": message_to_dict(record)}, allow_nan=False))
            else:
                click.echo(record_line(record))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a follow ends: exit 0
    finally:
        stream.cancel()


@click.command("log-level")
@click.argument("level", required=False, metavar="[LEVEL]")
@click.option(
    "--source",
    default="",
    metavar="NAME",
    help='Set this source\'s level ("core", "control", "pynetdicom", an add-in) '
    "instead of the default.",
)
@click.pass_context
def log_level(ctx: click.Context, level: str | None, source: str) -> None:
    """Show the log levels, or set one while the server runs.

    LEVEL is DEBUG, INFO, AUDIT, WARNING, ERROR or CRITICAL; with --source,
    "default" removes the source's own level so it follows the default again.
    Changes last until the server restarts.
    """
    cli = _cli(ctx)
    api = cli.client().logs
    if level is None:
        if source:
            raise click.UsageError("--source needs a LEVEL")
        levels = api.levels()
        cli.emit({"levels": levels_document(levels)}, levels_text(levels))
        return
    wanted: str | None = level.upper()
    if wanted == "DEFAULT":
        if not source:
            raise click.UsageError('"default" only applies with --source')
        wanted = None
    elif wanted not in LEVELS:
        raise click.BadParameter(
            f"{level!r} is not one of {', '.join(LEVELS)} (or default)", param_hint="LEVEL"
        )
    result = api.set_level(wanted, source)
    who = f"source {source}" if source else "default level"
    if source:
        shown = result.levels.sources.get(source) or f"{result.levels.default} (the default)"
    else:
        shown = result.levels.default
    text = f"{who} set to {shown}" if result.changed else f"{who} already {shown} (no change)"
    cli.emit({"levels": levels_document(result.levels), "changed": result.changed}, text)


setattr(logs, FLEET_NATIVE, True)  # merges the servers' streams itself

#: Every command works on fleets (--endpoints / --fleet): log-level runs per server,
#: logs merges the servers' streams.
COMMANDS: tuple[click.Command, ...] = (logs, log_level)
