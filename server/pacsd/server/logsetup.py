"""The server's logging pipeline: stdlib ``logging`` with pacsd's sinks and levels.

One root logger, several handlers, each seeing the same tagged records (source, association
ID, AE titles, peer; see ``logbus.tag``):

- console (stderr; stdout carries the listening line), for people;
- a rotating text file (``log_file``) and a rotating JSON-lines file
  (``log_json_file``), for log shippers;
- the log bus (``logbus.LogBus``): the in-memory tail and the live streams that
  ``pacsctl logs`` reads.

Every sink tags a record before it formats it (``logbus.tag``), and tagging escapes
the control characters in its message (``logsafe``): text a DICOM peer sent, quoted
in a warning, cannot start a fake line or drive the terminal. Python warnings
(pydicom's "Invalid value for VR ..." among them) are routed into the same pipeline
instead of printed raw on stderr.

Levels are stdlib logger levels, so a record below its level is never even built:
the root logger holds the default level, and a source with a level of its own has it
set on its logger ("core" -> ``pacsd.core``, "control" -> ``pacsd.control``, an
add-in -> ``pacsd.addin.NAME``). ``set_level`` changes either while the server runs.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import threading
import warnings
from datetime import UTC, datetime
from pathlib import Path
from types import CodeType, FrameType
from typing import TYPE_CHECKING, TextIO

from pacsd.server.logbus import AUDIT, LogBus, SourceTagger, exception_text, extras_of, tag

if TYPE_CHECKING:
    from pacsd.server.config import Settings

#: The console and text-file line: time, level, [source assoc calling->called], message.
TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(source)s%(assoc)s] %(message)s"

#: Logger of captured Python warnings (the name ``logging.captureWarnings`` uses).
WARNINGS_LOGGER = "py.warnings"

#: Sources that are not add-ins, and the logger each one's level is set on.
FIXED_SOURCES = {
    "core": "pacsd.core",
    "control": "pacsd.control",
    "pynetdicom": "pynetdicom",
    "pydicom": "pydicom",
    # Python warnings (``_capture_warnings``), whichever library raised them.
    "py": WARNINGS_LOGGER,
}

_ADDIN_PREFIX = "pacsd.addin."
_levels_lock = threading.Lock()


class LogSetupError(Exception):
    """A log sink could not be opened; the message is the one line the operator sees."""


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record, named like the control plane's ``LogRecord``."""

    def format(self, record: logging.LogRecord) -> str:
        tag(record)
        attrs = record.__dict__
        document = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "source": attrs["source"],
            "logger": record.name,
            "association_id": attrs["assoc_id"],
            "calling_ae": attrs["calling_ae"],
            "called_ae": attrs["called_ae"],
            "peer": attrs["peer"],
            "message": record.getMessage(),
            "extras": extras_of(record),
            "exception": exception_text(record),
        }
        return json.dumps(document, ensure_ascii=False)


def _handler(handler: logging.Handler, formatter: logging.Formatter) -> logging.Handler:
    handler.addFilter(SourceTagger())
    handler.setFormatter(formatter)
    return handler


def _rotating(path: Path, max_bytes: int, backups: int) -> logging.Handler:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
    except OSError as exc:
        raise LogSetupError(f"cannot open log file {path}: {exc.strerror or exc}") from exc


