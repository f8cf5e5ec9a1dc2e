"""Raw DICOM Upper Layer bytes for reliability tests: PDUs built by hand, so a test can
send exactly what a broken or hostile peer would (half a PDU, a lying length), and a
reader that classifies what the server answered.

The encodings follow PS3.8 section 9.3 and PS3.7 annex E; nothing here uses pynetdicom,
so the peer is independent of the server's own PDU code.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.9.7433.1.1"

#: PDU types (PS3.8 9.3.1).
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    """A PDU with ``body``; ``length`` overrides the length field (to lie about it)."""
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def associate_rq(
    contexts: list[tuple[int, str, list[str]]] | None = None,
    called: str = "PACSD",
    calling: str = "FUZZER",
    max_pdu: int = 65536,
) -> bytes:
    """A-ASSOCIATE-RQ proposing ``(context id, abstract syntax, transfer syntaxes)``."""
    if contexts is None:
        contexts = [(1, VERIFICATION, [IMPLICIT_LE]), (3, SECONDARY_CAPTURE, [EXPLICIT_LE])]
    body = struct.pack(">HH", 1, 0)
    body += called.ljust(16).encode("ascii") + calling.ljust(16).encode("ascii") + b"\0" * 32
    body += _item(0x10, APPLICATION_CONTEXT.encode("ascii"))
    for cx_id, abstract, syntaxes in contexts:
        sub = _item(0x30, _uid(abstract)) + b"".join(_item(0x40, _uid(ts)) for ts in syntaxes)
        body += _item(0x20, struct.pack(">BBBB", cx_id, 0, 0, 0) + sub)
    user = _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, _uid(IMPLEMENTATION_UID))
    body += _item(0x50, user)
    return pdu(ASSOCIATE_RQ, body)


def p_data(context_id: int, fragment: bytes, command: bool, last: bool = True) -> bytes:
    """P-DATA-TF carrying one PDV (PS3.8 9.3.5, E.2 message control header)."""
    header = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    pdv = struct.pack(">LBB", len(fragment) + 2, context_id, header) + fragment
    return pdu(P_DATA, pdv)


def release_rq() -> bytes:
    return pdu(RELEASE_RQ, b"\0" * 4)


def _implicit(ds: Dataset) -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = True
    write_dataset(buf, ds)
    return bytes(buf.getvalue())


def command_set(elements: Dataset) -> bytes:
    """A command set with its group length, Implicit VR Little Endian (PS3.7 6.3.1)."""
    body = _implicit(elements)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def echo_rq(message_id: int = 1) -> bytes:
    cmd = Dataset()
    cmd.AffectedSOPClassUID = VERIFICATION
    cmd.CommandField = 0x0030
    cmd.MessageID = message_id
    cmd.CommandDataSetType = 0x0101
    return command_set(cmd)


def store_rq(sop_instance_uid: str, message_id: int = 1) -> bytes:
    cmd = Dataset()
    cmd.AffectedSOPClassUID = SECONDARY_CAPTURE
    cmd.CommandField = 0x0001
    cmd.MessageID = message_id
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000
    cmd.AffectedSOPInstanceUID = sop_instance_uid
    return command_set(cmd)


@dataclass
class Answer:
    """What the server sent before closing (or before the read gave up)."""

    pdu_types: list[int]
    closed: bool
    seconds: float
    raw: bytes

    @property
    def first(self) -> int | None:
        return self.pdu_types[0] if self.pdu_types else None


def read_answer(sock: socket.socket, timeout: float, until_closed: bool = True) -> Answer:
    """Read PDUs until the server closes the connection (or, with ``until_closed``
    false, until one whole PDU arrived), for at most ``timeout`` seconds."""
    start = time.monotonic()
    deadline = start + timeout
    data = b""
    closed = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
        if not until_closed and len(data) >= 6 and len(data) >= 6 + _length(data):
            break
    return Answer(_types(data), closed, time.monotonic() - start, data)


def _length(data: bytes) -> int:
    return int(struct.unpack(">L", data[2:6])[0])


def _types(data: bytes) -> list[int]:
    types = []
    pos = 0
    while pos + 6 <= len(data):
        types.append(data[pos])
        pos += 6 + int(struct.unpack(">L", data[pos + 2 : pos + 6])[0])
    return types


def reject_reason(answer: Answer) -> tuple[int, int, int]:
    """(result, source, diagnostic) of an A-ASSOCIATE-RJ answer (PS3.8 9.3.4)."""
    assert answer.first == ASSOCIATE_RJ, answer
    result, source, diagnostic = answer.raw[7], answer.raw[8], answer.raw[9]
    return result, source, diagnostic


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def associate(port: int, **kw: object) -> socket.socket:
    """An established association (raises when the server does not accept)."""
    sock = connect(port)
    sock.sendall(associate_rq(**kw))  # type: ignore[arg-type]
    answer = read_answer(sock, 5.0, until_closed=False)
    if answer.first != ASSOCIATE_AC:
        sock.close()
        raise AssertionError(f"association not accepted: {answer}")
    return sock


def echo_ok(port: int) -> bool:
    """A whole C-ECHO on a fresh association; True when answered with status 0x0000."""
    sock = associate(port)
    try:
        sock.sendall(p_data(1, echo_rq(), command=True))
        answer = read_answer(sock, 5.0, until_closed=False)
        ok = answer.first == P_DATA and _status(answer.raw) == 0
        sock.sendall(release_rq())
        read_answer(sock, 5.0, until_closed=False)
        return ok
    finally:
        sock.close()


def _status(raw: bytes) -> int | None:
    """The Status (0000,0900) of the command in a P-DATA-TF answer."""
    marker = struct.pack("<HHL", 0x0000, 0x0900, 2)
    at = raw.find(marker)
    return None if at < 0 else int(struct.unpack("<H", raw[at + 8 : at + 10])[0])
