"""The DICOM message log (LEAD's DicomLog): every DIMSE message in and out, on record.

An observer only (no handlers, so it never competes for a SOP class): its
``message_received`` and ``message_sent`` hooks log each message's command fields to
the source ``message_log``, tagged with the association like every record, and, with
``capture = true``, write each dataset that travels to a Part 10 file in
``capture_dir``, named by its SOP Instance UID.

Defaults, and why: the add-in loads with the server and logs at **DEBUG**, so a
production server pays one level check per message and its log is not doubled; an
operator who wants the traffic on record turns it on, live, for the whole server
(``pacsctl log-level DEBUG --source message_log``) or raises ``level`` to INFO.
Capture is **off**: datasets are patient data and take disk space; when on, the folder
is capped at ``capture_max_bytes``, oldest captures removed first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from pacsd.addin import (
    Addin,
    AddinContext,
    AddinSettings,
    AssociationInfo,
    DimseMessage,
    Hook,
    command,
    hook,
)
from pydantic import Field, field_validator, model_validator

#: A UID safe to use as a file name (PS3.5 9.1: digits and dots, at most 64).
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: Command fields the log line shows in its own words (or that say nothing).
_SHOWN_APART = frozenset(
    (
        "CommandGroupLength",
        "CommandField",
        "CommandDataSetType",
        "MessageID",
        "MessageIDBeingRespondedTo",
        "Status",
    )
)
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


class MessageLogSettings(AddinSettings):
    #: Level of each message's record. DEBUG (default) is off unless the source's or
    #: the server's level lets it through; INFO logs every message at the default level.
    level: Literal["DEBUG", "INFO", "WARNING"] = "DEBUG"
    #: Only these services ("C-STORE", "C-FIND", ...); empty: every service.
    services: list[str] = Field(default_factory=list)
    #: Write the datasets of messages (in both directions) to ``capture_dir``.
    capture: bool = False
    #: Folder for captured datasets, created if missing; required with ``capture``.
    capture_dir: str = ""
    #: Most bytes the captures may take; past it the oldest are removed.
    capture_max_bytes: int = Field(1024**3, ge=1)

    @field_validator("level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        """``info`` as well as ``INFO``, as the server's ``log_level`` and ``pacsctl
        logs --level`` take it."""
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _capture_needs_dir(self) -> MessageLogSettings:
        if self.capture and not self.capture_dir:
            raise ValueError("capture_dir is required when capture is true")
        return self


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 32 else f"<{len(value)} bytes>"
    return str(value)


def describe(msg: DimseMessage) -> tuple[str, dict[str, str]]:
    """The log line for a message and its command fields as text."""
    fields = {k: _text(v) for k, v in msg.fields().items() if k not in _SHOWN_APART}
    kind = "RSP" if msg.is_response else "RQ"
    head = f"{msg.direction} {msg.service}-{kind} id={msg.message_id}"
    if msg.status is not None:
        head += f" status=0x{msg.status:04X}"
    if msg.has_dataset:
        head += f" dataset={msg.dataset_size}B"
    body = " ".join(f"{k}={v}" for k, v in fields.items())
    return (f"{head} {body}" if body else head), fields


class CaptureFolder:
    """Captured files and their sizes, oldest first, kept under a byte cap."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._files: OrderedDict[str, int] = OrderedDict()
        self._total = 0
        self._seq = 0
        folder.mkdir(parents=True, exist_ok=True)
        existing = sorted(folder.glob("*.dcm"), key=lambda p: p.stat().st_mtime)
        for path in existing:
            self._files[path.name] = path.stat().st_size
            self._total += self._files[path.name]
        self._trim()

    def name_for(self, assoc: AssociationInfo, msg: DimseMessage) -> str:
        uid = str(msg.get("AffectedSOPInstanceUID") or msg.get("RequestedSOPInstanceUID") or "")
        if _UID.match(uid) and len(uid) <= 64:
            return f"{uid}.dcm"
        # Identifiers and the like have no instance UID: name them by their message,
        # with the time, since association IDs start again at a1 after a restart.
        with self._lock:
            self._seq += 1
            seq = self._seq
        kind = "rsp" if msg.is_response else "rq"
        safe_assoc = re.sub(r"[^A-Za-z0-9_-]", "_", assoc.id) or "assoc"
        stamp = time.strftime("%Y%m%dT%H%M%S")
        return (
            f"{stamp}-{safe_assoc}-{msg.message_id}-{msg.service}-{kind}-{msg.direction}-{seq}.dcm"
        )

    def write(self, name: str, msg: DimseMessage) -> int:
        """Write the message's dataset as a Part 10 file; returns its size."""
        from pydicom.dataset import FileMetaDataset
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info
        from pydicom.uid import UID

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(
            str(
                msg.get("AffectedSOPClassUID")
                or msg.get("RequestedSOPClassUID")
                or _SECONDARY_CAPTURE
            )
        )
        uid = name.removesuffix(".dcm")
        meta.MediaStorageSOPInstanceUID = UID(uid if _UID.match(uid) else "2.25.0")
        meta.TransferSyntaxUID = UID(msg.transfer_syntax or "1.2.840.10008.1.2")
        header = DicomBytesIO()
        write_file_meta_info(header, meta, enforce_standard=True)
        final = self.folder / name
        # One partial file per thread: two associations may carry the same instance.
        partial = final.with_name(f"{final.name}.{threading.get_ident()}.part")
        with partial.open("wb") as fh:
            fh.write(b"\x00" * 128 + b"DICM")
            fh.write(header.getvalue())
            msg.write_dataset(fh)
            size = fh.tell()
        os.replace(partial, final)
        with self._lock:
            self._total += size - self._files.pop(name, 0)
            self._files[name] = size
            self._trim()
        return size

    def _trim(self) -> None:
        while self._total > self.max_bytes and self._files:
            name, size = self._files.popitem(last=False)
            self._total -= size
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {"files": len(self._files), "bytes": self._total, "folder": str(self.folder)}