def configure(level: str, settings: Settings | None = None) -> LogBus:
    """Install the sinks ``settings`` asks for (console only without settings) and the
    log bus on the root logger; returns the bus. Raises LogSetupError."""
    handlers: list[logging.Handler] = []
    if settings is None or settings.log_console:
        handlers.append(_handler(logging.StreamHandler(sys.stderr), logging.Formatter(TEXT_FORMAT)))
    if settings is not None and settings.log_file is not None:
        handlers.append(
            _handler(
                _rotating(
                    settings.log_file, settings.log_file_max_bytes, settings.log_file_backups
                ),
                logging.Formatter(TEXT_FORMAT),
            )
        )
    if settings is not None and settings.log_json_file is not None:
        handlers.append(
            _handler(
                _rotating(
                    settings.log_json_file, settings.log_file_max_bytes, settings.log_file_backups
                ),
                JsonLinesFormatter(),
            )
        )
    log_bus = bus()
    if settings is not None:
        log_bus.configure(settings.log_tail_size, settings.log_stream_queue_size)
    root = logging.getLogger()
    for old in root.handlers:
        if old is not log_bus and old not in handlers:
            old.close()
    root.handlers[:] = [log_bus, *handlers]
    root.setLevel(level)
    # pynetdicom narrates every PDU at INFO; keep its warnings and errors only.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, root.level))
    # The audit trail is recorded whatever the default level, until told otherwise.
    logging.getLogger(FIXED_SOURCES["control"]).setLevel(AUDIT)
    _capture_warnings()
    return log_bus


# -- Python warnings ------------------------------------------------------------------

_pydicom_warn_and_log: CodeType | None = None


def _capture_warnings() -> None:
    """Send Python warnings to the log instead of raw to stderr.

    The default ``showwarning`` writes the message verbatim, so a peer's value in a
    library warning would reach the console unescaped and outside the record format.
    pydicom reports nearly everything through ``warn_and_log``, which logs the
    message as well as warning it; those warnings are dropped here rather than
    logged twice.
    """
    global _pydicom_warn_and_log
    from pydicom.misc import warn_and_log

    _pydicom_warn_and_log = warn_and_log.__code__
    warnings.showwarning = _log_warning


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if _called_from(sys._getframe(1), _pydicom_warn_and_log):
        return
    logging.getLogger(WARNINGS_LOGGER).warning(
        "%s: %s", category.__name__, message, extra={"warning_at": f"{filename}:{lineno}"}
    )


def _called_from(frame: FrameType | None, code: CodeType | None, depth: int = 4) -> bool:
    """True if ``code`` runs within ``depth`` frames of ``frame`` (``warnings.warn``
    is C; between it and ``showwarning`` there is only ``warnings._showwarnmsg``)."""
    while frame is not None and depth > 0:
        if frame.f_code is code:
            return True
        frame, depth = frame.f_back, depth - 1
    return False


def bus() -> LogBus:
    """The log bus on the root logger, installed if there is none yet (a runtime
    built without ``configure``, as in-process tests do, still has a tail)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, LogBus):
            return handler
    log_bus = LogBus()
    root.addHandler(log_bus)
    return log_bus


# -- levels ---------------------------------------------------------------------------


def logger_name(source: str) -> str:
    """The logger whose level is ``source``'s level ("" is the root)."""
    if not source:
        return ""
    return FIXED_SOURCES.get(source, _ADDIN_PREFIX + source)


def levels() -> tuple[int, dict[str, int]]:
    """(default level, {source: level} for the sources that have their own)."""
    root = logging.getLogger()
    own: dict[str, int] = {}
    for source, name in FIXED_SOURCES.items():
        level = logging.getLogger(name).level
        if level != logging.NOTSET:
            own[source] = level
    for name, logger in list(root.manager.loggerDict.items()):
        if not name.startswith(_ADDIN_PREFIX) or not isinstance(logger, logging.Logger):
            continue
        source = name[len(_ADDIN_PREFIX) :]
        if "." not in source and logger.level != logging.NOTSET:
            own[source] = logger.level
    return root.level, dict(sorted(own.items()))


def set_level(source: str, level: int | None) -> bool:
    """Set the default level (``source`` "") or one source's; ``level`` None drops
    the source's own level so it follows the default. True if anything changed."""
    with _levels_lock:
        logger = logging.getLogger(logger_name(source))
        new = logging.NOTSET if level is None else level
        if not source and new == logging.NOTSET:
            raise ValueError("the default level cannot be unset")
        if logger.level == new:
            return False
        logger.setLevel(new)
        return True
