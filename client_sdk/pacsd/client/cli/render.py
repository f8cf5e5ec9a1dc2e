"""Human-readable (table) rendering for pacsctl.

Kept apart from the commands so that every command draws tables the same way, and so
the table layout can change without touching what the commands fetch. JSON output
never goes through here: it is ``message_to_dict`` verbatim, the stable interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pacsd.admin.v1 import server_pb2

_STATE_PREFIX = "SERVER_STATE_"


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """An etcdctl-style boxed table; ``header`` (if any) gets its own ruled-off row."""
    lines = [list(header)] if header else []
    lines.extend([list(row) for row in rows])
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(cells: Sequence[str], center: bool = False) -> str:
        padded = [c.center(w) if center else c.ljust(w) for c, w in zip(cells, widths, strict=True)]
        return "| " + " | ".join(padded) + " |"

    out = [rule]
    body = lines
    if header:
        out += [fmt(lines[0], center=True), rule]
        body = lines[1:]
    out += [fmt(row) for row in body]
    out.append(rule)
    return "\n".join(out)


def state_name(state: int) -> str:
    """Drop the "SERVER_STATE_" prefix: it is proto namespacing, noise to a reader."""
    try:
        name = server_pb2.ServerState.Name(state)
    except ValueError:
        return str(state)
    return name.removeprefix(_STATE_PREFIX)


def duration(seconds: float) -> str:
    """Compact "2d3h4m5s" form; sub-second detail is noise for an uptime."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    text = "".join(f"{n}{unit}" for n, unit in parts if n)
    return f"{text}{secs}s"


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def server(msg: server_pb2.Server, now: datetime | None = None) -> str:
    """Key/value summary of the server, then its listeners."""
    c = msg.counters
    if msg.HasField("start_time"):
        started_at = msg.start_time.ToDatetime(tzinfo=UTC)
        started = started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        uptime = duration(((now or datetime.now(UTC)) - started_at).total_seconds())
    else:
        started = uptime = "-"
    summary = table(
        [
            ["STATE", state_name(msg.state)],
            ["VERSION", msg.version],
            ["API", msg.api_version],
            ["PID", str(msg.pid)],
            ["STARTED", started],
            ["UPTIME", uptime],
            ["ACTIVE ASSOCIATIONS", str(c.active_associations)],
            [
                "ASSOCIATIONS",
                f"{c.associations_accepted} accepted / {c.associations_rejected} rejected"
                f" / {c.associations_aborted} aborted",
            ],
            [
                "DIMSE MESSAGES",
                f"{c.dimse_messages_received} received / {c.dimse_messages_sent} sent",
            ],
            ["DATA DIR", msg.data_dir],
        ]
    )
    listeners = table(
        [
            [
                item.protocol,
                item.ae_title or "-",
                item.host,
                str(item.port),
                yes_no(item.tls),
                yes_no(item.listening),
            ]
            for item in msg.listeners
        ],
        header=["PROTOCOL", "AE TITLE", "HOST", "PORT", "TLS", "LISTENING"],
    )
    text = f"{summary}\n\nLISTENERS\n{listeners}"
    if len(msg.workers) > 1:  # one engine process needs no table of its own
        text += f"\n\nWORKERS\n{workers(msg)}"
    return text


def worker_state_name(state: int) -> str:
    try:
        name = server_pb2.WorkerState.Name(state)
    except ValueError:
        return str(state)
    return name.removeprefix("WORKER_STATE_")


def workers(msg: server_pb2.Server) -> str:
    """The engine processes sharing the DICOM port (docs/workers.md)."""
    return table(
        [
            [
                str(w.index),
                str(w.pid),
                worker_state_name(w.state),
                str(w.restarts),
                str(w.counters.active_associations),
                str(w.counters.associations_accepted),
            ]
            for w in msg.workers
        ],
        header=["WORKER", "PID", "STATE", "RESTARTS", "ACTIVE", "ACCEPTED"],
    )


#: Past tense of each change, printed when it did something.
_DONE = {
    "start": "started",
    "stop": "stopped",
    "pause": "paused",
    "resume": "resumed",
}


def change(action: str, msg: server_pb2.Server, changed: bool) -> str:
    """``server paused`` or ``server already paused (no change)``."""
    if changed:
        return f"server {_DONE[action]}"
    return f"server already {state_name(msg.state).lower()} (no change)"
