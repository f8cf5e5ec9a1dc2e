"""C-STORE requests served on the thread that read them (reactor.DimseQueue): what a
peer does wrong there still ends the way it did on the association thread.

- A C-STORE of a SOP class pynetdicom has no service class for (it aborted the
  association over it, from the reading thread) is answered there like any other:
  0x0122, at once, and the association goes on with no thread left behind.
- A second command set before the first one's dataset accumulates with it (pynetdicom's
  rule): the first request must not be served on its own.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from pydicom.dataset import Dataset

from tests.conftest import PacsdProcess
from tests.reliability import wire

PROMPT = 1.0


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def steady_threads(pid: int) -> int:
    """The thread count once two readings 0.3 s apart agree."""
    last = threads(pid)
    for _ in range(50):
        time.sleep(0.3)
        now = threads(pid)
        if now == last:
            return now
        last = now
    return last


def store_command(sop_class: str, with_dataset: bool) -> bytes:
    cmd = Dataset()
    cmd.AffectedSOPClassUID = sop_class
    cmd.CommandField = 0x0001
    cmd.MessageID = 1
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000 if with_dataset else 0x0101
    cmd.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.9.7433.88.1"
    return wire.command_set(cmd)


def open_association(port: int) -> socket.socket:
    sock = wire.connect(port)
    sock.sendall(wire.associate_rq())
    assert wire.read_answer(sock, 5, until_closed=False).first == wire.ASSOCIATE_AC
    return sock


def test_a_store_of_an_unknown_sop_class_is_answered_and_the_association_goes_on(
    server: PacsdProcess,
) -> None:
    pid = server.proc.pid
    assert wire.echo_ok(server.dicom_port)  # the threads a C-ECHO starts on first use
    baseline = steady_threads(pid)
    sock = open_association(server.dicom_port)
    with sock:
        # An accepted context, but a SOP class no service class of pynetdicom handles.
        sock.sendall(wire.p_data(3, store_command("1.2.3.4", with_dataset=False), command=True))
        answer = wire.read_answer(sock, 5, until_closed=False)
        assert answer.seconds < PROMPT and answer.pdu_types == [wire.P_DATA], answer
        assert wire._status(answer.raw) == 0x0122
        sock.sendall(wire.p_data(1, wire.echo_rq(2), command=True))
        echoed = wire.read_answer(sock, 5, until_closed=False)
        assert echoed.pdu_types == [wire.P_DATA] and wire._status(echoed.raw) == 0, echoed
        sock.sendall(wire.release_rq())
        assert wire.read_answer(sock, 5).pdu_types == [wire.RELEASE_RP]
    assert steady_threads(pid) <= baseline  # a leak is more; a startup thread may end
    log = server.stderr()
    assert "No supported service class" not in log
    assert "Traceback" not in log and "Exception in thread" not in log


def test_a_second_command_set_is_not_served_as_the_first(server: PacsdProcess) -> None:
    sock = open_association(server.dicom_port)
    with sock:
        sock.sendall(
            wire.p_data(3, store_command("1.2.3.99", with_dataset=True), command=True)
            + wire.p_data(1, wire.echo_rq(2), command=True)
        )
        answer = wire.read_answer(sock, 1, until_closed=False)
        status = wire._status(answer.raw)
        sock.sendall(wire.release_rq())
        answer.pdu_types += wire.read_answer(sock, 5).pdu_types
    # The accumulated command set is the C-ECHO's (its elements came last): answered
    # with success, then released, as before requests were served on the reading
    # thread. The stale C-STORE of the unknown class would have been refused (0x0122).
    assert answer.pdu_types == [wire.P_DATA, wire.RELEASE_RP], answer
    assert status == 0x0000, hex(status or 0)
    assert "1.2.3.99" not in server.stderr()
