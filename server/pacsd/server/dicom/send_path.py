"""pacsd's own send path for DIMSE messages: encode, report, write.

pynetdicom's ``send_msg`` turns a primitive into a message whose command set is a
pydicom ``Dataset``, encodes it, splits it into P-DATA primitives and queues each for
the upper layer (DUL) thread, which converts it into a PDU object, encodes that and
writes it. For a C-FIND with hundreds of matches that was most of the time.
``send_message`` encodes the responses ``dimse_encode`` handles itself (same bytes),
leaves every other message to pynetdicom's encoding, and, on a plain socket, writes
the PDUs on the association's own thread, so that all P-DATA leave from one thread,
in order (on TLS the upper layer's thread still writes them).

Observers still get ``EVT_DIMSE_SENT`` with a pynetdicom message object (class
``C_FIND_RSP`` and so on, its ``data_set`` holding the identifier); for the responses
encoded here its ``command_set`` is a ``SentCommandSet``: ``get`` answers the fields
the tracker reads from the values just encoded, anything else decodes the bytes once.
The listener's handler (counters, event stream, hooks) takes those responses by type
and Status instead (``report_sent``), and the message object is only built when a
watcher or a hook wants it.
"""

from __future__ import annotations

import logging
import os
import ssl
import struct
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

from pacsd.server.dicom.dimse_encode import (
    EncodedCommand,
    encode_command_set,
    pdata_pdus,
    pdv_values,
)
from pydicom.dataset import Dataset
from pynetdicom import dimse_messages, evt
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE, DIMSEServiceProvider
from pynetdicom.dsutils import decode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

LOGGER = logging.getLogger("pacsd.core.dicom")

#: States in which the upper layer would send a P-DATA-TF right away (PS3.8 table
#: 9-10: Sta6 data transfer, Sta8 awaiting our A-RELEASE response). In any other state
#: the primitive goes to pynetdicom's queue, whose state machine decides.
_SENDING_STATES = frozenset({"Sta6", "Sta8"})

#: Most responses ``hold`` keeps before writing them anyway.
_HOLD_MAX = 16

#: Below this maximum PDU length (the peer's), pynetdicom's send_msg does it all.
_MIN_PDU = 256

#: Fields a ``SentCommandSet`` answers from the encoded values (same type as pydicom's
#: ``Dataset.get``: int or UID); the others (ErrorComment, OffendingElement) decode.
_PLAIN_FIELDS = frozenset(
    {
        "CommandGroupLength",
        "AffectedSOPClassUID",
        "CommandField",
        "MessageIDBeingRespondedTo",
        "CommandDataSetType",
        "Status",
        "AffectedSOPInstanceUID",
        "NumberOfRemainingSuboperations",
        "NumberOfCompletedSuboperations",
        "NumberOfFailedSuboperations",
        "NumberOfWarningSuboperations",
    }
)

#: Every field a response of each type may carry (pynetdicom's table).
_KEYWORDS: dict[str, frozenset[str]] = {
    name.replace("-", "_"): frozenset(keywords)
    for name, keywords in dimse_messages._COMMAND_SET_KEYWORDS.items()
}


class SentCommandSet:
    """A sent message's command set, read like the pydicom ``Dataset`` pynetdicom builds.

    The tracker reads a few fields of every message sent; hooks that watch messages
    may read anything. Building the ``Dataset`` for each response cost more than
    encoding it, so it is only decoded (from the bytes sent, once) when asked for
    something else than a plain field.
    """

    __slots__ = ("_dataset", "_encoded", "_fields", "_keywords")

    def __init__(self, encoded: EncodedCommand) -> None:
        self._encoded = encoded.data
        self._fields = encoded.fields
        self._keywords = _KEYWORDS[encoded.message_type]
        self._dataset: Dataset | None = None

    def _decoded(self) -> Dataset:
        if self._dataset is None:
            self._dataset = decode(BytesIO(self._encoded), True, True)
        return self._dataset

    def get(self, key: Any, default: Any = None) -> Any:
        if isinstance(key, str):
            if key in _PLAIN_FIELDS and key in self._fields:
                return self._fields[key]
            if key not in self._keywords or key not in self._fields:
                return default  # not in this command set
        return self._decoded().get(key, default)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not slots: dataset keywords and methods.
        if name in _PLAIN_FIELDS:
            fields = object.__getattribute__(self, "_fields")
            if name in fields:
                return fields[name]
        return getattr(self._decoded(), name)

    def __contains__(self, key: Any) -> bool:
        return key in self._decoded()

    def __getitem__(self, key: Any) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return repr(self._decoded())


def sent_message(encoded: EncodedCommand, context_id: int, identifier: BytesIO | None) -> Any:
    """The pynetdicom message object ``EVT_DIMSE_SENT`` handlers expect, built without
    its ``__init__`` (which makes a ``Dataset`` of empty fields)."""
    cls = getattr(dimse_messages, encoded.message_type)
    msg = cls.__new__(cls)
    msg.context_id = context_id
    msg.encoded_command_set = BytesIO(encoded.data)
    # pynetdicom: the Identifier (possibly None) for messages that may carry one, an
    # empty buffer for those that never do.
    has_dataset = encoded.message_type in dimse_messages._DATASET_KEYWORDS
    msg.data_set = identifier if has_dataset else BytesIO()
    msg.command_set = SentCommandSet(encoded)
    msg._data_set_path = None
    msg._data_set_file = None
    return msg


