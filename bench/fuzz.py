#!/usr/bin/env python3
"""Malformed-input run: many connections, each sending broken or hostile PDUs to pacsd.

A seeded mutator builds each connection's bytes from well-formed ones: random bytes,
A-ASSOCIATE-RQs with flipped, inserted or deleted bytes, lying or huge length fields,
truncated PDUs, PDU types that do not belong there, and, on established associations,
P-DATA-TF with invalid presentation context IDs, broken PDV framing, mutated command
sets and datasets. Each connection then reads what the server answers until it closes
the connection; one that stays open gets an A-RELEASE-RQ, then an A-ABORT, and a
server that still has not closed it after its timeouts counts as *hung*.

Every connection's transcript (our steps and the server's PDUs in order) is checked
against what PS3.8 allows for its kind (``Case.expect``, ``classify``): an invalid
first PDU is never accepted, an invalid PDU after negotiation is aborted, a well-formed
one is answered, a release is answered, and a silent close follows only our A-ABORT,
our half-close or a stall.

The run fails (exit status 1) when the server dies, any connection hung or got an
answer its kind does not allow, the server's log holds a traceback or an unexpected
error, a C-ECHO does not work afterwards, or its memory grew past
``--max-rss-growth-mib``. It prints the figures (and writes them with ``--json``).

By default it starts its own ``pacsd serve`` (the console script beside this
interpreter) on free ports with a fresh data directory; ``--dicom-port`` (with
``--pid`` and ``--log`` for the resource and log checks) targets a running one.

    python bench/fuzz.py                      # 100,000 PDUs
    python bench/fuzz.py --pdus 10000 --seed 7 --json fuzz.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

VERIFICATION = "1.2.840.10008.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
#: Context IDs proposed by ``associate_rq``: 1 verification, 3 secondary capture.
ECHO_CX, STORE_CX = 1, 3
#: pacsd's largest A-ASSOCIATE-RQ (``pdu_guard.MAX_ASSOCIATE_RQ``).
MAX_ASSOCIATE_RQ = 256 * 1024
#: The maximum PDU length the server announces (``max_pdu_size``; ``--max-pdu``).
MAX_PDU = 131072

# -- well-formed PDUs (PS3.8 9.3) ----------------------------------------------------


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def associate_rq(calling: str = "FUZZER") -> bytes:
    body = struct.pack(">HH", 1, 0) + b"PACSD".ljust(16) + calling.encode().ljust(16)
    body += b"\0" * 32 + _item(0x10, APPLICATION_CONTEXT.encode())
    for cx, abstract, ts in (
        (ECHO_CX, VERIFICATION, IMPLICIT_LE),
        (STORE_CX, SECONDARY_CAPTURE, EXPLICIT_LE),
    ):
        sub = _item(0x30, _uid(abstract)) + _item(0x40, _uid(ts))
        body += _item(0x20, bytes([cx, 0, 0, 0]) + sub)
    user = _item(0x51, struct.pack(">L", 65536)) + _item(0x52, _uid("1.2.826.0.1.3680043.9.7433.9"))
    return pdu(0x01, body + _item(0x50, user))


def p_data(cx: int, fragment: bytes, command: bool, last: bool = True) -> bytes:
    header = (0x01 if command else 0) | (0x02 if last else 0)
    return pdu(0x04, struct.pack(">LBB", len(fragment) + 2, cx, header) + fragment)


RELEASE_RQ = pdu(0x05, b"\0" * 4)
ABORT = pdu(0x07, b"\0\0\0\0")


def _element(group: int, elem: int, value: bytes) -> bytes:
    return struct.pack("<HHL", group, elem, len(value)) + value


def command(fields: list[tuple[int, bytes]]) -> bytes:
    """An Implicit VR Little Endian command set with its group length (PS3.7 E.1)."""
    body = b"".join(_element(0, tag, value) for tag, value in fields)
    return _element(0, 0, struct.pack("<L", len(body))) + body


def echo_rq(message_id: int = 1) -> bytes:
    return command(
        [
            (0x0002, _uid(VERIFICATION)),
            (0x0100, struct.pack("<H", 0x0030)),
            (0x0110, struct.pack("<H", message_id)),
            (0x0800, struct.pack("<H", 0x0101)),
        ]
    )


def store_rq(uid: str, message_id: int = 1) -> bytes:
    return command(
        [
            (0x0002, _uid(SECONDARY_CAPTURE)),
            (0x0100, struct.pack("<H", 0x0001)),
            (0x0110, struct.pack("<H", message_id)),
            (0x0700, struct.pack("<H", 0)),
            (0x0800, struct.pack("<H", 0x0000)),
            (0x1000, _uid(uid)),
        ]
    )


def dataset(uid: str, rng: random.Random) -> bytes:
    """A small Explicit VR Little Endian Secondary Capture dataset."""

    def el(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
            return struct.pack("<HH2sHL", group, elem, vr, 0, len(value)) + value
        return struct.pack("<HH2sH", group, elem, vr, len(value)) + value

    return b"".join(
        [
            el(0x0008, 0x0016, b"UI", _uid(SECONDARY_CAPTURE)),
            el(0x0008, 0x0018, b"UI", _uid(uid)),
            el(0x0010, 0x0010, b"PN", b"FUZZ^TEST "),
            el(0x0010, 0x0020, b"LO", b"FUZZ"),
            el(0x0020, 0x000D, b"UI", _uid(f"{uid}.1")),
            el(0x0020, 0x000E, b"UI", _uid(f"{uid}.2")),
            el(0x7FE0, 0x0010, b"OB", rng.randbytes(rng.choice([0, 16, 256]))),
        ]
    )


# -- mutations ----------------------------------------------------------------------


def mutate(data: bytes, rng: random.Random, keep_header: bool = False) -> bytes:
    """Flip, overwrite, insert or delete a few bytes (after the 6-byte PDU header when
    ``keep_header``, so the mutation reaches the decoder rather than the framing)."""
    buf = bytearray(data)
    start = 6 if keep_header and len(buf) > 6 else 0
    for _ in range(rng.randint(1, 8)):
        if len(buf) <= start:
            break
        at = rng.randrange(start, len(buf))
        op = rng.random()
        if op < 0.4:
            buf[at] ^= 1 << rng.randrange(8)
        elif op < 0.6:
            buf[at] = rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        elif op < 0.8:
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            del buf[at : at + rng.randint(1, 16)]
    if keep_header and len(buf) >= 6:
        struct.pack_into(">L", buf, 2, len(buf) - 6)  # framing stays right
    return bytes(buf)


def lying_length(data: bytes, rng: random.Random) -> tuple[bytes, int]:
    """The PDU with a wrong length field, and that length."""
    buf = bytearray(data)
    real = len(buf) - 6
    length = rng.choice(
        [
            0,
            1,
            3,
            real - 1,
            real + 1,
            real * 2,
            0xFFFF,
            0x7FFFFFFF,
            0xFFFFFFFF,
            rng.randrange(1 << 32),
        ]
    )
    struct.pack_into(">L", buf, 2, length)
    return bytes(buf), length


#: What the server may send back (its PDUs as ``LETTERS``, without our steps or the
#: close), by the rules of PS3.8 (state table 9-10) and pacsd's limits. Every
#: connection must match its case's rule; on top, every connection must be closed by
#: the server (none hangs), and a close with no A-ASSOCIATE-RJ, A-RELEASE-RP or
#: A-ABORT before it is allowed only where PS3.8 closes silently: we sent an A-ABORT
#: (AA-2, AA-3), shut our side mid-PDU (Evt17, AA-4), or stalled mid-PDU until the
#: server's timeout (ARTIM expiry, AA-2; ``network_timeout``).
ANY_ORDERLY = r"J|CP*(R|A+)?|A+|"  # RJ alone, or AC then answers then an end, or aborts
NO_ASSOCIATION = r"J|A+|"  # an invalid first PDU is never accepted (AA-1, AA-8)
ABORTED = r"A+"  # an invalid or unexpected PDU: A-ABORT (AA-1 before, AA-8 after AC)
SILENT = r""  # a PDU cut short: closed without a word


@dataclass
class Case:
    """One connection: the chunks to send, how many PDUs they hold, what may come back."""

    kind: str
    chunks: list[bytes]
    pdus: int
    #: Regular expression the server's PDUs must match in full (see ANY_ORDERLY).
    expect: str = ANY_ORDERLY
    #: Chunks (by index) that the server must answer: we wait for its PDU before going
    #: on. A P-DATA-TF sent before the A-ASSOCIATE-AC is itself a protocol error (Evt10
    #: in Sta3) that would hide the malformation, and an A-RELEASE-RQ sent before a
    #: response is in lets the server end the association with the request unanswered.
    answered: tuple[int, ...] = ()
    #: Close our sending side after the chunks (a peer that dies mid-PDU).
    half_close: bool = False
    #: Send nothing more after the chunks, waiting for the server to time out (a peer
    #: that stops mid-PDU): our A-RELEASE-RQ and A-ABORT would complete the PDU.
    stall: bool = False
    #: False when a length field may lie, so the server may be left waiting for the
    #: rest of a PDU (our A-RELEASE-RQ and A-ABORT become part of it) until it times
    #: out and closes without a word, as for a stall.
    framed: bool = True
    #: Our chunks end with an A-ABORT, which closes the connection without an answer.
    ends_with_abort: bool = False


def _random_bytes(rng: random.Random) -> Case:
    data = rng.randbytes(rng.choice([1, 5, 6, 7, 64, 512, 4096]))
    return Case("random_bytes", [data], 1, NO_ASSOCIATION, framed=False)


def _mutated_rq(rng: random.Random) -> Case:
    if rng.random() < 0.7:
        # The length stays right: the request is read whole and answered at once; it
        # may still be valid (AC, then our A-RELEASE-RQ is answered), unusable (RJ) or
        # invalid (A-ABORT).
        data = mutate(associate_rq(), rng, True)
        return Case("mutated_rq:framed", [data], 1, r"A|J|CR", answered=(0,))
    return Case("mutated_rq:unframed", [mutate(associate_rq(), rng)], 1, framed=False)


def _lying_rq(rng: random.Random) -> Case:
    data, length = lying_length(associate_rq(), rng)
    real = len(data) - 6
    if length > MAX_ASSOCIATE_RQ:  # refused unread
        return Case("lying_length_rq:huge", [data], 1, ABORTED, answered=(0,))
    if length > real:  # the server waits for the rest of a request that never comes
        half_close = rng.random() < 0.7
        return Case("lying_length_rq:long", [data], 1, SILENT, (), half_close, not half_close)
    # A prefix is read as the request (it may even decode); the rest is a second PDU.
    return Case("lying_length_rq:short", [data], 1, framed=False)


def _truncated(rng: random.Random) -> Case:
    rq = associate_rq()
    half_close = rng.random() < 0.7
    cut = rq[: rng.randrange(1, len(rq))]
    return Case("truncated_rq", [cut], 1, SILENT, (), half_close, not half_close)


def _wrong_first_type(rng: random.Random) -> Case:
    pdu_type = rng.choice([0x00, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x7F, 0xFF])
    body = rng.choice([b"\0" * 4, associate_rq()[6:], rng.randbytes(rng.randint(0, 300))])
    # An A-ABORT before negotiation closes the connection (AA-2) or, undecodable, is
    # answered with one (AA-1); any other PDU is answered with an A-ABORT (AA-1).
    abort = pdu_type == 0x07
    expect = r"A?" if abort else ABORTED
    answered = () if abort else (0,)
    return Case(
        "wrong_first_type", [pdu(pdu_type, body)], 1, expect, answered, ends_with_abort=abort
    )


#: Sub-kinds of malformed PDU sent on an established association, with their share.
ESTABLISHED_KINDS = (
    ("bad_context_id", 0.14),
    ("mutated_command", 0.16),
    ("mutated_dataset", 0.16),
    ("broken_pdv", 0.12),
    ("lying_length_pdata", 0.12),
    ("wrong_type_established", 0.1),
    ("mutated_pdata_framing", 0.1),
    ("valid_echo", 0.1),
)


def _established(rng: random.Random) -> Case:
    """A valid association and up to two valid C-ECHOs, then one broken (or valid)
    P-DATA-TF or a PDU that does not belong there; then we release."""
    chunks = [associate_rq()]
    echoes = rng.randint(0, 2)
    chunks += [p_data(ECHO_CX, echo_rq(n + 1), command=True) for n in range(echoes)]
    ok = f"CP{{{echoes}}}"  # the A-ASSOCIATE-AC and the C-ECHO-RSPs
    mid = echoes + 1
    uid = f"1.2.826.0.1.3680043.9.7433.77.{rng.randrange(1 << 30)}"
    roll = rng.random()
    kind = ESTABLISHED_KINDS[-1][0]
    for name, share in ESTABLISHED_KINDS:
        if roll < share:
            kind = name
            break
        roll -= share
    half_close = stall = False
    framed = answer = True  # False: the broken PDU may go unanswered
    if kind == "bad_context_id":
        # A context ID that was not accepted (even ones are never valid, 5 and 7 were
        # not proposed): the message cannot be processed, A-ABORT.
        cx = rng.choice([0, 2, 5, 7, 255])
        chunks.append(p_data(cx, echo_rq(mid), command=True))
        expect = ok + ABORTED
    elif kind == "mutated_command":
        # It may still decode (a response, or nothing while a fragment is awaited,
        # then the release), or not (A-ABORT).
        body = mutate(echo_rq(mid) if rng.random() < 0.5 else store_rq(uid, mid), rng)
        chunks.append(p_data(rng.choice([ECHO_CX, STORE_CX]), body, command=True))
        expect = ok + r"(P?R|A)"
        answer = False
    elif kind == "mutated_dataset":
        # The command and the framing are right: the C-STORE is answered (success or a
        # refusal status) whatever its dataset holds, and the association lives on.
        chunks.append(p_data(STORE_CX, store_rq(uid, mid), command=True))
        chunks.append(p_data(STORE_CX, mutate(dataset(uid, rng), rng), command=False))
        expect = ok + r"PR"
    elif kind == "broken_pdv":
        # The PDV item's length does not match the PDU (or is below the 2 header bytes).
        body = struct.pack(">LBB", rng.choice([0, 1, 2, 0xFFFFFFFF, 9999]), ECHO_CX, 3)
        chunks.append(pdu(0x04, body + echo_rq(mid)))
        expect = ok + ABORTED
    elif kind == "lying_length_pdata":
        data, length = lying_length(p_data(ECHO_CX, echo_rq(mid), command=True), rng)
        chunks.append(data)
        if length > MAX_PDU:  # more than the maximum PDU length the server announced
            expect = ok + ABORTED
        elif length > len(data) - 6:  # the rest never comes
            half_close = rng.random() < 0.7
            stall = not half_close
            expect = ok + SILENT
            answer = False
        else:  # a prefix is read (a broken message), the rest is garbage
            expect = ok + r"P?A+|" + ok
            framed = answer = False
    elif kind == "wrong_type_established":
        # A second A-ASSOCIATE-RQ, an AC or RJ, an unsolicited RP, unknown types: AA-8.
        pdu_type = rng.choice([0x01, 0x02, 0x03, 0x06, 0x08, 0xAA])
        chunks.append(pdu(pdu_type, rng.randbytes(20)))
        expect = ok + ABORTED
    elif kind == "mutated_pdata_framing":
        chunks.append(mutate(p_data(ECHO_CX, echo_rq(mid), command=True), rng))
        expect = ok + r"P*(R|A+)?"
        framed = answer = False
    else:
        chunks.append(p_data(ECHO_CX, echo_rq(mid), command=True))
        expect = ok + r"PR"
    answered = tuple(range(echoes + 1)) + ((len(chunks) - 1,) if answer else ())
    return Case(
        f"established:{kind}", chunks, len(chunks), expect, answered, half_close, stall, framed
    )


GENERATORS: list[tuple[float, Callable[[random.Random], Case]]] = [
    (0.12, _random_bytes),
    (0.20, _mutated_rq),
    (0.08, _lying_rq),
    (0.07, _truncated),
    (0.08, _wrong_first_type),
    (0.45, _established),
]


def make_case(rng: random.Random) -> Case:
    roll = rng.random()
    for weight, gen in GENERATORS:
        if roll < weight:
            return gen(rng)
        roll -= weight
    return GENERATORS[-1][1](rng)


# -- one connection -------------------------------------------------------------------


def _types(data: bytes) -> list[int] | None:
    """PDU types in what the server sent, or None when it does not frame as PDUs."""
    types, pos = [], 0
    while pos + 6 <= len(data):
        pdu_type = data[pos]
        if pdu_type not in (0x02, 0x03, 0x04, 0x06, 0x07):
            return None
        types.append(pdu_type)
        pos += 6 + int(struct.unpack(">L", data[pos + 2 : pos + 6])[0])
    return types if pos == len(data) else None


def _read(
    sock: socket.socket,
    seconds: float,
    quiet: float | None = None,
    done: Callable[[bytes], bool] = lambda data: False,
) -> tuple[bytes, bool]:
    """Bytes until the server closes (True) or ``seconds`` pass, ``quiet`` seconds pass
    without data, or ``done`` says the bytes are enough (False)."""
    data = b""
    deadline = time.monotonic() + seconds
    while not done(data):
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(min(left, quiet) if quiet else left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except OSError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


#: What pacsd logs for an exception that is not a decode error (``pdu_guard.UNEXPECTED``).
UNEXPECTED = "unexpected error"
#: Letters for the PDUs the server may send, in a connection's transcript.
LETTERS = {0x02: "C", 0x03: "J", 0x04: "P", 0x06: "R", 0x07: "A"}


@dataclass
class Outcome:
    kind: str
    #: The connection step by step: our steps in lower case (``s`` a chunk of the case
    #: sent, ``h`` our sending side shut, ``r`` A-RELEASE-RQ sent, ``a`` A-ABORT sent),
    #: each followed by the PDUs the server sent before our next step, one capital a
    #: PDU (``LETTERS``); ``.`` when the server closed the connection, ``?`` when its
    #: bytes do not frame as PDUs. ``sAr.``: our PDU, its A-ABORT, our A-RELEASE-RQ,
    #: the server closed.
    transcript: str
    result: str
    seconds: float


def _transcript(steps: list[tuple[str, int]], received: bytes, closed: bool) -> str:
    """Interleave our steps (each with the count of bytes received when it was taken)
    with the server's PDUs, placing each PDU after the step during which it arrived."""
    ends: list[tuple[int, str]] = []
    pos = 0
    while pos + 6 <= len(received):
        letter = LETTERS.get(received[pos])
        if letter is None:
            return "?"
        pos += 6 + int(struct.unpack(">L", received[pos + 2 : pos + 6])[0])
        ends.append((pos, letter))
    if pos != len(received):
        return "?"
    out = ""
    for n, (token, at) in enumerate(steps):
        until = steps[n + 1][1] if n + 1 < len(steps) else len(received)
        out += token + "".join(letter for end, letter in ends if at < end <= until)
    return out + ("." if closed else "")


