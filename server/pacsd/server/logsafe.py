"""Peer-supplied text cannot forge or garble a log line: control characters are shown escaped.

pydicom and pynetdicom quote what a DICOM peer sent (AE titles, element values, PDU
contents) in their warnings, and so do some of pacsd's own messages. A "\\n" or "\\r"
in such a value would start a line that looks like a record of its own, and an
"\\x1b[" sequence would recolour or erase the terminal of an operator watching
``pacsd serve`` or ``pacsctl logs -f``. ``neutralise`` rewrites a record's message
once, when ``logbus.tag`` first sees it, so every sink (console, text file, JSON
lines, the log bus and its live streams, records relayed from workers) carries the
same one-line message.

Escaped: C0 controls (U+0000-U+001F, tab and newline included), DEL, C1 controls
(U+0080-U+009F) and the Unicode line and paragraph separators, which some log readers
also split lines on. Backslashes stay as they are: text that merely looks like an
escape cannot break a line.

A traceback (``exc_text``, ``stack_info``) comes from the server, not the peer, and
keeps its real newlines; its other control characters (an exception message that
quotes a peer's "\\r" or "\\x1b") are escaped all the same.
"""

from __future__ import annotations

import logging

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}

#: ``str.translate`` table: each control character -> its escaped spelling.
_ESCAPES: dict[int, str] = {
    code: _NAMED.get(chr(code), f"\\x{code:02x}")
    for code in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))
}
_ESCAPES[0x2028] = "\\u2028"
_ESCAPES[0x2029] = "\\u2029"

#: The same, but a newline stays a newline (tracebacks).
_ESCAPES_KEEP_NEWLINE = {code: text for code, text in _ESCAPES.items() if code != ord("\n")}


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape, on one line.

    ``isprintable`` (a C loop) clears almost every message; only text it rejects is
    translated, and that can still come back unchanged (a no-break space is not
    "printable" but is no control character either).
    """
    if text.isprintable():
        return text
    return text.translate(_ESCAPES)


def escape_controls_keep_newlines(text: str) -> str:
    """``escape_controls`` for multi-line server text: newlines stay real."""
    if text.isprintable():
        return text
    return text.translate(_ESCAPES_KEEP_NEWLINE)


_EXC_FORMATTER = logging.Formatter()


def neutralise(record: logging.LogRecord) -> None:
    """Escape control characters in ``record``'s message, AE titles and traceback.

    The message is formatted here, once, and stored back as ``msg`` without
    ``args``, so the handlers that format it again get the escaped text for the cost
    of a ``str()``. A message that cannot be formatted (bad arguments) is left for
    the handlers, which report it with ``repr``, itself free of control characters.
    """
    try:
        message = record.getMessage()
    except Exception:  # the handlers' own error path reports it
        pass
    else:
        record.msg = escape_controls(message)
        record.args = ()
    attrs = record.__dict__
    for name in ("calling_ae", "called_ae"):
        value = attrs.get(name)
        if isinstance(value, str) and not value.isprintable():
            attrs[name] = escape_controls(value)
    if record.exc_info and not record.exc_text:
        record.exc_text = _EXC_FORMATTER.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = escape_controls_keep_newlines(record.exc_text)
    if record.stack_info:
        record.stack_info = escape_controls_keep_newlines(record.stack_info)