class SentReceiver(Protocol):
    """An ``EVT_DIMSE_SENT`` handler that also takes the responses encoded here without
    pynetdicom's ``Event`` and message object (``response_sent``)."""

    def __call__(self, event: Any) -> None: ...

    def response_sent(
        self, assoc: Any, message_type: str, status: int, message: Callable[[], Any]
    ) -> None:
        """``message_type`` is the message class name ("C_FIND_RSP"); ``message()``
        returns the pynetdicom message object, built on the first call only."""


def report_sent(assoc: Any, encoded: EncodedCommand, context_id: int, identifier: Any) -> None:
    """``EVT_DIMSE_SENT`` for a response encoded here.

    When the only handler bound is a ``SentReceiver`` (the listener's: counters, the
    event stream, ``message_sent`` hooks), it gets the response's type and Status and
    builds the message object only if a watcher or hook asks for it: for a C-FIND
    match, the event and message objects pynetdicom's trigger needs cost as much as
    encoding the response. Any other handler (pynetdicom's debug logging, a test's)
    gets the event as before.
    """
    handlers = assoc.get_handlers(evt.EVT_DIMSE_SENT)
    if not handlers:
        return
    status = encoded.fields.get("Status")
    if len(handlers) == 1 and not handlers[0][1] and isinstance(status, int):
        response_sent = getattr(handlers[0][0], "response_sent", None)
        if response_sent is not None:
            built: list[Any] = []

            def message() -> Any:
                if not built:
                    built.append(sent_message(encoded, context_id, identifier))
                return built[0]

            try:
                response_sent(assoc, encoded.message_type, status, message)
            except Exception:  # as pynetdicom does for a notification handler
                LOGGER.exception("exception in the EVT_DIMSE_SENT handler")
            return
    message = sent_message(encoded, context_id, identifier)
    evt.trigger(assoc, evt.EVT_DIMSE_SENT, {"message": message})


def send_message(provider: DIMSEServiceProvider, primitive: Any, context_id: int) -> bool:
    """Send a message; False (nothing done) when pynetdicom's ``send_msg`` must.

    Responses ``dimse_encode`` handles are encoded here. On a plain socket they, and
    every other message (built and fragmented by pynetdicom as before), are written
    here, on the association thread, so that all P-DATA leave from one thread, in
    order. On TLS the upper layer's thread keeps writing everything (an ``SSLSocket``
    must not be written by one thread while another reads it): the encoded values
    are queued to it as pynetdicom would queue them.
    """
    dul = provider.dul
    sock = dul.socket
    assoc = provider.assoc
    if sock is None or dul.state_machine.current_state not in _SENDING_STATES:
        flush(assoc)
        return False
    max_pdu = _peer_max_pdu(provider)
    if 0 < max_pdu < _MIN_PDU:
        flush(assoc)
        return False
    direct = not isinstance(sock.socket, ssl.SSLSocket)
    encoded = encode_command_set(primitive)
    if encoded is None:
        flush(assoc)  # what was held leaves first, in order
        if not direct:
            return False
        _send_as_pynetdicom(provider, primitive, context_id, max_pdu)
        return True
    has_dataset = encoded.fields["CommandDataSetType"] != 0x0101
    identifier = getattr(primitive, "Identifier", None) if has_dataset else None
    dataset = identifier.getvalue() if identifier is not None else None
    report_sent(assoc, encoded, context_id, identifier)
    if not direct:
        flush(assoc)
        for value in pdv_values(encoded.data, dataset, max_pdu):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, value))
            dul.send_pdu(pdata)
        return True
    payload = pdata_pdus(context_id, encoded.data, dataset, max_pdu)
    held: list[bytes] | None = getattr(assoc, "pacsd_held", None)
    if held is None:
        # The upper layer's thread only sends the association's own PDUs (A-ASSOCIATE-AC,
        # A-RELEASE-RP, A-ABORT). A failed write queues Evt17, as it does on that thread.
        sock.send(payload)
    else:
        held.append(payload)
        if len(held) >= _HOLD_MAX:
            flush(assoc)
    if assoc.get_handlers(evt.EVT_PDU_SENT):
        _report_pdus(assoc, payload)
    return True


def hold(assoc: Any) -> None:
    """Keep the responses this association's thread encodes until ``flush``.

    A C-FIND answer's matches come from the add-in in batches; written one by one, each
    was a system call and a wake-up of the peer (~18 % of the server's CPU for 250
    matches was system time). Held, a batch leaves in one write. The caller flushes
    before anything that may wait (the next batch) and stops holding at the end; any
    other message flushes first, so the order on the wire never changes.
    """
    if getattr(assoc, "pacsd_held", None) is None:
        assoc.pacsd_held = []


