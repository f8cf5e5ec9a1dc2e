"""Every pacsctl command on many servers: ``--endpoints a,b`` or ``--fleet fleet.toml``.

The single-server commands are not rewritten for fleets. When a fleet option is given,
``install`` has wrapped each command's callback so that it runs once per server,
concurrently (``pacsd.client.Fleet``), each run seeing a CliContext of its own whose
client is that server's and whose output is captured instead of printed. The captured
results are then merged: one JSON document with an object per server, or one table with
a SERVER column. That keeps a single definition of what each command does, and every
command (including ones added later) gets fleet support by being registered.

Three kinds of command do not fit that mould, and say so with an attribute:

- streams (``logs``, ``assoc watch``) are ``FLEET_NATIVE`` and call ``stream_on_fleet``,
  which reads every server's stream at once and merges them into one output, each line
  or JSON line carrying its server;
- commands naming one server's object (``assoc get/abort ID``) are ``ADDRESSED``: on a
  fleet the ID reads ``SERVER/ID`` and the command runs on that server alone (a plain
  ID is accepted when the fleet has exactly one server);
- commands that act locally (``certs init/issue`` write files) are ``LOCAL_ONLY`` and
  refuse fleet options: running them "per server" would only write the same files N
  times on this machine.

Exit status with a fleet: 0 when every server succeeded, 3 when none could be reached,
4 otherwise (some failed or were unreachable); 2 for usage errors as always.
"""

from __future__ import annotations

import functools
import json
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pacsd.client._json import message_to_dict
from pacsd.client._stream import DropCallback, Stream
from pacsd.client.cli import render
from pacsd.client.cli._base import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNREACHABLE,
    JSON,
    CliContext,
    exit_code,
    one_line,
)
from pacsd.client.client import Client
from pacsd.client.errors import PacsdError
from pacsd.client.fleet import Fleet, error_to_dict
from pacsd.client.inventory import (
    DEFAULT_PARALLELISM,
    FleetServer,
    InventoryError,
    load_inventory,
)

#: Attribute set on commands that run per server (wrapped) or handle fleets themselves.
FAN_OUT = "pacsctl_fan_out"
FLEET_NATIVE = "pacsctl_fleet_native"
#: Attribute naming the parameter that holds one server's object ID (``SERVER/ID``).
ADDRESSED = "pacsctl_fleet_addressed"
#: Attribute set on commands that work on local files and refuse fleet options.
LOCAL_ONLY = "pacsctl_local_only"


# -- choosing the servers -----------------------------------------------------------------


def build_fleet(cli: CliContext, default_inventory: Path | None = None) -> Fleet:
    """The fleet the global options name (or ``default_inventory``, or the single
    ``--endpoint``); inventory problems are usage errors (exit 2), raised before any
    server is contacted."""
    opts = cli.fleet
    parallelism = opts.parallelism if opts else None
    try:
        if opts is not None and opts.endpoints:
            if opts.selector:
                raise click.UsageError("--selector needs --fleet (endpoints have no labels)")
            return Fleet.from_endpoints(
                opts.endpoints,
                timeout=cli.timeout,
                parallelism=parallelism or DEFAULT_PARALLELISM,
                credentials=cli.credentials,
            )
        path = opts.inventory if opts is not None and opts.inventory else default_inventory
        if path is None:
            if opts is not None and opts.selector:
                raise click.UsageError("--selector needs --fleet")
            return Fleet(
                [FleetServer(cli.endpoint, cli.endpoint)],
                timeout=cli.timeout,
                credentials=cli.credentials,
            )
        inventory = load_inventory(path)
        selector = opts.selector if opts else None
        fleet = Fleet.from_inventory(
            inventory,
            selector=selector,
            timeout=cli.timeout if _timeout_given() else None,  # else the inventory's
            parallelism=parallelism,
            # --token/--cacert/... serve the servers the inventory gives no profile.
            credentials=cli.credentials,
        )
    except InventoryError as exc:
        hint = "--endpoints" if opts is not None and opts.endpoints else "--fleet"
        raise click.BadParameter(str(exc), param_hint=hint) from exc
    if not len(fleet):
        raise click.UsageError(f"no server in {path} matches selector {selector!r}")
    return fleet


