"""The log bus: every record the server logs, kept for ``tail`` and fanned out live.

pacsd logs through stdlib ``logging``; this module is the part of the pipeline that
remote tools read. ``LogBus`` is a ``logging.Handler`` on the root logger beside the
console and file sinks. For each record it builds one immutable ``LogEntry`` (time,
level, source, association, message, structured extras), appends it to a ring
buffer of the last ``tail_size`` entries, and offers it to every live subscriber's
bounded queue (``fanout``), so a stalled ``pacsctl logs -f`` costs the DICOM
threads one short lock per record and never a wait.

Every record is tagged here (``tag``) with its source and, when it was logged while
serving an association, that association's ID, AE titles and peer: the same fields
for the console, the files, the bus and the JSON lines. Tagging also escapes the
control characters in its message (``logsafe``), so one record is one line everywhere.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pacsd.server.fanout import Broadcaster, Subscription
from pacsd.server.logcontext import current_association
from pacsd.server.logsafe import escape_controls, neutralise

#: A state-changing control-plane call; between INFO and WARNING so that it shows at
#: the default level and a WARNING-only log still filters it out deliberately.
AUDIT = 25
logging.addLevelName(AUDIT, "AUDIT")

#: Logger of the audit trail; its records have source "control".
AUDIT_LOGGER = "pacsd.control.audit"

#: Attributes ``tag`` sets on a record (not "extras").
_TAGS = frozenset(
    ("source", "assoc_id", "calling_ae", "called_ae", "peer", "assoc", "_pacsd_tagged")
)
#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = (
    frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)
    | {"message", "asctime", "taskName"}
    | _TAGS
)


def source_of(logger_name: str) -> str:
    """Which part of the server a logger belongs to: an add-in's name for
    ``pacsd.addin.NAME[.x]``, "control" for ``pacsd.control[.x]`` (the audit
    trail), "core" for any other ``pacsd.*``, else the library's top-level name."""
    if logger_name.startswith("pacsd.addin."):
        return logger_name[len("pacsd.addin.") :].split(".", 1)[0]
    if logger_name == "pacsd.control" or logger_name.startswith("pacsd.control."):
        return "control"
    if logger_name == "pacsd" or logger_name.startswith("pacsd."):
        return "core"
    return logger_name.split(".", 1)[0]


def tag(record: logging.LogRecord) -> None:
    """Set source, association ID, AE titles and peer on ``record`` (once), and
    escape the control characters in its message (``logsafe.neutralise``).

    Values given with ``extra=`` win over the current association, so code that acts
    on an association from outside its threads (the control plane aborting one) can
    still name it. Every sink tags before it formats, so this is the one place that
    keeps peer-supplied text from breaking a record over several lines.
    """
    attrs = record.__dict__
    if attrs.get("_pacsd_tagged"):
        return
    assoc = current_association.get()
    if assoc is not None:
        attrs.setdefault("assoc_id", assoc.id)
        attrs.setdefault("calling_ae", assoc.calling_ae)
        attrs.setdefault("called_ae", assoc.called_ae)
        attrs.setdefault("peer", f"{assoc.peer_host}:{assoc.peer_port}")
    else:
        for name in ("assoc_id", "calling_ae", "called_ae", "peer"):
            attrs.setdefault(name, "")
    neutralise(record)
    assoc_id = attrs["assoc_id"]
    attrs["assoc"] = f" {assoc_id} {attrs['calling_ae']}->{attrs['called_ae']}" if assoc_id else ""
    if attrs.get("worker") and not assoc_id:  # relayed from a worker (workers/relay.py);
        attrs["assoc"] = f" worker {attrs['worker']}"  # its association IDs say "w1."
    attrs.setdefault("source", source_of(record.name))
    attrs["_pacsd_tagged"] = True


class SourceTagger(logging.Filter):
    """``tag`` as a handler filter, so every sink sees tagged records."""

    def filter(self, record: logging.LogRecord) -> bool:
        tag(record)
        return True


def extras_of(record: logging.LogRecord) -> dict[str, str]:
    """The structured fields code attached with ``extra=``, as text (JSON when not
    a string), so they travel unchanged through JSON lines and protobuf maps."""
    out: dict[str, str] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        out[key] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


_EXC_FORMATTER = logging.Formatter()