def flush(assoc: Any, stop: bool = False) -> None:
    """Write what ``hold`` kept, in one ``send``; with ``stop``, hold no longer. In a
    state where the association may not send (aborted meanwhile), it is dropped, as
    bytes written to a closed connection would be."""
    held: list[bytes] | None = getattr(assoc, "pacsd_held", None)
    if held is None:
        return
    if stop:
        assoc.pacsd_held = None
    if not held:
        return
    data = b"".join(held)
    held.clear()
    dul = assoc.dul
    sock = dul.socket
    if sock is not None and dul.state_machine.current_state in _SENDING_STATES:
        sock.send(data)


def _peer_max_pdu(provider: DIMSEServiceProvider) -> int:
    """The peer's maximum PDU length, read once per association: it is fixed once the
    association is established (the only states this is asked in), and pynetdicom's
    property walks the negotiated user information on every call."""
    value: int | None = getattr(provider, "_pacsd_peer_max_pdu", None)
    if value is None:
        value = int(provider.maximum_pdu_size or 0)
        provider._pacsd_peer_max_pdu = value  # type: ignore[attr-defined]
    return value


def _send_as_pynetdicom(
    provider: DIMSEServiceProvider, primitive: Any, context_id: int, max_pdu: int
) -> None:
    """pynetdicom's ``send_msg`` (3.0.4), writing each PDU instead of queueing it."""
    if primitive.MessageIDBeingRespondedTo is None:
        msg = _RQ_TO_MESSAGE[type(primitive)]()
    else:
        msg = _RSP_TO_MESSAGE[type(primitive)]()
    msg.primitive_to_message(primitive)
    msg.context_id = context_id
    assoc = provider.assoc
    evt.trigger(assoc, evt.EVT_DIMSE_SENT, {"message": msg})
    sock = provider.dul.socket
    report = bool(assoc.get_handlers(evt.EVT_PDU_SENT))
    # A data set pynetdicom would read from a stored file (stored_send.py) is written
    # from the file here, many PDUs per write, once the command set has gone.
    stored = msg._data_set_path
    if report or not isinstance(stored, tuple):
        stored = None
    else:
        msg._data_set_path = None  # pynetdicom then encodes the command set only
    for pdata in msg.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        sock.send(pdu.encode())  # type: ignore[union-attr]
        if report:
            evt.trigger(assoc, evt.EVT_PDU_SENT, {"pdu": pdu})
    if stored is not None:
        send_file(sock, context_id, stored[0], stored[1], max_pdu)


#: Bytes of a stored file read and written at once by ``send_file``.
_FILE_CHUNK = 256 * 1024
#: A P-DATA-TF's header and its one PDV item's (PS3.8 9.3.5): PDU type, reserved, PDU
#: length, item length, presentation context ID, message control header.
_PDATA_HEADER = struct.Struct(">BBIIBB")


def send_file(sock: Any, context_id: int, path: Path, offset: int, max_pdu: int) -> None:
    """Write the data set of ``path`` (from ``offset`` to the end) as P-DATA-TF PDUs,
    fragmented as pynetdicom's ``encode_msg`` does (``max_pdu - 6`` bytes each; any
    size if the peer set no maximum), several PDUs per ``send``.

    pynetdicom builds a P-DATA primitive, a PDU object and its encoding for every
    fragment: for a 1 GiB instance to a peer with 16 KiB PDUs (getscu's default) that
    was 65,000 of each, and pacsd's C-GET ran at 188 MB/s against Orthanc's 245.
    """
    piece = max_pdu - 6 if max_pdu > 6 else _FILE_CHUNK
    per_write = max(1, _FILE_CHUNK // piece)
    with open(path, "rb", buffering=0) as fh:
        remaining = os.fstat(fh.fileno()).st_size - offset
        fh.seek(offset)
        if remaining <= 0:  # as pynetdicom: one empty last fragment
            sock.send(_PDATA_HEADER.pack(4, 0, 6, 2, context_id, 2))
            return
        while remaining > 0:
            size = min(piece * per_write, remaining)
            data = fh.read(size)
            if len(data) < size:
                raise OSError(f"{path} ended {remaining - len(data)} bytes early")
            remaining -= size
            count = -(-size // piece)
            out = bytearray(size + 12 * count)
            view = memoryview(data)
            at = 0
            for start in range(0, size, piece):
                fragment = view[start : start + piece]
                last = remaining == 0 and start + piece >= size
                n = len(fragment)
                _PDATA_HEADER.pack_into(out, at, 4, 0, n + 6, n + 2, context_id, 2 if last else 0)
                out[at + 12 : at + 12 + n] = fragment
                at += 12 + n
            sock.send(out)


def _report_pdus(assoc: Any, payload: bytes) -> None:
    """``EVT_PDU_SENT`` for each PDU written (only when someone listens: pynetdicom's
    debug logging)."""
    offset = 0
    while offset < len(payload):
        length = int.from_bytes(payload[offset + 2 : offset + 6], "big")
        pdu = P_DATA_TF()
        pdu.decode(payload[offset : offset + 6 + length])
        evt.trigger(assoc, evt.EVT_PDU_SENT, {"pdu": pdu})
        offset += 6 + length
