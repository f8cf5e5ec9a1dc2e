"""The store journal after the operating system crashed: what it lost comes back.

A small instance is answered once its record (with its bytes) is in the journal; its
file and index row reach the disk only at the next checkpoint. ``kill -9`` cannot lose
them (the page cache survives a process), so each test kills the server, then takes
away by hand what an operating-system crash could have taken (files, their bytes, the
index's recent commits), and restarts on the same data folder. The replay must bring
back every acknowledged instance bit for bit, the newest version of an overwritten
one with its row, and never an instance that was deleted.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

from pacsd.server.dicom.client import ClientAE
from pydicom.dataset import Dataset

from tests import corpus
from tests.conftest import PacsdProcess, run_pacsctl
from tests.integration.test_storage import blob_files, index_rows

Start = Callable[..., PacsdProcess]


def store_all(port: int, datasets: list[Dataset]) -> list[int]:
    """C-STORE each dataset on one association; the statuses."""
    ae = ClientAE(ae_title="JOURNAL")
    ae.add_requested_context(corpus.SECONDARY_CAPTURE, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _crash(server: PacsdProcess) -> None:
    server.signal(signal.SIGKILL)
    server.wait()


def _forget_index(data: Path) -> None:
    """An OS crash with the index's commits since its last flush lost: here, all."""
    for name in ("index.db", "index.db-wal", "index.db-shm"):
        (data / name).unlink(missing_ok=True)


def _snapshot_index(data: Path, to: Path) -> None:
    """A consistent copy of the live index (SQLite's backup API)."""
    src = sqlite3.connect(data / "index.db")
    dst = sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _restore_index(data: Path, snapshot: Path) -> None:
    _forget_index(data)
    shutil.copy(snapshot, data / "index.db")


def test_files_and_rows_the_os_lost_are_rewritten_from_the_journal(
    start_pacsd: Start, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = start_pacsd(["--data-dir", str(data)])
    datasets = [corpus.instance(pixels=32, number=n) for n in range(12)]
    assert store_all(server.dicom_port, datasets) == [0x0000] * 12
    files = blob_files(server)
    originals = {uid: path.read_bytes() for uid, path in files.items()}
    assert len(originals) == 12
    _crash(server)
    # Half the files gone (their names never reached the disk), half torn (names did,
    # bytes did not), and the index's recent commits gone.
    for n, path in enumerate(sorted(files.values())):
        if n % 2:
            path.unlink()
        else:
            path.write_bytes(b"")
    _forget_index(data)

    again = start_pacsd(["--data-dir", str(data)])
    log = again.wait_for_log("store journal replayed")
    assert "12 files rewritten" in log, log
    now = blob_files(again)
    assert {uid: path.read_bytes() for uid, path in now.items()} == originals
    assert set(index_rows(again)) == set(originals)
    assert list((data / "tmp").iterdir()) == []


def test_an_overwritten_instance_comes_back_as_its_newest_version_with_its_row(
    start_pacsd: Start, tmp_path: Path
) -> None:
    """Small (bytes in the journal) and large (file fsynced, record without bytes)."""
    data = tmp_path / "data"
    server = start_pacsd(["--data-dir", str(data)])
    small_uid, large_uid = "1.2.826.0.1.3680043.9.7.1", "1.2.826.0.1.3680043.9.7.2"

    def versions(name: str) -> list[Dataset]:
        return [
            corpus.instance(sop_uid=small_uid, patient_name=name, pixels=32),
            corpus.instance(sop_uid=large_uid, patient_name=name, pixels=256),
        ]

    assert store_all(server.dicom_port, versions("OLD^V")) == [0x0000] * 2
    old_bytes = {uid: path.read_bytes() for uid, path in blob_files(server).items()}
    assert len(old_bytes[large_uid]) > 64 * 1024 > len(old_bytes[small_uid])
    _snapshot_index(data, tmp_path / "v1.db")
    assert store_all(server.dicom_port, versions("NEWER^VERSION")) == [0x0000] * 2
    new_bytes = {uid: path.read_bytes() for uid, path in blob_files(server).items()}
    new_rows = index_rows(server)
    _crash(server)
    # The OS kept the small file's older bytes, and the index as it was after v1.
    blob_files(server)[small_uid].write_bytes(old_bytes[small_uid])
    _restore_index(data, tmp_path / "v1.db")

    again = start_pacsd(["--data-dir", str(data)])
    again.wait_for_log("store journal replayed")
    assert {uid: path.read_bytes() for uid, path in blob_files(again).items()} == new_bytes
    assert index_rows(again) == new_rows


def test_a_deleted_instance_is_not_brought_back(start_pacsd: Start, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_pacsd(["--data-dir", str(data)])
    kept = corpus.instance(pixels=32, series_uid="1.2.826.0.1.3680043.9.8.1")
    doomed = corpus.instance(pixels=32, series_uid="1.2.826.0.1.3680043.9.8.2")
    assert store_all(server.dicom_port, [kept, doomed]) == [0x0000] * 2
    run = run_pacsctl(server, "storage", "delete", "series", "1.2.826.0.1.3680043.9.8.2")
    assert run.returncode == 0, run.stderr
    _crash(server)
    _forget_index(data)

    again = start_pacsd(["--data-dir", str(data)])
    assert set(blob_files(again)) == {str(kept.SOPInstanceUID)}
    assert set(index_rows(again)) == {str(kept.SOPInstanceUID)}
    # The journal outlived the crash, but the delete's checkpoint left nothing in it.
    assert "store journal replayed: 0 records" in again.stderr()


def test_a_clean_stop_leaves_no_journal_to_replay(start_pacsd: Start, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_pacsd(["--data-dir", str(data)])
    assert store_all(server.dicom_port, [corpus.instance(pixels=32)]) == [0x0000]
    assert len(list((data / "journal").glob("*.journal"))) == 1
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert list((data / "journal").glob("*.journal")) == []
    again = start_pacsd(["--data-dir", str(data)])
    assert "store journal replayed" not in again.stderr()


def test_without_the_journal_every_store_flushes_itself(start_pacsd: Start, tmp_path: Path) -> None:
    """``store_journal_mb = 0``: no journal file, and the index commits with FULL sync."""
    data = tmp_path / "data"
    server = start_pacsd(["--data-dir", str(data)], env={"PACSD_STORE_JOURNAL_MB": "0"})
    assert store_all(server.dicom_port, [corpus.instance(pixels=32)]) == [0x0000]
    assert not (data / "journal").exists()
    lsof = subprocess.run(
        ["ls", "-l", f"/proc/{server.proc.pid}/fd"], capture_output=True, text=True
    ).stdout
    assert ".journal" not in lsof