def exception_text(record: logging.LogRecord) -> str:
    """The record's traceback (and stack), formatted once and cached on it."""
    if record.exc_info and not record.exc_text:
        record.exc_text = _EXC_FORMATTER.formatException(record.exc_info)
    text = record.exc_text or ""
    if record.stack_info:
        text = f"{text}\n{record.stack_info}" if text else record.stack_info
    return text


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One record as the bus keeps it: plain values, safe to share between threads."""

    sequence: int
    time: float
    level: int
    source: str
    logger: str
    assoc_id: str
    calling_ae: str
    called_ae: str
    peer: str
    message: str
    extras: dict[str, str] = field(default_factory=dict)
    exception: str = ""

    @property
    def level_name(self) -> str:
        return logging.getLevelName(self.level)


def entry_of(record: logging.LogRecord, sequence: int) -> LogEntry:
    tag(record)
    attrs = record.__dict__
    try:
        message = record.getMessage()
    except Exception as exc:  # a bad format string must not lose the record
        message = escape_controls(f"{record.msg!r} (unformattable with {record.args!r}: {exc})")
    return LogEntry(
        sequence=sequence,
        time=record.created,
        level=record.levelno,
        source=attrs["source"],
        logger=record.name,
        assoc_id=attrs["assoc_id"],
        calling_ae=attrs["calling_ae"],
        called_ae=attrs["called_ae"],
        peer=attrs["peer"],
        message=message,
        extras=extras_of(record),
        exception=exception_text(record),
    )


@dataclass(frozen=True, slots=True)
class LogFilter:
    """What a reader wants: minimum level, sources, one association, one AE title."""

    min_level: int = 0
    sources: frozenset[str] = frozenset()
    assoc_id: str = ""
    ae_title: str = ""

    def __call__(self, entry: LogEntry) -> bool:
        return (
            entry.level >= self.min_level
            and (not self.sources or entry.source in self.sources)
            and (not self.assoc_id or entry.assoc_id == self.assoc_id)
            and (
                not self.ae_title
                or entry.calling_ae == self.ae_title
                or entry.called_ae == self.ae_title
            )
        )


class LogBus(logging.Handler):
    """Ring buffer of recent records plus live fan-out to bounded subscriber queues.

    ``logging`` calls ``emit`` holding this handler's lock, so entries get their
    sequence numbers in order, and ``follow`` takes the same lock to snapshot the
    ring and subscribe in one step: a follower sees every record exactly once.
    """

    def __init__(self, tail_size: int = 1000, queue_size: int = 1000) -> None:
        super().__init__(logging.NOTSET)
        self.addFilter(SourceTagger())
        self._ring: deque[LogEntry] = deque(maxlen=max(tail_size, 1))
        self._fan: Broadcaster[LogEntry] = Broadcaster()
        self._sequence = 0
        self.queue_size = queue_size

    def configure(self, tail_size: int, queue_size: int) -> None:
        """Resize the ring (keeping its newest entries) and future subscriber queues."""
        with self._locked():
            self._ring = deque(self._ring, maxlen=max(tail_size, 1))
            self.queue_size = queue_size

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sequence += 1
            entry = entry_of(record, self._sequence)
            self._ring.append(entry)
            self._fan.publish(entry)
        except Exception:
            self.handleError(record)

    def tail(self, count: int, accept: Callable[[LogEntry], bool] | None = None) -> list[LogEntry]:
        """The last ``count`` kept entries that ``accept`` takes, oldest first."""
        with self._locked():
            return self._recent(count, accept)

    def follow(
        self, tail: int, accept: Callable[[LogEntry], bool] | None = None
    ) -> tuple[list[LogEntry], Subscription[LogEntry]]:
        """The last ``tail`` matching entries and a subscription to every later one."""
        with self._locked():
            recent = self._recent(tail, accept)
            sub = self._fan.subscribe(self.queue_size, accept)
        return recent, sub

    def unsubscribe(self, sub: Subscription[LogEntry]) -> None:
        self._fan.unsubscribe(sub)

    def close_streams(self) -> None:
        """End every follower's stream (shutdown)."""
        self._fan.close_all()

    def stats(self) -> tuple[int, int]:
        """(followers now, records dropped for slow followers since start)."""
        return self._fan.stats()

    def _recent(self, count: int, accept: Callable[[LogEntry], bool] | None) -> list[LogEntry]:
        if count <= 0:
            return []
        picked: list[LogEntry] = []
        for entry in reversed(self._ring):
            if accept is None or accept(entry):
                picked.append(entry)
                if len(picked) == count:
                    break
        picked.reverse()
        return picked

    def _locked(self) -> _HandlerLock:
        return _HandlerLock(self)


class _HandlerLock:
    """``with``-able access to a handler's own lock (the one ``handle`` takes)."""

    __slots__ = ("_handler",)

    def __init__(self, handler: logging.Handler) -> None:
        self._handler = handler

    def __enter__(self) -> None:
        self._handler.acquire()

    def __exit__(self, *exc: object) -> None:
        self._handler.release()
