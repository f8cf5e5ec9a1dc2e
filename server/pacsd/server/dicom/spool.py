"""Receiving C-STORE datasets straight into a file, never whole in memory.

pynetdicom assembles P-DATA fragments into a BytesIO (or, in its chunked mode, into a
temporary file that a full disk turns into an exception on the network thread). pacsd
swaps in ``SpoolingMessage``: a C-STORE-RQ's dataset fragments are appended to a Part 10
file in the data directory's ``tmp/`` folder, on the same file system as the archive so
that storing it is a rename. A write error (full disk, I/O error) does not break the
association: the file is removed, the remaining fragments are drained, and the request
reaches its handler with ``receive_error`` set, so the peer gets a proper 0xA700.

A C-STORE-RQ whose Affected SOP Class or Instance UID is not a UID (non-ASCII, too
long, letters, absent) is not spooled at all: no file could be named or described by
it, and pynetdicom would abort the association over it. Its dataset fragments are read
and dropped, and it reaches dispatch as a request marked ``_pacsd_refused`` (with the
reason), which answers it with a failure; the association goes on.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import struct
from io import BytesIO
from pathlib import Path
from typing import Any, cast

from pacsd.server.dicom import dimse_decode, direct, spool_files
from pacsd.server.storage.uids import is_valid_uid
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_messages import _MESSAGE_TYPES, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA

log = logging.getLogger("pacsd.core.spool")

#: pacsd's implementation UID and version, written into the file meta it creates.
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1425.1"
IMPLEMENTATION_VERSION = "PACSD_01"

_names = itertools.count(1)
_unpack_us = struct.Struct("<H").unpack

#: Affected SOP Class UID (0000,0002) and Affected SOP Instance UID (0000,1000).
_SOP_CLASS_TAG = 0x00000002
_SOP_INSTANCE_TAG = 0x00001000
#: The SOP class a refused C-STORE carries when neither its command nor its context
#: names one (an unaccepted context ID, which pynetdicom aborts over anyway).
_NO_CLASS = "1.2.840.10008.5.1.4.1.1.7"
#: At most this much of a refused value is shown in the log line.
_SHOWN_BYTES = 80

#: Start writing a spool file to disk once this much of it is not yet on its way: the
#: fsync that makes a stored instance durable then waits for the tail only (a 0.5 MB
#: instance: 0.7 ms -> 0.2 ms here), and the disk works while the network delivers.
WRITEBACK_BYTES = 64 * 1024


def _load_sync_file_range() -> Any:
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux / glibc: the final fsync does it all
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()
#: SYNC_FILE_RANGE_WRITE: start writeback of dirty pages, do not wait for it.
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk (a hint: no durability, no
    waiting; ``BlobStore.commit`` still fsyncs)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", errors="replace")
    return raw + b" " if len(raw) % 2 else raw


def file_meta_bytes(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str = ""
) -> bytes:
    """Preamble, ``DICM`` and File Meta Information (PS3.10 7.1), Explicit VR LE.

    Encoded by hand: building it with pydicom cost 0.6 ms per instance. Only the SOP
    Instance UID changes from one instance of an association to the next: the elements
    around it are encoded once per class, syntax and sender.
    """
    before, after = _meta_around(sop_class_uid, transfer_syntax, source_ae)
    instance = _element(0x0002, 0x0003, b"UI", _ui(sop_instance_uid))
    length = len(before) + len(instance) + len(after)
    group_length = _GROUP_LENGTH.pack(2, 0, b"UL", 4, length)
    return b"".join((_PREAMBLE, group_length, before, instance, after))


_PREAMBLE = b"\x00" * 128 + b"DICM"
_GROUP_LENGTH = struct.Struct("<HH2sHI")


@functools.lru_cache(maxsize=256)
def _meta_around(sop_class_uid: str, transfer_syntax: str, source_ae: str) -> tuple[bytes, bytes]:
    """The File Meta elements before and after the SOP Instance UID."""
    before = _element(0x0002, 0x0001, b"OB", b"\x00\x01") + _element(
        0x0002, 0x0002, b"UI", _ui(sop_class_uid)
    )
    after = b"".join(
        (
            _element(0x0002, 0x0010, b"UI", _ui(transfer_syntax)),
            _element(0x0002, 0x0012, b"UI", _ui(IMPLEMENTATION_CLASS_UID)),
            _element(0x0002, 0x0013, b"SH", _text(IMPLEMENTATION_VERSION)),
            *((_element(0x0002, 0x0016, b"AE", _text(source_ae)),) if source_ae.strip() else ()),
        )
    )
    return before, after


def _valid_uid(raw: bytes | None) -> str | None:
    """The UID a raw command element holds, if it is one by the rule the archive
    applies (PS3.5 9.1: digits and dots, at most 64 characters), else None."""
    if raw is None or not raw.isascii():
        return None
    text = raw.decode("ascii").rstrip("\x00 ")
    return text if is_valid_uid(text) else None


def _shown(raw: bytes) -> str:
    """A refused value for the log, escaped: ASCII as quoted text, anything else as the
    bytes that arrived (``b'1.2.\\xc3\\xa9'``), so no raw byte reaches a log line."""
    value = raw.rstrip(b"\x00 ")
    cut = value[:_SHOWN_BYTES]
    shown = repr(cut.decode("ascii")) if cut.isascii() else repr(cut)
    return shown if len(cut) == len(value) else f"{shown}... ({len(value)} bytes)"


def _uid_problems(cs: Dataset) -> str | None:
    """Why a C-STORE-RQ's command set cannot be stored under its UIDs, or None."""
    problems = []
    for tag, name in ((_SOP_CLASS_TAG, "Class"), (_SOP_INSTANCE_TAG, "Instance")):
        raw = _raw_value(cs, tag)
        if raw is None:
            problems.append(f"no Affected SOP {name} UID")
        elif _valid_uid(raw) is None:
            problems.append(f"invalid Affected SOP {name} UID {_shown(raw)}")
    return "; ".join(problems) or None