def _timeout_given() -> bool:
    """Whether --timeout (or PACSCTL_TIMEOUT) was set, so that it beats the
    inventory's ``defaults.timeout``; pacsctl's own default does not."""
    root = click.get_current_context().find_root()
    source = root.get_parameter_source("timeout")
    return source is not None and source is not click.core.ParameterSource.DEFAULT


# -- running a command per server ------------------------------------------------------------


@dataclass
class Outcome:
    """What one server's run of a command produced."""

    server: FleetServer
    exit_code: int = EXIT_OK
    document: dict[str, Any] | None = None
    text: str | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server.name,
            "endpoint": self.server.endpoint,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "result": self.document,
            "error": error_to_dict(self.error) if self.error is not None else None,
        }


@dataclass
class _ServerCli(CliContext):
    """A CliContext for one server of a fleet: its client is the fleet's (opened only
    when the command asks for it), its output is kept instead of printed."""

    outputs: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    fleet_client: Callable[[], Client] | None = None

    def client(self) -> Client:
        assert self.fleet_client is not None
        return self.fleet_client()

    def close(self) -> None:  # the Fleet owns the client
        self._client = None

    def emit(self, document: dict[str, Any], text: str) -> None:
        self.outputs.append((document, text))


def install(commands: Iterable[click.Command]) -> None:
    """Make every command in ``commands`` (groups included, recursively) run per
    server when a fleet option is given; ``FLEET_NATIVE`` ones are left to handle
    fleets themselves, ``LOCAL_ONLY`` ones refuse them."""
    for command in commands:
        setattr(command, FAN_OUT, True)
        if isinstance(command, click.Group):
            install(command.commands.values())
        elif getattr(command, FLEET_NATIVE, False) or command.callback is None:
            continue
        elif getattr(command, LOCAL_ONLY, False):
            command.callback = _refuse_fleet(command.callback)
        else:
            command.callback = _fan_out(command.callback)


def supports_fleet(command: click.Command | None) -> bool:
    return command is not None and bool(
        getattr(command, FAN_OUT, False) or getattr(command, FLEET_NATIVE, False)
    )