class MessageLogAddin(Addin):
    name = "message_log"
    version = "1.0.0"
    description = "Logs every DIMSE message in and out; optionally captures their datasets."
    settings_model = MessageLogSettings

    def start(self, ctx: AddinContext) -> None:
        super().start(ctx)
        self._apply(ctx.settings)

    def settings_changed(self, settings: Any) -> None:
        self._apply(settings)

    def _apply(self, settings: MessageLogSettings) -> None:
        self._level = logging.getLevelName(settings.level)
        self._services = frozenset(s.upper() for s in settings.services)
        self._capture: CaptureFolder | None = None
        if settings.capture:
            self._capture = CaptureFolder(Path(settings.capture_dir), settings.capture_max_bytes)

    def observes(self, hook: Hook) -> bool:
        # Asked before every message: with the level off and no capture (the default),
        # the server skips building the message for this add-in altogether.
        return self._capture is not None or self.ctx.log.isEnabledFor(self._level)

    @hook
    def message_received(self, assoc: AssociationInfo, msg: DimseMessage) -> None:
        self._observe(assoc, msg)

    @hook
    def message_sent(self, assoc: AssociationInfo, msg: DimseMessage) -> None:
        self._observe(assoc, msg)

    def _observe(self, assoc: AssociationInfo, msg: DimseMessage) -> None:
        if self._services and msg.service not in self._services:
            return
        log = self.ctx.log
        if log.isEnabledFor(self._level):
            line, fields = describe(msg)
            log.log(
                self._level,
                "%s",
                line,
                extra={
                    "dimse_direction": msg.direction,
                    "dimse_service": msg.service,
                    "dimse_response": msg.is_response,
                    "dimse_message_id": msg.message_id,
                    "dimse_status": msg.status,
                    "dimse_fields": fields,
                },
            )
        capture = self._capture
        if capture is not None and msg.has_dataset:
            if msg.dataset_size > capture.max_bytes:
                log.warning(
                    "%s %s dataset of %d bytes not captured: larger than capture_max_bytes",
                    msg.direction,
                    msg.service,
                    msg.dataset_size,
                )
                return
            name = capture.name_for(assoc, msg)
            try:
                capture.write(name, msg)
            except OSError as exc:
                log.error("cannot capture %s: %s", name, exc)

    @command("status")
    def status(self, args: dict[str, Any]) -> dict[str, Any]:
        """Settings in force and what the capture folder holds."""
        settings: MessageLogSettings = self.ctx.settings
        out: dict[str, Any] = {"level": settings.level, "capture": settings.capture}
        if self._capture is not None:
            out.update(self._capture.summary())
        return out
