"""Spool files prepared ahead: named on take, nothing left behind, inline fallback."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pacsd.server.dicom import spool_files
from pacsd.server.dicom.spool import SpoolFile

pytestmark = pytest.mark.skipif(
    spool_files._linkat is None, reason="needs O_TMPFILE and linkat (Linux)"
)


def _take(ready: spool_files.ReadyFiles, path: Path) -> int:
    deadline = time.monotonic() + 10
    while (fd := ready.take_into(path)) is None:
        assert time.monotonic() < deadline, "no file was prepared"
        time.sleep(0.01)
    return fd


def test_a_taken_file_gets_its_name_and_keeps_what_is_written(tmp_path: Path) -> None:
    ready = spool_files.ReadyFiles(tmp_path)
    try:
        path = tmp_path / "rx-1.part"
        fd = _take(ready, path)
        os.write(fd, b"dicom")
        os.close(fd)
        assert path.read_bytes() == b"dicom"
    finally:
        ready.close()


def test_files_never_taken_leave_nothing_in_the_folder(tmp_path: Path) -> None:
    ready = spool_files.ReadyFiles(tmp_path)
    fd = _take(ready, tmp_path / "taken.part")  # the pool is running
    os.close(fd)
    (tmp_path / "taken.part").unlink()
    ready.close()
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_falls_back_to_creating_files_inline(tmp_path: Path) -> None:
    ready = spool_files.ReadyFiles(tmp_path / "missing")
    deadline = time.monotonic() + 10
    while ready.usable and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not ready.usable
    assert ready.take_into(tmp_path / "x.part") is None


def test_spool_file_uses_a_prepared_file(tmp_path: Path) -> None:
    ready = spool_files.for_folder(tmp_path)
    fd = _take(ready, tmp_path / "warm.part")  # wait until files are ready
    os.close(fd)
    spool = SpoolFile(tmp_path / "rx-2.part", b"HEADER")
    spool.write(b"data")
    spool.finish()
    spool.close()
    assert (tmp_path / "rx-2.part").read_bytes() == b"HEADERdata"
    ready.close()


def _wait_for(ready: spool_files.ReadyFiles, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(ready._ready) != count:
        assert time.monotonic() < deadline, f"{len(ready._ready)} files ready, not {count}"
        time.sleep(0.005)


def test_the_filler_wakes_only_once_half_the_files_are_taken(tmp_path: Path) -> None:
    # Waking it after every take cost a thread hand-over in the middle of each C-STORE.
    ready = spool_files.ReadyFiles(tmp_path, depth=4)
    try:
        _wait_for(ready, 4)
        os.close(_take(ready, tmp_path / "a.part"))
        time.sleep(0.2)  # a filler woken by that take would have refilled by now
        assert len(ready._ready) == 3
        os.close(_take(ready, tmp_path / "b.part"))  # half taken: refill, to the top
        _wait_for(ready, 4)
    finally:
        ready.close()
