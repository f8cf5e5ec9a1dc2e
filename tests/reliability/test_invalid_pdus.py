"""Invalid PDUs are answered at once: an A-ABORT (PS3.8: invalid PDU, Evt19), then the
connection closes, with one log line and no traceback.

The server runs with its default timeouts (30 s and 60 s), so a connection closed
within a second was closed because of what it sent, not by a timer. The same
connection after an invalid PDU is never read from again: a peer announcing 4 GiB gets
its A-ABORT without the server waiting for (or allocating) the 4 GiB.
"""

from __future__ import annotations

import struct

import pytest

from tests.conftest import PacsdProcess
from tests.reliability import wire

PROMPT = 1.0


def _established_then(*chunks: bytes) -> list[bytes]:
    return [wire.associate_rq(), *chunks]


def _no_command_field() -> bytes:
    body = struct.pack("<HHL", 0x0000, 0x0110, 2) + struct.pack("<H", 1)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def _context_without_abstract_syntax() -> bytes:
    """An A-ASSOCIATE-RQ whose one presentation context has only a transfer syntax."""
    ts = wire._item(0x40, wire._uid(wire.IMPLICIT_LE))
    context = wire._item(0x20, bytes([1, 0, 0, 0]) + ts)
    rq = wire.associate_rq(contexts=[])
    at = rq.index(b"\x50\x00")  # the user information item follows the contexts
    return wire.pdu(wire.ASSOCIATE_RQ, rq[6:at] + context + rq[at:])


CASES = {
    "rq_length_4gib": [wire.pdu(wire.ASSOCIATE_RQ, b"\0" * 64, length=0xFFFFFFFF)],
    "rq_longer_than_256kib": [wire.pdu(wire.ASSOCIATE_RQ, b"\0" * 64, length=256 * 1024 + 1)],
    "unknown_pdu_type": [wire.pdu(0x08, b"\0" * 16)],
    "undecodable_rq": [wire.pdu(wire.ASSOCIATE_RQ, b"\xff" * 80)],
    "p_data_before_association": [wire.p_data(1, wire.echo_rq(), command=True)],
    "p_data_longer_than_max_pdu": _established_then(
        wire.pdu(wire.P_DATA, b"\0" * 16, length=131072 + 1)
    ),
    "command_without_command_field": _established_then(
        wire.p_data(1, _no_command_field(), command=True)
    ),
    "dataset_without_command": _established_then(wire.p_data(3, b"\0" * 32, command=False)),
    "second_associate_rq": _established_then(wire.associate_rq()),
    "rq_even_context_id": [
        wire.associate_rq(contexts=[(2, wire.VERIFICATION, [wire.IMPLICIT_LE])])
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_pdu_is_aborted_at_once(server: PacsdProcess, case: str) -> None:
    chunks = CASES[case]
    sock = wire.connect(server.dicom_port)
    with sock:
        if chunks[0][0] == wire.ASSOCIATE_RQ and len(chunks) > 1:
            sock.sendall(chunks[0])
            assert wire.read_answer(sock, 5, until_closed=False).first == wire.ASSOCIATE_AC
            chunks = chunks[1:]
        for chunk in chunks:
            sock.sendall(chunk)
        answer = wire.read_answer(sock, 10)
    assert answer.closed and answer.seconds < PROMPT, answer
    assert answer.pdu_types[-1:] == [wire.ABORT], answer
    assert wire.echo_ok(server.dicom_port)
    log = server.stderr()
    assert "Traceback" not in log and "Exception in thread" not in log
    assert "invalid PDU" in log


def test_request_that_cannot_be_negotiated_is_rejected(server: PacsdProcess) -> None:
    """It decodes, but pynetdicom cannot negotiate it: A-ASSOCIATE-RJ (permanent,
    service user, no reason given) at once, instead of a dead association thread."""
    sock = wire.connect(server.dicom_port)
    with sock:
        sock.sendall(_context_without_abstract_syntax())
        answer = wire.read_answer(sock, 5, until_closed=False)
    assert answer.seconds < PROMPT and wire.reject_reason(answer) == (1, 1, 1), answer
    assert wire.echo_ok(server.dicom_port)
    log = server.stderr()
    assert "unusable A-ASSOCIATE-RQ" in log
    assert "Traceback" not in log and "Exception in thread" not in log