def _fan_out(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        cli = ctx.find_object(CliContext)
        if cli is None or cli.fleet is None or isinstance(cli, _ServerCli):
            return callback(*args, **kwargs)
        _run_on_fleet(ctx, cli, callback, kwargs)
        return None

    return wrapper


def _refuse_fleet(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        cli = ctx.find_object(CliContext)
        if cli is not None and cli.fleet is not None:
            raise click.UsageError(
                f"{command_key(ctx)!r} does not support --endpoints/--fleet "
                "(it works on local files, not on servers)"
            )
        return callback(*args, **kwargs)

    return wrapper


def _address(
    ctx: click.Context, fleet: Fleet, params: dict[str, Any]
) -> tuple[list[str] | None, dict[str, Any]]:
    """For an ``ADDRESSED`` command: the one server its ``SERVER/ID`` argument names,
    and the parameters with the plain ID; (None, params) for other commands."""
    name = getattr(ctx.command, ADDRESSED, None)
    if name is None:
        return None, params
    value = str(params[name])
    server, slash, ident = value.rpartition("/")
    if not slash:
        if len(fleet) == 1:
            return None, params
        example = f"{fleet.servers[0].name}/{value}"
        raise click.UsageError(
            f"IDs belong to one server: with a fleet of {len(fleet)} servers give "
            f"SERVER/ID (e.g. {example!r})",
            ctx,
        )
    if not server or not ident:
        raise click.BadParameter(f"{value!r} is not SERVER/ID", ctx, param_hint="ID")
    try:
        fleet[server]
    except KeyError:
        raise click.BadParameter(
            f"no server named {server!r} in the fleet", ctx, param_hint="ID"
        ) from None
    return [server], {**params, name: ident}


def _run_on_fleet(
    ctx: click.Context, cli: CliContext, callback: Callable[..., Any], params: dict[str, Any]
) -> None:
    fleet = build_fleet(cli)
    with fleet:
        names, params = _address(ctx, fleet, params)

        def one(server: FleetServer) -> Outcome:
            mine = _ServerCli(
                endpoint=server.endpoint,
                write_out=cli.write_out,
                timeout=cli.timeout,
                fleet_client=lambda: fleet.client(server.name),
            )
            # A sibling of the real context (same parent and name), so that usage
            # errors raised inside show the command's own path.
            sub = click.Context(ctx.command, parent=ctx.parent, info_name=ctx.info_name, obj=mine)
            outcome = Outcome(server)
            try:
                sub.invoke(callback, **params)
            except click.exceptions.Exit as exc:
                outcome.exit_code = exc.exit_code
            except PacsdError as exc:
                outcome.exit_code, outcome.error = exit_code(exc), exc
            if mine.outputs:
                outcome.document, outcome.text = mine.outputs[-1]
            return outcome

        results = fleet.map_servers(one, names=names)
    outcomes: list[Outcome] = []
    for result in results:
        if isinstance(result.error, click.ClickException):
            if isinstance(result.error, click.UsageError):
                result.error.ctx = ctx
            raise result.error  # a usage error is the same on every server: report it once
        if result.error is not None:  # a bug in a command: that server's failure
            outcomes.append(Outcome(result.server, EXIT_ERROR, error=result.error))
        else:
            assert result.value is not None
            outcomes.append(result.value)
    emit_outcomes(cli, command_key(ctx), outcomes)
    ctx.exit(fleet_exit_code(outcomes))


def command_key(ctx: click.Context) -> str:
    """``"server get"``, ``"status"``: the command path below ``pacsctl``."""
    names: list[str] = []
    node: click.Context | None = ctx
    while node is not None and node.parent is not None:
        names.append(node.info_name or "")
        node = node.parent
    return " ".join(reversed(names))


def fleet_exit_code(outcomes: Sequence[Any]) -> int:
    """0 all succeeded; 3 none reachable; 4 anything in between. Each item needs
    ``ok`` and ``exit_code`` (or ``unreachable``)."""
    if all(o.ok for o in outcomes):
        return EXIT_OK
    if outcomes and all(_unreachable(o) for o in outcomes):
        return EXIT_UNREACHABLE
    return EXIT_PARTIAL


def _unreachable(outcome: Any) -> bool:
    if hasattr(outcome, "exit_code"):
        return bool(outcome.exit_code == EXIT_UNREACHABLE)
    return bool(outcome.unreachable)


# -- streams (logs, assoc watch) on a fleet ----------------------------------------------------

#: Opens one server's stream: (its client, the callback for "dropped" notices).
OpenStream = Callable[[Client, DropCallback], Stream[Any]]


def stream_on_fleet(
    ctx: click.Context,
    cli: CliContext,
    open_stream: OpenStream,
    *,
    line: Callable[[Any], str],
    key: str,
    noun: str,
    sort_key: Callable[[Any], Any] | None = None,
) -> None:
    """Read one stream per server at once and print them as one.

    Every server's stream is read on a thread of its own (a follow never ends, so
    ``--parallelism`` cannot apply: each holds its call open); items are printed by
    this thread alone, as they arrive, so lines never interleave. Text lines start
    with the server's name (a SERVER column); JSON lines gain ``"server"``. A server
    whose stream fails is reported once, when it fails (``pacsctl: error: [NAME] ...``
    on stderr, or a ``{"server", "endpoint", "exit_code", "error"}`` line), and the
    others go on. ``sort_key`` (for streams that end by themselves, e.g. a log tail)
    prints all items in that order at the end instead. Ctrl-C ends every stream. Exits
    as fleet commands do: 0, 4 when some server failed, 3 when none was reachable.
    """
    fleet = build_fleet(cli)
    width = max(len(s.name) for s in fleet.servers)
    events: queue.SimpleQueue[tuple[str, FleetServer, Any]] = queue.SimpleQueue()
    streams: list[Stream[Any]] = []
    lock = threading.Lock()
    stopping = False

    def read(server: FleetServer) -> None:
        try:
            client = fleet.client(server.name)

            def dropped(count: int, total: int) -> None:
                events.put(("dropped", server, (count, total)))

            stream = open_stream(client, dropped)
            with lock:
                streams.append(stream)
                if stopping:
                    stream.cancel()
            for item in stream:
                events.put(("item", server, item))
        except Exception as exc:  # one server's failure is its own
            events.put(("error", server, exc))
        finally:
            events.put(("end", server, None))

    def show(server: FleetServer, item: Any) -> None:
        if cli.json:
            document = {"server": server.name, key: message_to_dict(item)}
            click.echo(json.dumps(document, allow_nan=False))
        else:
            for text in line(item).splitlines():
                click.echo(f"{server.name:<{width}}  {text}")

    errors: dict[str, Exception] = {}
    buffered: list[tuple[Any, int, FleetServer, Any]] = []
    order = {s.name: index for index, s in enumerate(fleet.servers)}
    with fleet:
        for server in fleet.servers:
            threading.Thread(target=read, args=(server,), daemon=True).start()
        running = len(fleet)
        try:
            while running:
                kind, server, value = events.get()
                if kind == "end":
                    running -= 1
                elif kind == "item" and sort_key is not None:
                    buffered.append((sort_key(value), order[server.name], server, value))
                elif kind == "item":
                    show(server, value)
                elif kind == "dropped":
                    _stream_dropped(cli, server, noun, *value)
                else:
                    errors[server.name] = value
                    _stream_error(cli, server, value)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a follow ends
        finally:
            with lock:
                stopping = True
                for stream in streams:
                    stream.cancel()
        buffered.sort(key=lambda entry: entry[:2])
        for _, _, server, value in buffered:
            show(server, value)
    outcomes = [
        Outcome(
            s,
            _error_exit_code(errors[s.name]) if s.name in errors else EXIT_OK,
            error=errors.get(s.name),
        )
        for s in fleet.servers
    ]
    counts = summary(outcomes)
    if counts["failed"] and not cli.json:
        click.echo(
            summary_line(counts["servers"], counts["failed"], counts["unreachable"]), err=True
        )
    ctx.exit(fleet_exit_code(outcomes))


def _error_exit_code(error: Exception) -> int:
    return exit_code(error) if isinstance(error, PacsdError) else EXIT_ERROR


def _stream_error(cli: CliContext, server: FleetServer, error: Exception) -> None:
    if cli.json:
        document = {
            "server": server.name,
            "endpoint": server.endpoint,
            "exit_code": _error_exit_code(error),
            "error": error_to_dict(error),
        }
        click.echo(json.dumps(document, allow_nan=False))
    else:
        click.echo(error_line(server.name, error), err=True)


def _stream_dropped(
    cli: CliContext, server: FleetServer, noun: str, count: int, total: int
) -> None:
    if cli.json:
        document = {"server": server.name, "dropped": {"count": count, "total": total}}
        click.echo(json.dumps(document))
    else:
        click.echo(
            f"pacsctl: [{server.name}] {count} {noun} dropped by the server: this reader "
            f"fell behind ({total} in all)",
            err=True,
        )


# -- output ---------------------------------------------------------------------------------


def error_line(name: str, error: BaseException) -> str:
    """``pacsctl: error: [pacs3] cannot reach pacsd at ...: ... (UNAVAILABLE)``."""
    if isinstance(error, PacsdError):
        message = error.message
        if error.unreachable:
            message = f"cannot reach pacsd at {error.endpoint}: {message}"
        tag = f"{error.code.name}/{error.reason}" if error.reason else error.code.name
        return f"pacsctl: error: [{name}] {one_line(message)} ({tag})"
    return f"pacsctl: error: [{name}] {one_line(f'{type(error).__name__}: {error}')}"


def summary_line(total: int, failed: int, unreachable: int) -> str:
    ok = total - failed
    text = f"pacsctl: {ok} of {total} servers succeeded"
    if failed:
        text += f", {failed - unreachable} failed, {unreachable} unreachable"
    return text


def summary(outcomes: Sequence[Outcome]) -> dict[str, int]:
    return {
        "servers": len(outcomes),
        "succeeded": sum(1 for o in outcomes if o.ok),
        "failed": sum(1 for o in outcomes if not o.ok),
        "unreachable": sum(1 for o in outcomes if o.exit_code == EXIT_UNREACHABLE),
    }


def emit_outcomes(cli: CliContext, key: str, outcomes: Sequence[Outcome]) -> None:
    counts = summary(outcomes)
    if cli.write_out == JSON:
        document = {"servers": [o.to_dict() for o in outcomes], "summary": counts}
        click.echo(json.dumps(document, indent=2, allow_nan=False))
        return
    answered = [o for o in outcomes if o.document is not None and o.text is not None]
    if answered:
        renderer = _RENDERERS.get(key, _generic)
        click.echo(renderer(answered))
    for o in outcomes:
        if o.error is not None:
            click.echo(error_line(o.server.name, o.error), err=True)
    if counts["failed"]:
        click.echo(
            summary_line(counts["servers"], counts["failed"], counts["unreachable"]), err=True
        )


# -- tables with a SERVER column ------------------------------------------------------------


def _generic(outcomes: Sequence[Outcome]) -> str:
    """Commands without a fleet table of their own (added later, say): one-line results
    become SERVER | RESULT; single tables get a SERVER column (key/value tables become
    SERVER | KEY | VALUE); anything else is shown as one section per server."""
    texts = [o.text or "" for o in outcomes]
    if all("\n" not in t for t in texts):
        return render.table(
            [[o.server.name, t] for o, t in zip(outcomes, texts, strict=True)],
            header=["SERVER", "RESULT"],
        )
    parsed = [_parse_table(t) for t in texts]
    headers = {tuple(p[0]) for p in parsed if p is not None}
    if all(p is not None for p in parsed) and len(headers) == 1:
        (header,) = headers
        rows = [
            [o.server.name, *row]
            for o, p in zip(outcomes, parsed, strict=True)
            if p is not None
            for row in p[1]
        ]
        return render.table(rows, header=["SERVER", *(header or ("KEY", "VALUE"))])
    return "\n\n".join(f"== {o.server.name} ({o.server.endpoint})\n{o.text}" for o in outcomes)


def _parse_table(text: str) -> tuple[tuple[str, ...], list[list[str]]] | None:
    """The header (() when none) and rows of one ``render.table`` box, or None when
    ``text`` is not exactly one such box (or a cell held the separator itself)."""
    lines = text.splitlines()
    if len(lines) < 3 or not all(line.startswith(("+", "|")) for line in lines):
        return None
    cells = [
        [cell.strip() for cell in line[2:-2].split(" | ")]
        for line in lines
        if line.startswith("| ") and line.endswith(" |")
    ]
    if len(cells) != sum(1 for line in lines if line.startswith("|")) or not cells:
        return None
    has_header = lines[2].startswith("+") and len(lines) > 3
    header = tuple(cells[0]) if has_header else ()
    rows = cells[1:] if has_header else cells
    width = len(cells[0])
    if any(len(row) != width for row in cells) or (not has_header and width != 2):
        return None
    return header, rows


def _doc(o: Outcome) -> dict[str, Any]:
    assert o.document is not None
    return o.document


def _uptime(start: str | None) -> str:
    if not start:
        return "-"
    try:
        started = datetime.fromisoformat(start)
    except ValueError:
        return "-"
    return render.duration((datetime.now(UTC) - started).total_seconds())


def _servers(outcomes: Sequence[Outcome]) -> str:
    rows = []
    for o in outcomes:
        s = _doc(o)["server"]
        c = s["counters"]
        dicom = next((item for item in s["listeners"] if item["protocol"] == "dicom"), None)
        rows.append(
            [
                o.server.name,
                str(s["state"]).removeprefix("SERVER_STATE_"),
                s["version"],
                _uptime(s["start_time"]),
                str(c["active_associations"]),
                f"{c['associations_accepted']}/{c['associations_rejected']}"
                f"/{c['associations_aborted']}",
                f"{dicom['host']}:{dicom['port']}" if dicom else "-",
            ]
        )
    return render.table(
        rows,
        header=[
            "SERVER",
            "STATE",
            "VERSION",
            "UPTIME",
            "ACTIVE",
            "ACCEPTED/REJECTED/ABORTED",
            "DICOM",
        ],
    )


def _changes(outcomes: Sequence[Outcome]) -> str:
    """Server state changes: the one-line message, plus the state after."""
    return render.table(
        [
            [
                o.server.name,
                o.text or "",
                str(_doc(o)["server"]["state"]).removeprefix("SERVER_STATE_"),
            ]
            for o in outcomes
        ],
        header=["SERVER", "RESULT", "STATE"],
    )


def _health(outcomes: Sequence[Outcome]) -> str:
    return render.table(
        [[o.server.name, _doc(o)["status"]] for o in outcomes], header=["SERVER", "STATUS"]
    )


def _addin_state(value: Any) -> str:
    return str(value).removeprefix("ADDIN_STATE_")


def _addins(outcomes: Sequence[Outcome]) -> str:
    rows = [
        [
            o.server.name,
            a["name"],
            _addin_state(a["state"]),
            a["version"] or "-",
            render.yes_no(a["healthy"]),
            str(a["counters"]["calls"]),
            str(a["counters"]["failures"]),
            a["source"] or "-",
        ]
        for o in outcomes
        for a in _doc(o)["addins"]
    ]
    if not rows:
        return "no add-ins"
    return render.table(
        rows,
        header=["SERVER", "NAME", "STATE", "VERSION", "HEALTHY", "CALLS", "FAILURES", "SOURCE"],
    )


def _addin(outcomes: Sequence[Outcome]) -> str:
    rows = []
    for o in outcomes:
        a = _doc(o)["addin"]
        rows.append(
            [
                o.server.name,
                a["name"],
                _addin_state(a["state"]),
                a["version"] or "-",
                render.yes_no(a["healthy"]),
                str(a["counters"]["calls"]),
                str(a["counters"]["failures"]),
                one_line(a["error"]) or "-",
            ]
        )
    return render.table(
        rows,
        header=["SERVER", "NAME", "STATE", "VERSION", "HEALTHY", "CALLS", "FAILURES", "ERROR"],
    )


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value, allow_nan=False)


def _key_values(field_name: str, empty: str) -> Callable[[Sequence[Outcome]], str]:
    def render_rows(outcomes: Sequence[Outcome]) -> str:
        with_changed = any("changed" in _doc(o) for o in outcomes)
        rows = []
        for o in outcomes:
            doc = _doc(o)
            for key, value in sorted(doc[field_name].items()):
                row = [o.server.name, key, _cell(value)]
                if with_changed:
                    row.append(render.yes_no(bool(doc.get("changed"))))
                rows.append(row)
        if not rows:
            return empty
        header = ["SERVER", "KEY", "VALUE"] + (["CHANGED"] if with_changed else [])
        return render.table(rows, header=header)

    return render_rows


def _ae_rows(outcomes: Sequence[Outcome], key: str) -> str:
    rows = []
    for o in outcomes:
        doc = _doc(o)
        entries = doc[key] if key == "ae_titles" else [doc[key]]
        rows += [
            [o.server.name, e["ae_title"], e["host"], str(e["port"]), one_line(e["description"])]
            for e in entries
        ]
    if not rows:
        return "no AE titles"
    return render.table(rows, header=["SERVER", "AE TITLE", "HOST", "PORT", "DESCRIPTION"])


def _stats(outcomes: Sequence[Outcome]) -> str:
    from pacsd.client.cli.storage import size_text

    rows = []
    for o in outcomes:
        s = _doc(o)["stats"]
        rows.append(
            [
                o.server.name,
                str(s["patients"]),
                str(s["studies"]),
                str(s["series"]),
                str(s["instances"]),
                size_text(int(s["bytes"])),
                s["index_backend"],
            ]
        )
    return render.table(
        rows,
        header=["SERVER", "PATIENTS", "STUDIES", "SERIES", "INSTANCES", "SIZE", "INDEX"],
    )


def _studies(outcomes: Sequence[Outcome]) -> str:
    from pacsd.client.cli.storage import size_text

    rows = []
    notes = []
    for o in outcomes:
        doc = _doc(o)
        studies = doc["studies"]
        for s in studies:
            rows.append(
                [
                    o.server.name,
                    s["study_date"] or "-",
                    s["patient_id"] or "-",
                    one_line(s["patient_name"]) or "-",
                    ",".join(s["modalities"]) or "-",
                    str(s["series"]),
                    str(s["instances"]),
                    size_text(int(s["bytes"])),
                    s["study_instance_uid"],
                ]
            )
        if doc["total_size"] > len(studies):
            notes.append(f"{o.server.name}: {len(studies)} of {doc['total_size']} studies shown")
    if not rows:
        return "no studies"
    text = render.table(
        rows,
        header=[
            "SERVER",
            "DATE",
            "PATIENT ID",
            "PATIENT NAME",
            "MODALITIES",
            "SERIES",
            "INSTANCES",
            "SIZE",
            "STUDY INSTANCE UID",
        ],
    )
    if notes:
        text += "\n" + "\n".join(notes) + "; --limit 0 shows all"
    return text


def _associations(outcomes: Sequence[Outcome]) -> str:
    """Live associations, the SERVER/ID column being what ``assoc get/abort`` take."""
    rows = []
    for o in outcomes:
        doc = _doc(o)
        items = doc["associations"] if "associations" in doc else [doc["association"]]
        rows += [
            [
                o.server.name,
                f"{o.server.name}/{a['id']}",
                a["calling_ae"],
                a["called_ae"],
                f"{a['peer_host']}:{a['peer_port']}",
                a["start_time"] or "-",
                f"{a['messages_received']}/{a['messages_sent']}",
                str(len(a["accepted_contexts"])),
                render.yes_no(a["tls"]),
            ]
            for a in items
        ]
    if not rows:
        return "no associations"
    return render.table(
        rows,
        header=[
            "SERVER",
            "SERVER/ID",
            "CALLING",
            "CALLED",
            "PEER",
            "STARTED",
            "MESSAGES IN/OUT",
            "CONTEXTS",
            "TLS",
        ],
    )


def _tls(outcomes: Sequence[Outcome]) -> str:
    """One row per certificate per server; a server without DICOM TLS gets one row
    saying so, so that it is not mistaken for one that failed."""
    rows = []
    for o in outcomes:
        tls = _doc(o)["tls"]
        if not tls["enabled"]:
            rows.append([o.server.name, "-", "(no DICOM TLS listener configured)", "-", "-", "-"])
            continue
        where = f"{tls['host']}:{tls['port']}" if tls["listening"] else "not listening"
        rows += [
            [o.server.name, where, c["role"], c["subject"], c["not_after"], c["sha256_fingerprint"]]
            for c in tls["certificates"]
        ]
    return render.table(
        rows, header=["SERVER", "DICOM TLS", "ROLE", "SUBJECT", "NOT AFTER", "SHA-256"]
    )


_RENDERERS: dict[str, Callable[[Sequence[Outcome]], str]] = {
    "status": _servers,
    "server get": _servers,
    "server start": _changes,
    "server stop": _changes,
    "server pause": _changes,
    "server resume": _changes,
    "health": _health,
    "addin list": _addins,
    "addin get": _addin,
    "addin settings": _key_values("settings", "(no settings)"),
    "addin invoke": _key_values("result", "(empty result)"),
    "ae list": lambda outcomes: _ae_rows(outcomes, "ae_titles"),
    "ae get": lambda outcomes: _ae_rows(outcomes, "ae_title"),
    "storage stats": _stats,
    "storage studies": _studies,
    "assoc list": _associations,
    "assoc get": _associations,
    "certs show": _tls,
    "certs reload": _tls,
}
