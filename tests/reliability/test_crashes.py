"""Crashes: 20 cycles of ``kill -9`` while four associations are sending instances.

After every restart, every instance the server acknowledged (status 0x0000) is in the
index and on disk, the index and the blob files match exactly, and no partial spool
file is left. The kill lands at a random moment (seeded, so a failure can be replayed)
within the stores, so over 20 cycles it hits every stage of the store path: spooling,
parsing, the blob rename and the index commit.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest
from pacsd.server.dicom.client import ClientAE

from tests import corpus
from tests.conftest import PacsdProcess
from tests.integration.test_storage import blob_files, index_rows

CYCLES = 20
SENDERS = 4
SEED = 20261129


def _sender(port: int, acknowledged: list[str], stop: threading.Event) -> None:
    """Store small instances on one association until it breaks; record the acked."""
    ae = ClientAE(ae_title=f"CRASH{threading.get_ident() % 1000}")
    ae.add_requested_context(corpus.SECONDARY_CAPTURE, "1.2.840.10008.1.2.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
    if not assoc.is_established:
        return
    try:
        while not stop.is_set() and assoc.is_established:
            ds = corpus.instance(pixels=32)
            status = assoc.send_c_store(ds)
            if status and int(getattr(status, "Status", -1)) == 0x0000:
                acknowledged.append(str(ds.SOPInstanceUID))
    except Exception:
        pass
    finally:
        if assoc.is_established:
            assoc.abort()


def _check(server: PacsdProcess, acknowledged: list[str], cycle: int) -> None:
    rows = index_rows(server)
    files = blob_files(server)
    missing = [uid for uid in acknowledged if uid not in rows or uid not in files]
    assert not missing, f"cycle {cycle}: {len(missing)} acknowledged instances lost"
    assert set(rows) == set(files), f"cycle {cycle}: index and files differ"
    for uid, (path, size) in rows.items():
        assert Path(path) == files[uid] and files[uid].stat().st_size == size, (cycle, uid)
    assert list((server.data_dir / "tmp").iterdir()) == [], f"cycle {cycle}: orphan spool"


@pytest.mark.parametrize(("workers", "cycles"), [(1, CYCLES), (2, CYCLES // 2)])
def test_kill_9_cycles_lose_nothing_acknowledged(  # type: ignore[no-untyped-def]
    start_pacsd, tmp_path: Path, workers: int, cycles: int
) -> None:
    """With two workers the kill hits the first process; the worker dies with it."""
    rng = random.Random(SEED)
    env = {"PACSD_WORKERS": str(workers)}
    data = tmp_path / "data"
    acknowledged: list[str] = []
    killed_mid_store = 0
    for cycle in range(cycles):
        server: PacsdProcess = start_pacsd(["--data-dir", str(data)], env=env)
        _check(server, acknowledged, cycle)
        assert "Traceback" not in server.stderr()
        acked_now: list[str] = []
        stop = threading.Event()
        senders = [
            threading.Thread(target=_sender, args=(server.dicom_port, acked_now, stop))
            for _ in range(SENDERS)
        ]
        for t in senders:
            t.start()
        deadline = time.monotonic() + 10
        while len(acked_now) < SENDERS and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        server.signal(signal.SIGKILL)
        server.wait(10)
        stop.set()
        for t in senders:
            t.join(15)
        assert acked_now, f"cycle {cycle}: nothing was stored before the kill"
        acknowledged += acked_now
        # Unacknowledged work in flight at the kill: spool files or unindexed blobs.
        if list((data / "tmp").iterdir()) or len(blob_files(server)) != len(acknowledged):
            killed_mid_store += 1
    final = start_pacsd(["--data-dir", str(data)], env=env)
    _check(final, acknowledged, cycles)
    # The kills did land in the middle of stores (otherwise the test proves little).
    assert killed_mid_store >= cycles // 2, killed_mid_store
    final.signal(signal.SIGTERM)
    assert final.wait(20) == 0
