"""Console logging for the server process (stderr; stdout carries the listening line)."""

from __future__ import annotations

import logging
import sys


class _SourceFilter(logging.Filter):
    """Names each record's source the way operators read it: core or the add-in's name."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name.startswith("pacsd.addin."):
            record.source = name.removeprefix("pacsd.addin.")
        elif name.startswith("pacsd."):
            record.source = "core"
        else:
            record.source = name.split(".", 1)[0]
        return True


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_SourceFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s [%(source)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom narrates every PDU at INFO; keep its warnings and errors only.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, root.level))
