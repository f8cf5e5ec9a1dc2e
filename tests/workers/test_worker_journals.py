"""Each engine process has its own store journal; a dead worker's is not left behind.

A worker killed with ``kill -9`` leaves its journal file, unlocked. Its files and rows
are still in the page cache (only the operating system crashing loses those), so the
restarted worker does not replay it: it checkpoints (the shared epoch moves on, and the
flush makes the dead worker's instances durable) and removes the file.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from pathlib import Path

import grpc
from pacsd.admin.v1 import server_pb2
from pynetdicom import AE

from tests import corpus
from tests.conftest import PacsdProcess
from tests.workers.test_workers import _wait_gone, status


def _journals(data: Path) -> dict[int, Path]:
    return {int(p.name.split("-")[0]): p for p in (data / "journal").glob("*.journal")}


def _synced_epoch(data: Path) -> int:
    return int(struct.unpack("<QQ", (data / "journal" / "epoch").read_bytes()[:16])[1])


def test_a_killed_workers_journal_is_checkpointed_and_removed(
    server: PacsdProcess, channel: grpc.Channel
) -> None:
    before = status(channel)
    pids = {w.pid for w in before.workers}
    assert set(_journals(server.data_dir)) == pids, "one journal per engine process"
    victim = before.workers[1]
    dead = _journals(server.data_dir)[victim.pid]
    synced = _synced_epoch(server.data_dir)
    os.kill(victim.pid, signal.SIGKILL)
    _wait_gone(victim.pid)
    assert dead.exists()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        worker = status(channel).workers[1]
        if worker.state == server_pb2.WORKER_STATE_SERVING and worker.pid != victim.pid:
            break
        time.sleep(0.2)
    now = status(channel)
    assert now.workers[1].pid != victim.pid, now
    assert not dead.exists(), "the dead worker's journal was left behind"
    assert set(_journals(server.data_dir)) == {w.pid for w in now.workers}
    assert _synced_epoch(server.data_dir) > synced
    # Both processes still store (through their own journals).
    ae = AE(ae_title="AFTER")
    ae.add_requested_context(corpus.SECONDARY_CAPTURE, "1.2.840.10008.1.2.1")
    for _ in range(4):
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="PACSD")
        assert assoc.is_established
        assert int(assoc.send_c_store(corpus.instance(pixels=32)).Status) == 0
        assoc.release()
