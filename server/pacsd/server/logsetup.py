"""Console logging for the server process (stderr; stdout carries the listening line)."""

from __future__ import annotations

import logging
import sys

from pacsd.server.logcontext import current_association


class _SourceFilter(logging.Filter):
    """Tags each record with its source (core or the add-in's name) and, when it was
    logged while serving an association, that association's ID and AE titles."""

    def filter(self, record: logging.LogRecord) -> bool:
        assoc = current_association.get()
        record.assoc_id = assoc.id if assoc else ""
        record.calling_ae = assoc.calling_ae if assoc else ""
        record.called_ae = assoc.called_ae if assoc else ""
        record.peer = f"{assoc.peer_host}:{assoc.peer_port}" if assoc else ""
        record.assoc = f" {assoc.id} {assoc.calling_ae}->{assoc.called_ae}" if assoc else ""
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
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s [%(source)s%(assoc)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom narrates every PDU at INFO; keep its warnings and errors only.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, root.level))
