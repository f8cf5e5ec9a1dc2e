"""What a peer proposes is still checked although pacsd validates its own UIDs only once
(dicom/negotiation.py): an invalid UID in a presentation context is an invalid PDU
(A-ABORT at once), a non-conformant one is negotiated and refused per context, and the
transfer syntax accepted is the one the peer prefers. Each case runs twice, after
associations that proposed the valid UIDs, so the second answer cannot come from a memo
of the first.
"""

from __future__ import annotations

import struct

import pytest

from tests.conftest import PacsdProcess
from tests.reliability import wire

CT = "1.2.840.10008.5.1.4.1.1.2"
TOO_LONG = "1." * 32 + "1"  # 65 characters
NON_CONFORMANT = "1.2.840.10008.5.1.4.1.1.02"  # a component with a leading zero
PROMPT = 1.0


def _accepted_contexts(answer: wire.Answer) -> dict[int, tuple[int, str]]:
    """context ID -> (result, transfer syntax) from an A-ASSOCIATE-AC (PS3.8 9.3.3)."""
    assert answer.first == wire.ASSOCIATE_AC, answer
    raw = answer.raw
    end = 6 + int(struct.unpack(">L", raw[2:6])[0])
    pos = 6 + 68  # fixed fields
    found = {}
    while pos + 4 <= end:
        item_type, length = raw[pos], int(struct.unpack(">H", raw[pos + 2 : pos + 4])[0])
        body = raw[pos + 4 : pos + 4 + length]
        if item_type == 0x21:
            ts_length = int(struct.unpack(">H", body[6:8])[0])
            syntax = body[8 : 8 + ts_length].rstrip(b"\0").decode("ascii")
            found[body[0]] = (body[2], syntax)
        pos += 4 + length
    return found


def _negotiate(port: int, contexts: list[tuple[int, str, list[str]]]) -> wire.Answer:
    sock = wire.connect(port)
    with sock:
        sock.sendall(wire.associate_rq(contexts=contexts))
        answer = wire.read_answer(sock, 5, until_closed=False)
        if answer.first == wire.ASSOCIATE_AC:
            sock.sendall(wire.release_rq())
            wire.read_answer(sock, 5, until_closed=False)
        return answer


def _warm_up(port: int) -> None:
    answer = _negotiate(port, [(1, CT, [wire.EXPLICIT_LE, wire.IMPLICIT_LE])])
    assert _accepted_contexts(answer)[1][0] == 0


@pytest.mark.parametrize(
    "contexts",
    [
        [(1, TOO_LONG, [wire.IMPLICIT_LE])],
        [(1, CT, [TOO_LONG])],
        [(1, CT, [wire.IMPLICIT_LE]), (3, wire.VERIFICATION, [wire.IMPLICIT_LE, TOO_LONG])],
    ],
    ids=["abstract_syntax", "transfer_syntax", "second_context"],
)
def test_an_invalid_proposed_uid_is_an_invalid_pdu(
    server: PacsdProcess, contexts: list[tuple[int, str, list[str]]]
) -> None:
    for _ in range(2):
        _warm_up(server.dicom_port)
        sock = wire.connect(server.dicom_port)
        with sock:
            sock.sendall(wire.associate_rq(contexts=contexts))
            answer = wire.read_answer(sock, 5)
        assert answer.first == wire.ABORT and answer.closed, answer
        assert answer.seconds < PROMPT, answer
    assert wire.echo_ok(server.dicom_port)
    log = server.stderr()
    assert "undecodable A-ASSOCIATE-RQ" in log and "must not exceed 64 characters" in log
    assert "Traceback" not in log and "Exception in thread" not in log


def test_non_conformant_uids_are_refused_per_context(server: PacsdProcess) -> None:
    contexts = [
        (1, NON_CONFORMANT, [wire.IMPLICIT_LE]),
        (3, CT, [NON_CONFORMANT]),
        (5, CT, [wire.IMPLICIT_LE]),
    ]
    for _ in range(2):
        _warm_up(server.dicom_port)
        results = _accepted_contexts(_negotiate(server.dicom_port, contexts))
        assert results[1][0] == 0x03  # abstract syntax not supported
        assert results[3][0] == 0x04  # transfer syntaxes not supported
        assert results[5] == (0x00, wire.IMPLICIT_LE)


@pytest.mark.parametrize(
    "proposed", [[wire.IMPLICIT_LE, wire.EXPLICIT_LE], [wire.EXPLICIT_LE, wire.IMPLICIT_LE]]
)
def test_the_peers_preferred_transfer_syntax_is_accepted(
    server: PacsdProcess, proposed: list[str]
) -> None:
    for _ in range(2):
        results = _accepted_contexts(_negotiate(server.dicom_port, [(1, CT, proposed)]))
        assert results[1] == (0x00, proposed[0])
