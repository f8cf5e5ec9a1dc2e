"""A minimal C-ECHO SCU over a plain socket (PS3.8 upper layer, PS3.7 DIMSE).

Rollouts check a server's *own* DICOM port after each change: the gRPC health service
only says the listener thinks it is running, a C-ECHO proves an association can be
negotiated and a DIMSE request answered end to end. The SDK must import with nothing but
grpcio and protobuf, so pynetdicom is not an option; a Verification association is
small enough to speak directly: A-ASSOCIATE-RQ with one presentation context (Verification,
Implicit VR Little Endian), one P-DATA-TF carrying the C-ECHO-RQ command set, the
C-ECHO-RSP read back for its status, then A-RELEASE.

    from pacsd.client.dicom_echo import c_echo

    result = c_echo("127.0.0.1", 11112, called_ae="PACSD")
    print(result.success, result.status, result.error)

It never raises for what the peer does (refusal, abort, silence, garbage): that is the
result (``success=False`` and ``error``), as with ``client.aetitles.echo``.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from dataclasses import dataclass

__all__ = ["DEFAULT_CALLING_AE", "EchoResult", "c_echo"]

DEFAULT_CALLING_AE = "PACSCTL"

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
#: This SCU's Implementation Class UID (a UUID-derived 2.25 UID, PS3.5 B.2).
IMPLEMENTATION_CLASS_UID = "2.25.161287345983240651418211932839812375143"
IMPLEMENTATION_VERSION = "PACSD_ECHOSCU"
#: The largest P-DATA PDU we announce we can receive.
MAX_PDU = 16384
#: Anything larger from the peer is not a sane answer to an echo.
_PDU_LIMIT = 1 << 22

_CONTEXT_ID = 1
_MESSAGE_ID = 1
_C_ECHO_RQ = 0x0030
_C_ECHO_RSP = 0x8030
_NO_DATASET = 0x0101

_REJECT_RESULTS = {1: "permanent", 2: "transient"}
_REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}
_CONTEXT_RESULTS = {
    1: "user rejection",
    2: "no reason",
    3: "abstract syntax not supported",
    4: "transfer syntaxes not supported",
}


@dataclass(frozen=True)
class EchoResult:
    """How a C-ECHO went. ``status`` is the C-ECHO-RSP's DIMSE status (0 is success;
    also 0 when no response came, so read ``success`` and ``error``);
    ``round_trip_ms`` runs from the connection attempt to the response."""

    success: bool
    status: int = 0
    error: str = ""
    round_trip_ms: float = 0.0


class _EchoFailed(Exception):
    pass


def c_echo(
    host: str,
    port: int,
    called_ae: str,
    *,
    calling_ae: str = DEFAULT_CALLING_AE,
    timeout: float = 5.0,
    tls: ssl.SSLContext | None = None,
) -> EchoResult:
    """Associate with ``called_ae`` at ``host:port``, send one C-ECHO, release.

    ``timeout`` bounds each step (connect, the TLS handshake, each read and write).
    With ``tls`` the association runs over TLS (DICOM's secure transport), the server
    verified against the context's CAs as ``host``.
    """
    start = time.monotonic()
    try:
        called = _ae_field(called_ae, "called")
        calling = _ae_field(calling_ae, "calling")
    except ValueError as exc:
        return EchoResult(False, error=str(exc))

    def elapsed() -> float:
        return round((time.monotonic() - start) * 1000, 3)

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return EchoResult(False, error=f"cannot connect to {host}:{port}: {reason}")
    try:
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                try:
                    sock = tls.wrap_socket(sock, server_hostname=host)
                except ssl.SSLError as exc:
                    return EchoResult(
                        False,
                        error=f"TLS handshake with {host}:{port} failed: {exc.reason or exc}",
                        round_trip_ms=elapsed(),
                    )
            status = _exchange(sock, called, calling)
            ms = elapsed()
            _release(sock)
    except _EchoFailed as exc:
        return EchoResult(False, error=str(exc), round_trip_ms=elapsed())
    except TimeoutError:
        return EchoResult(
            False, error=f"no answer from {host}:{port} within {timeout}s", round_trip_ms=elapsed()
        )
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return EchoResult(
            False, error=f"connection to {host}:{port} failed: {reason}", round_trip_ms=elapsed()
        )
    success = status == 0x0000
    error = "" if success else f"C-ECHO answered with status 0x{status:04X}"
    return EchoResult(success, status, error, ms)


# -- the exchange -----------------------------------------------------------------------


def _exchange(sock: socket.socket, called: bytes, calling: bytes) -> int:
    sock.sendall(_associate_rq(called, calling))
    pdu_type, body = _read_pdu(sock)
    if pdu_type == 0x03:
        raise _EchoFailed(_rejection(body))
    if pdu_type == 0x07:
        raise _EchoFailed("association aborted by the peer")
    if pdu_type != 0x02:
        raise _EchoFailed(f"unexpected PDU type 0x{pdu_type:02X} instead of A-ASSOCIATE-AC")
    _check_accepted(body)
    sock.sendall(_p_data(_c_echo_rq()))
    command = b""
    while True:
        pdu_type, body = _read_pdu(sock)
        if pdu_type == 0x07:
            raise _EchoFailed("association aborted by the peer before the C-ECHO response")
        if pdu_type != 0x04:
            raise _EchoFailed(f"unexpected PDU type 0x{pdu_type:02X} instead of P-DATA-TF")
        last = False
        for control, fragment in _pdvs(body):
            if not control & 0x01:
                raise _EchoFailed("the C-ECHO response carried a data set")
            command += fragment
            last = bool(control & 0x02)
        if last:
            break
    elements = _parse_command(command)
    field = elements.get(0x0100)
    if field != _C_ECHO_RSP:
        raise _EchoFailed(f"expected a C-ECHO-RSP, got command field {field!r}")
    if 0x0900 not in elements:
        raise _EchoFailed("the C-ECHO response has no status")
    return elements[0x0900]


def _release(sock: socket.socket) -> None:
    """A-RELEASE-RQ and wait for A-RELEASE-RP; a peer that just closes is fine too,
    since the echo already succeeded or failed by then."""
    try:
        sock.sendall(_pdu(0x05, b"\x00" * 4))
        _read_pdu(sock)
    except (OSError, _EchoFailed):
        pass


# -- PDUs ---------------------------------------------------------------------------------


def _ae_field(ae: str, which: str) -> bytes:
    text = ae.strip()
    if not 1 <= len(text) <= 16 or not all(32 <= ord(c) < 127 for c in text) or "\\" in text:
        raise ValueError(f"{which} AE title {ae!r} is not 1 to 16 printable ASCII characters")
    return text.encode("ascii").ljust(16, b" ")


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _associate_rq(called: bytes, calling: bytes) -> bytes:
    presentation = (
        struct.pack(">BBBB", _CONTEXT_ID, 0, 0, 0)
        + _item(0x30, VERIFICATION.encode())
        + _item(0x40, IMPLICIT_VR_LE.encode())
    )
    user = (
        _item(0x51, struct.pack(">I", MAX_PDU))
        + _item(0x52, IMPLEMENTATION_CLASS_UID.encode())
        + _item(0x55, IMPLEMENTATION_VERSION.encode())
    )
    body = (
        struct.pack(">HH", 1, 0)
        + called
        + calling
        + b"\x00" * 32
        + _item(0x10, APPLICATION_CONTEXT.encode())
        + _item(0x20, presentation)
        + _item(0x50, user)
    )
    return _pdu(0x01, body)


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise _EchoFailed("the peer closed the connection")
        data += chunk
    return bytes(data)


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    pdu_type, _, length = struct.unpack(">BBI", _read_exact(sock, 6))
    if length > _PDU_LIMIT:
        raise _EchoFailed(f"the peer sent a {length}-byte PDU")
    return pdu_type, _read_exact(sock, length)


def _rejection(body: bytes) -> str:
    if len(body) < 4:
        return "association rejected"
    result, source, reason = body[1], body[2], body[3]
    kind = _REJECT_RESULTS.get(result, f"result {result}")
    why = _REJECT_REASONS.get((source, reason), f"source {source}, reason {reason}")
    return f"association rejected ({kind}): {why}"


def _check_accepted(body: bytes) -> None:
    """The A-ASSOCIATE-AC must accept our one presentation context."""
    offset = 68  # protocol version, reserved, AE fields, reserved
    while offset + 4 <= len(body):
        item_type = body[offset]
        (length,) = struct.unpack(">H", body[offset + 2 : offset + 4])
        value = body[offset + 4 : offset + 4 + length]
        if item_type == 0x21 and len(value) >= 4 and value[0] == _CONTEXT_ID:
            if value[2] != 0:
                why = _CONTEXT_RESULTS.get(value[2], f"result {value[2]}")
                raise _EchoFailed(f"Verification presentation context refused: {why}")
            return
        offset += 4 + length
    raise _EchoFailed("the A-ASSOCIATE-AC did not answer the Verification context")


def _element(tag_element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, tag_element, len(value)) + value


def _c_echo_rq() -> bytes:
    uid = VERIFICATION.encode()
    if len(uid) % 2:
        uid += b"\x00"  # UIDs are padded to even length with NUL (PS3.5 9.1)
    rest = (
        _element(0x0002, uid)
        + _element(0x0100, struct.pack("<H", _C_ECHO_RQ))
        + _element(0x0110, struct.pack("<H", _MESSAGE_ID))
        + _element(0x0800, struct.pack("<H", _NO_DATASET))
    )
    return _element(0x0000, struct.pack("<I", len(rest))) + rest


def _p_data(command: bytes) -> bytes:
    # One PDV: presentation context, then 0x03 = command fragment, last fragment.
    pdv = struct.pack(">IBB", len(command) + 2, _CONTEXT_ID, 0x03) + command
    return _pdu(0x04, pdv)


def _pdvs(body: bytes) -> list[tuple[int, bytes]]:
    items = []
    offset = 0
    while offset + 6 <= len(body):
        (length,) = struct.unpack(">I", body[offset : offset + 4])
        if length < 2 or offset + 4 + length > len(body):
            raise _EchoFailed("malformed P-DATA-TF")
        control = body[offset + 5]
        items.append((control, body[offset + 6 : offset + 4 + length]))
        offset += 4 + length
    return items


def _parse_command(data: bytes) -> dict[int, int]:
    """The US (16-bit) elements of an Implicit VR LE command set, by element number."""
    values: dict[int, int] = {}
    offset = 0
    while offset + 8 <= len(data):
        group, element, length = struct.unpack("<HHI", data[offset : offset + 8])
        value = data[offset + 8 : offset + 8 + length]
        if group != 0x0000 or len(value) != length:
            raise _EchoFailed("malformed command set in the response")
        if length == 2:
            (values[element],) = struct.unpack("<H", value)
        offset += 8 + length
    return values