def _read_pdu(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """Bytes until one whole PDU is in, the server closes (True) or ``seconds`` pass."""
    return _read(sock, seconds, done=_whole_pdu)


def _whole_pdu(data: bytes) -> bool:
    return len(data) >= 6 and len(data) >= 6 + int(struct.unpack(">L", data[2:6])[0])


def run_case(port: int, case: Case, close_within: float) -> Outcome:
    start = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as exc:
        return Outcome(case.kind, "", f"connect_failed:{type(exc).__name__}", 0.0)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        received = b""
        steps: list[tuple[str, int]] = []
        closed = False
        for n, chunk in enumerate(case.chunks):
            try:
                sock.sendall(chunk)
            except OSError:
                break
            steps.append(("s", len(received)))
            if n in case.answered:
                more, closed = _read_pdu(sock, close_within)
            else:
                more, closed = _read(sock, 2.0, quiet=0.02)
            received += more
            if closed:
                break
        if case.half_close and not closed:
            sock.shutdown(socket.SHUT_WR)
            steps.append(("h", len(received)))
        if (case.half_close or case.stall) and not closed:
            more, closed = _read(sock, close_within)
            received += more
        for goodbye in (RELEASE_RQ, ABORT):
            if closed or case.half_close or case.stall:
                break
            try:
                sock.sendall(goodbye)
            except OSError:
                closed = True
                break
            steps.append(("r" if goodbye is RELEASE_RQ else "a", len(received)))
            # An A-RELEASE-RP or A-ABORT, then the close (PS3.8: the server may close
            # at once after the RP, or wait up to acse_timeout for us to).
            more, closed = _read(sock, close_within)
            received += more
        seconds = time.monotonic() - start
    transcript = _transcript(steps, received, closed)
    return Outcome(case.kind, transcript, classify(case, transcript), seconds)


#: What the server sent last, by name (the result of an allowed connection).
ENDINGS = {"J": "rejected", "A": "aborted", "R": "released", "P": "answered", "C": "accepted"}


def classify(case: Case, transcript: str) -> str:
    """The connection's result: how it ended (``ENDINGS``, ``closed`` for a silent
    close), or ``disallowed:WHY`` when the server broke the rules."""
    if transcript.startswith("?") or "?" in transcript:
        return "bad_answer"
    if not transcript.endswith("."):
        return "hung"
    server = "".join(c for c in transcript if c.isupper())
    if not re.fullmatch(ANY_ORDERLY, server):
        return "disallowed:out_of_order"
    if "R" in server and "r" not in transcript[: transcript.index("R")]:
        return "disallowed:unasked_release"
    if not re.fullmatch(case.expect, server):
        accepted = case.expect == NO_ASSOCIATION and "C" in server
        return "disallowed:" + ("accepted_invalid" if accepted else "unexpected")
    silent = not server or server[-1] in "CP"
    if silent and not (
        "a" in transcript
        or "h" in transcript
        or case.stall
        or not case.framed
        or case.ends_with_abort
    ):
        return "disallowed:silent_close"
    return ENDINGS[server[-1]] if server else "closed"


# -- the server and its resources -----------------------------------------------------


@dataclass
class Usage:
    rss_kib: int
    threads: int
    fds: int


def usage(pid: int) -> Usage:
    fields = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return Usage(
        int(fields["VmRSS"].split()[0]), int(fields["Threads"]), len(os.listdir(f"/proc/{pid}/fd"))
    )


def echo(port: int) -> bool:
    """A whole C-ECHO on a fresh association."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(associate_rq("ECHOCHECK"))
            data, _ = _read(sock, 5, quiet=0.5)
            if not data or data[0] != 0x02:
                return False
            sock.sendall(p_data(ECHO_CX, echo_rq(), command=True))
            data, _ = _read(sock, 5, quiet=0.5)
            status = struct.pack("<HHL", 0, 0x0900, 2) + b"\0\0"
            sock.sendall(RELEASE_RQ)
            _read(sock, 5, quiet=0.5)
            return data[:1] == b"\x04" and status in data
    except OSError:
        return False


@dataclass
class Server:
    proc: subprocess.Popen[str] | None
    port: int
    pid: int | None
    log: Path | None
    workdir: Path | None = None


def start_server(workdir: Path, acse: float, network: float) -> Server:
    pacsd = Path(sys.executable).parent / "pacsd"
    if not pacsd.exists():
        raise SystemExit(f"fuzz.py: error: no pacsd console script beside {sys.executable}")
    log = workdir / "pacsd.stderr"
    env = {
        **os.environ,
        "PACSD_ACSE_TIMEOUT": str(acse),
        "PACSD_DIMSE_TIMEOUT": str(network),
        "PACSD_NETWORK_TIMEOUT": str(network),
        "PACSD_MAX_ASSOCIATIONS": "256",
    }
    cmd = [str(pacsd), "serve", "--dicom-port", "0", "--control-port", "0"]
    cmd += ["--data-dir", str(workdir / "data")]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening "):
        proc.kill()
        raise SystemExit(
            f"fuzz.py: error: pacsd did not start: {line!r}\n{log.read_text()[-2000:]}"
        )
    port = int(line.split()[1].rsplit(":", 1)[1])
    return Server(proc, port, proc.pid, log, workdir)


# -- the run --------------------------------------------------------------------------


@dataclass
class Report:
    seed: int
    pdus: int = 0
    connections: int = 0
    seconds: float = 0.0
    pdus_per_s: float = 0.0
    #: How connections ended, over all kinds (``classify``).
    results: dict[str, int] = field(default_factory=dict)
    #: Connections of each kind (``family:sub-kind`` where a family has them).
    kinds: dict[str, int] = field(default_factory=dict)
    #: How connections of each kind ended.
    results_by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    slowest_connection_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    rss_kib: dict[str, int] = field(default_factory=dict)
    threads: dict[str, int] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)
    echo_after: bool = False
    server_alive: bool = False
    log_tracebacks: int = 0
    #: Lines of exceptions that are not decode errors (``pdu_guard.UNEXPECTED``).
    log_unexpected_errors: int = 0
    log_invalid_pdu_lines: int = 0


def is_bad(result: str) -> bool:
    return result in ("hung", "bad_answer") or result.startswith(("disallowed", "connect"))


def run(args: argparse.Namespace, server: Server) -> Report:
    report = Report(seed=args.seed)
    baseline = usage(server.pid) if server.pid else None
    peak = baseline
    results: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    transcripts: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    sent = [0, 0]  # pdus, connections
    slowest = [0.0]
    close_within = args.network_timeout + 3.0

    def worker(index: int) -> None:
        rng = random.Random(f"{args.seed}:{index}")
        while True:
            with lock:
                if sent[0] >= args.pdus:
                    return
                case = make_case(rng)
                sent[0] += case.pdus
                sent[1] += 1
            outcome = run_case(server.port, case, close_within)
            with lock:
                results[outcome.result] += 1
                kinds[case.kind] += 1
                by_kind.setdefault(case.kind, Counter())[outcome.result] += 1
                transcripts[(case.kind, outcome.transcript)] += 1
                slowest[0] = max(slowest[0], outcome.seconds)
                if is_bad(outcome.result) and len(failures) < 20:
                    failures.append(
                        f"{outcome.result}: {case.kind} answered {outcome.transcript!r},"
                        f" allowed {case.expect!r}; sent {[c[:64].hex() for c in case.chunks]}"
                    )

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.workers)]
    for t in threads:
        t.start()
    last_print = start
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        if server.pid and server.proc is not None and server.proc.poll() is not None:
            failures.append(f"server exited with status {server.proc.returncode}")
            break
        if server.pid:
            now = usage(server.pid)
            assert peak is not None
            peak = Usage(
                max(peak.rss_kib, now.rss_kib),
                max(peak.threads, now.threads),
                max(peak.fds, now.fds),
            )
        if not args.quiet and time.monotonic() - last_print > 10:
            last_print = time.monotonic()
            print(f"... {sent[0]} PDUs on {sent[1]} connections", flush=True)
    for t in threads:
        t.join(close_within + 10)
    report.seconds = round(time.monotonic() - start, 2)
    report.pdus, report.connections = sent
    report.pdus_per_s = round(report.pdus / report.seconds, 1) if report.seconds else 0.0
    report.results = dict(results.most_common())
    report.kinds = dict(sorted(kinds.items()))
    report.results_by_kind = {k: dict(c.most_common()) for k, c in sorted(by_kind.items())}
    if args.transcripts is not None:
        args.transcripts.write_text(
            "".join(f"{n}\t{k}\t{t}\n" for (k, t), n in sorted(transcripts.items()))
        )
    report.slowest_connection_s = round(slowest[0], 2)
    report.server_alive = server.proc is None or server.proc.poll() is None
    report.echo_after = report.server_alive and echo(server.port)
    if not report.echo_after:
        failures.append("C-ECHO after the run failed")
    if server.pid and report.server_alive and baseline is not None and peak is not None:
        deadline = time.monotonic() + close_within
        final = usage(server.pid)
        while time.monotonic() < deadline and (
            final.threads > baseline.threads + 64 or final.fds > baseline.fds
        ):
            time.sleep(0.2)
            final = usage(server.pid)
        report.rss_kib = {
            "baseline": baseline.rss_kib,
            "peak": peak.rss_kib,
            "final": final.rss_kib,
        }
        report.threads = {
            "baseline": baseline.threads,
            "peak": peak.threads,
            "final": final.threads,
        }
        report.fds = {"baseline": baseline.fds, "peak": peak.fds, "final": final.fds}
        growth = (peak.rss_kib - baseline.rss_kib) / 1024
        if growth > args.max_rss_growth_mib:
            failures.append(f"RSS grew by {growth:.0f} MiB (limit {args.max_rss_growth_mib})")
        if final.fds > baseline.fds:
            failures.append(f"open files {baseline.fds} -> {final.fds} after the run")
    if server.log is not None:
        text = server.log.read_text(errors="replace")
        report.log_tracebacks = text.count("Traceback")
        report.log_invalid_pdu_lines = text.count("invalid PDU")
        report.log_unexpected_errors = text.count(UNEXPECTED)
        if report.log_unexpected_errors:
            at = text.index(UNEXPECTED)
            failures.append(
                f"{report.log_unexpected_errors} unexpected error(s) in the log, first:\n"
                + text[max(at - 200, 0) : at + 3000]
            )
        if report.log_tracebacks:
            at = text.index("Traceback")
            failures.append(
                f"{report.log_tracebacks} traceback(s) in the log, first:\n"
                + text[max(at - 300, 0) : at + 4000]
            )
    report.failures = failures
    return report


def print_report(report: Report) -> None:
    print(
        f"seed {report.seed}: {report.pdus} PDUs on {report.connections} connections"
        f" in {report.seconds} s ({report.pdus_per_s} PDUs/s)"
    )
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in report.results.items()))
    print("by kind:")
    for kind, results in report.results_by_kind.items():
        line = ", ".join(f"{k}={v}" for k, v in results.items())
        print(f"  {kind:40} {report.kinds[kind]:6}  {line}")
    print(f"slowest connection: {report.slowest_connection_s} s")
    for name in ("rss_kib", "threads", "fds"):
        figures = getattr(report, name)
        if figures:
            print(f"server {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    print(f"server alive: {report.server_alive}; C-ECHO afterwards: {report.echo_after}")
    print(
        f"log: {report.log_tracebacks} tracebacks,"
        f" {report.log_unexpected_errors} unexpected errors,"
        f" {report.log_invalid_pdu_lines} 'invalid PDU' lines"
    )
    for failure in report.failures:
        print(f"FAILURE: {failure}")
    print("verified: no failures" if not report.failures else f"{len(report.failures)} failure(s)")


def main(argv: list[str] | None = None) -> int:
    global MAX_PDU
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pdus", type=int, default=100_000, help="PDUs to send [100000]")
    parser.add_argument("--seed", type=int, default=1, help="mutator seed [1]")
    parser.add_argument("--workers", type=int, default=32, help="connections at once [32]")
    parser.add_argument(
        "--acse-timeout", type=float, default=2.0, help="for the started server [2]"
    )
    parser.add_argument(
        "--network-timeout", type=float, default=3.0, help="for the started server [3]"
    )
    parser.add_argument("--max-rss-growth-mib", type=float, default=150.0, help="[150]")
    parser.add_argument(
        "--max-pdu",
        type=int,
        default=MAX_PDU,
        help=f"the server's max_pdu_size, for what a long P-DATA-TF may get [{MAX_PDU}]",
    )
    parser.add_argument(
        "--dicom-port", type=int, help="fuzz a running server instead of starting one"
    )
    parser.add_argument("--pid", type=int, help="its process id (resource figures)")
    parser.add_argument("--log", type=Path, help="its log file (traceback check)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--transcripts", type=Path, help="write each kind's transcripts and counts here"
    )
    parser.add_argument("--keep-log", type=Path, help="copy the started server's log here")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    MAX_PDU = args.max_pdu
    if args.dicom_port:
        server = Server(None, args.dicom_port, args.pid, args.log)
    else:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="pacsd-fuzz-", dir=args.workdir))
        server = start_server(workdir, args.acse_timeout, args.network_timeout)
    try:
        report = run(args, server)
    finally:
        if server.proc is not None:
            stopping = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(30)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()
            print(
                f"server stopped in {time.monotonic() - stopping:.1f} s,"
                f" status {server.proc.returncode}"
            )
        if args.keep_log is not None and server.log is not None and server.workdir:
            shutil.copyfile(server.log, args.keep_log)
        if server.workdir is not None:
            shutil.rmtree(server.workdir, ignore_errors=True)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