def _raw_value(cs: Dataset, tag: int) -> bytes | None:
    """An element's bytes as received (pynetdicom's decode leaves them unconverted)."""
    elem = cs.get_item(tag)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return value
    return None if value is None else str(value).encode("utf-8", "surrogateescape")


class _Drain(BytesIO):
    """Where a refused C-STORE's dataset fragments go: read off the wire, kept nowhere."""

    def write(self, buffer: Any, /) -> int:
        return len(buffer)


class SpoolFile:
    """An append-only file that swallows write errors and remembers the first one.

    Offers what pynetdicom expects of its temporary file (``name``, ``close``).

    The first ``direct.HEAD`` bytes are written through the page cache: the header parse
    reads them back at once, and a small instance is written whole that way. Past them
    the file is written with ``O_DIRECT`` from a page-aligned staging buffer
    (``direct.py`` says why and measures it); where the file system refuses direct I/O
    every byte goes through the page cache, with writeback started as it grows.

    The bytes written through the page cache are also kept (``head``, at most
    ``direct.HEAD``): the archive parses the header from them, and makes the file
    durable through this descriptor (``fileno``), rather than opening it twice more.
    Once the archive has renamed the file into place it says so (``moved``), and
    ``discard`` then only closes it.
    """

    def __init__(self, path: Path, header: bytes, folder: Path | None = None) -> None:
        self.name = str(path)
        self.path = path
        #: ``path.parent``, asked for once (``folder``: the caller's own object, whose
        #: hash pathlib has cached, for the per-folder lookups below).
        self._folder = path.parent if folder is None else folder
        #: Where the dataset starts (after the File Meta Information).
        self.offset = len(header)
        self.error: OSError | None = None
        self._fd = -1
        #: Bytes in the file so far, and how far writeback to disk was started.
        self._written = self._flushed = 0
        #: The staging buffer once the file went direct (bytes waiting in it: _staged).
        self._stage: direct.Stage | None = None
        self._staged = 0
        #: The file's first bytes (up to ``direct.HEAD``), as written.
        self.head = bytearray()
        #: Where the file went once an add-in renamed it away (``moved``).
        self.moved_to: Path | None = None
        try:
            # A file created ahead of time if one is ready (spool_files.py says why).
            fd = spool_files.for_folder(self._folder).take_into(self.name)
            if fd is None:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            self._fd = fd
            self.write(header)
        except OSError as exc:
            self._fail(exc)

    def write(self, data: bytes | memoryview) -> None:
        if self._fd < 0:
            return
        view = memoryview(data)
        try:
            if self._stage is None:
                room = direct.HEAD - self._written
                if len(view) <= room or not direct.usable(self._folder):
                    self._write_through(view)
                    return
                self._write_through(view[:room])
                view = view[room:]
                self._stage = direct.start(self._fd, self._folder)
                if self._stage is None:  # the file system said no: page cache from now on
                    self._write_through(view)
                    return
            self._staged = self._stage.add(self._fd, view, self._staged)
        except OSError as exc:
            self._fail(exc)

    def _write_through(self, view: memoryview) -> None:
        size = len(view)
        if self._written < direct.HEAD:
            self.head += view[: direct.HEAD - self._written]
        while view:  # a raw write may be short
            view = view[os.write(self._fd, view) :]
        self._written += size
        if self._written - self._flushed >= WRITEBACK_BYTES:
            _start_writeback(self._fd, self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def finish(self) -> None:
        """Write what is still staged, so the file is complete (not yet fsynced), and
        start writing its cached tail out: the fsync that makes it durable comes after
        dispatch and the header parse, and by then has less (or nothing) to wait for.

        Not for a file that is all ``head``: the archive journals its bytes and never
        fsyncs it (storage/journal.py), so its writeback can wait for the next
        checkpoint's ``syncfs``, which writes many such files at once instead of one
        device write per instance while the peer waits. (py-spy put the call at ~5 %
        of the receiving thread's time; alternated runs showed no throughput change
        either way, with or without the journal: bench/README.md, sixth round.)
        """
        if self._fd < 0:
            return
        stage, self._stage = self._stage, None
        if stage is not None:
            try:
                tail = stage.finish(self._fd, self._staged)
                self._written = os.lseek(self._fd, 0, os.SEEK_CUR)
                self._flushed = self._written - tail
            except OSError as exc:
                self._fail(exc)
                return
            finally:
                stage.release()
        if self._written > self._flushed and self._written > direct.HEAD:
            _start_writeback(self._fd, self._flushed, 0)  # 0: to the end
            self._flushed = self._written

    def fileno(self) -> int:
        return self._fd

    @property
    def size(self) -> int:
        """The file's length once ``finish`` ran."""
        return self._written

    def moved(self, final: Path) -> None:
        """The file now lives at ``final`` (renamed by its new owner): not ours to remove."""
        self.moved_to = final

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc
            log.error("cannot spool received dataset to %s: %s", self.path.name, exc)
        self.discard()

    def discard(self) -> None:
        """Close and remove the file (a failed or abandoned transfer), unless it moved."""
        self.close()
        if self.moved_to is not None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot remove %s: %s", self.path, exc)

    def close(self) -> None:
        stage, self._stage = self._stage, None
        if stage is not None:
            stage.release()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError as exc:
                if self.error is None:
                    self.error = exc


class SpoolingMessage(DIMSEMessage):
    """DIMSE message assembly that spools C-STORE datasets to ``spool_dir``.

    pynetdicom changes a message's class once its command set is decoded; this class
    swaps in a same-named subclass of the real message type that keeps this
    ``decode_msg``, so pynetdicom's lookups by class name still work.
    """

    spool_dir: Path
    source_ae: str = ""

    @property
    def command_set(self) -> Dataset:
        """The command set as pydicom decodes it, decoded on first use: for a plain
        C-STORE-RQ only observers (hooks, the event stream) ever ask, and decoding it
        for every instance cost more than the rest of the command's handling."""
        found = self.__dict__.get("_pacsd_command_set")
        if found is None:
            raw = self.__dict__.pop("_pacsd_raw_command_set", None)
            found = Dataset() if raw is None else decode(BytesIO(raw), True, True)
            self.__dict__["_pacsd_command_set"] = found
        return cast(Dataset, found)

    @command_set.setter
    def command_set(self, value: Dataset) -> None:
        self.__dict__.pop("_pacsd_raw_command_set", None)
        self.__dict__["_pacsd_command_set"] = value

    def decode_msg(self, primitive: P_DATA, assoc: Any = None) -> bool:
        if primitive.__class__ is not P_DATA:
            return False
        for context_id, data in primitive.presentation_data_value_list:
            header = data[0]
            if header & 1:  # command fragment
                self.encoded_command_set.write(data[1:])
                if header & 2:
                    self.context_id = context_id
                    if self._command_complete(assoc, context_id):
                        return True
            else:  # dataset fragment
                spool = self._data_set_file
                if spool is not None:
                    spool.write(memoryview(data)[1:])  # type: ignore[arg-type]
                else:
                    cast(BytesIO, self.data_set).write(data[1:])
                if header & 2:
                    if spool is not None:
                        cast(SpoolFile, spool).finish()
                    return True
        return False

    def _command_complete(self, assoc: Any, context_id: int) -> bool:
        """Decode the finished command set; True if the message has no dataset.

        A plain C-STORE-RQ (nearly every message an archive receives) is turned into
        its primitive here, from the raw bytes (dimse_decode.py says why); pydicom still
        decodes the command set for observers, which is cheap without value conversion.
        """
        # A peer may send a second command set before the first one's dataset: both
        # accumulate (pynetdicom's rule) and whatever the first one decoded to is void.
        self.__dict__.pop("_pacsd_primitive", None)
        raw = self.encoded_command_set.getvalue()
        fields = dimse_decode.parse(raw) or {}
        store = dimse_decode.store_request(fields)
        # Without an instance UID it is refused below: pynetdicom would drop it
        # unanswered, and its spool file would stay in tmp/.
        if store is not None and store.AffectedSOPInstanceUID is not None:
            self.__dict__.pop("_pacsd_command_set", None)
            self.__dict__["_pacsd_raw_command_set"] = raw
            self.__class__ = _spooling_class(C_STORE_RQ)
            self._pacsd_primitive = store
            if _unpack_us(fields[dimse_decode.DATA_SET_TYPE])[0] == 0x0101:
                return True
            self._open_spool(
                assoc, context_id, store.AffectedSOPClassUID, store.AffectedSOPInstanceUID
            )
            return False
        cs = self.command_set = decode(BytesIO(raw), True, True)
        # A command set a peer got wrong is refused by name (the DIMSE provider aborts
        # the association), rather than by whatever a lookup happens to raise.
        field, data_set_type = cs.get("CommandField"), cs.get("CommandDataSetType")
        if not isinstance(field, int) or field not in _MESSAGE_TYPES:
            raise ValueError(f"command set with an unknown Command Field {field!r}")
        if not isinstance(data_set_type, int):
            raise ValueError("command set without a single Command Data Set Type")
        real = _MESSAGE_TYPES[field][1]
        self.__class__ = _spooling_class(real)
        if issubclass(real, C_STORE_RQ):
            problems = _uid_problems(cs)
            if problems is not None:
                self._refuse(assoc, context_id, cs, problems)
                return data_set_type == 0x0101
        if data_set_type == 0x0101:
            return True
        if issubclass(real, C_STORE_RQ):
            self._open_spool(assoc, context_id, cs.AffectedSOPClassUID, cs.AffectedSOPInstanceUID)
        return False

    def _refuse(self, assoc: Any, context_id: int, cs: Dataset, problems: str) -> None:
        """Make the C-STORE-RQ a request dispatch refuses (``_pacsd_refused``), and drop
        its dataset as it arrives.

        pynetdicom needs both UIDs to call it a request at all. A valid one is kept, so
        the response echoes it as PS3.7 asks; an invalid instance UID becomes empty
        (left out of the response), an invalid class UID the context's, since the
        response cannot carry what arrived. A request without a Message ID cannot be
        answered: that raises, and the association is aborted as for any undecodable
        command set.
        """
        message_id, priority = cs.get("MessageID"), cs.get("Priority")
        if not isinstance(message_id, int):
            raise ValueError(f"C-STORE-RQ with {problems} and no Message ID to answer")
        sop_class = _valid_uid(_raw_value(cs, _SOP_CLASS_TAG))
        cx = assoc._accepted_cx.get(context_id)
        primitive = C_STORE()
        primitive.MessageID = message_id
        primitive.Priority = priority if priority in (0, 1, 2) else 0
        if sop_class is None:
            sop_class = str(cx.abstract_syntax) if cx is not None else _NO_CLASS
        primitive._affected_sop_class_uid = UID(sop_class, validation_mode=pydicom_config.IGNORE)
        primitive._affected_sop_instance_uid = UID(
            _valid_uid(_raw_value(cs, _SOP_INSTANCE_TAG)) or "",
            validation_mode=pydicom_config.IGNORE,
        )
        primitive._pacsd_refused = problems  # type: ignore[attr-defined]
        self._pacsd_primitive = primitive
        self.data_set = _Drain()

    def _open_spool(self, assoc: Any, context_id: int, sop_class: Any, sop_instance: Any) -> None:
        cx = assoc._accepted_cx[context_id]
        header = file_meta_bytes(
            str(sop_class), str(sop_instance), str(cx.transfer_syntax[0]), self.source_ae
        )
        path = self.spool_dir / f"rx-{os.getpid()}-{next(_names)}.part"
        spool = SpoolFile(path, header, self.spool_dir)
        self._data_set_file = spool  # type: ignore[assignment]
        self._data_set_path = path

    def message_to_primitive(self) -> Any:
        primitive = self.__dict__.pop("_pacsd_primitive", None)
        if primitive is None:
            primitive = super().message_to_primitive()
        else:  # the second half of pynetdicom's message_to_primitive
            primitive.DataSet = self.data_set
            primitive._context_id = self.context_id
            primitive._dataset_path = self._data_set_path
            primitive._dataset_file = self._data_set_file
        spool = self._data_set_file
        if isinstance(spool, SpoolFile):
            primitive._pacsd_spool = spool
        return primitive


_CLASSES: dict[type, type] = {}


def _spooling_class(real: type) -> type:
    cls = _CLASSES.get(real)
    if cls is None:
        cls = _CLASSES[real] = type(real.__name__, (SpoolingMessage, real), {})
    return cls


def new_message(spool_dir: Path, source_ae: str) -> SpoolingMessage:
    # What DIMSEMessage.__init__ sets for a message of unknown type yet (it keys on the
    # class name), without the empty command set Dataset (command_set makes it on use).
    msg = SpoolingMessage.__new__(SpoolingMessage)
    msg.context_id = None
    msg.encoded_command_set = BytesIO()
    msg.data_set = BytesIO()
    msg._data_set_path = None
    msg._data_set_file = None
    msg.spool_dir = spool_dir
    msg.source_ae = source_ae
    return msg


def discard_unfinished(message: Any) -> None:
    """Remove the spool file of a message whose transfer never completed (abort)."""
    spool = getattr(message, "_data_set_file", None)
    if isinstance(spool, SpoolFile):
        spool.discard()
