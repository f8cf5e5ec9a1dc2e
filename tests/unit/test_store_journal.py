"""The store journal's file format and ring (storage/journal.py), on real files.

What a replay after a crash finds is what ``read_records`` returns, so each test writes
through ``StoreJournal`` and reads back through ``read_records``: records come back
whole and in order; a torn record, a record of the ring's previous lap and a record of
a synced epoch do not; the ring wraps and checkpoints by itself when full; concurrent
writers lose nothing; and only a journal no live process holds is ``abandoned``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from pacsd.server.storage.journal import (
    HEADER_SIZE,
    Epochs,
    JournalError,
    StoreJournal,
    abandoned,
    latest_per_instance,
    read_records,
)

SMALL_RING = HEADER_SIZE + 256 * 1024


class Flushes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def _journal(folder: Path, size: int = SMALL_RING) -> tuple[StoreJournal, Epochs, Flushes]:
    epochs = Epochs(folder)
    flushes = Flushes()
    return StoreJournal(folder, epochs, flushes, size), epochs, flushes


def _read(journal: StoreJournal, newer_than: int = 0) -> list[tuple[str, bytes]]:
    fd = os.open(journal.path, os.O_RDONLY)
    try:
        return [(r.sop_instance_uid, r.data) for r in read_records(fd, newer_than)]
    finally:
        os.close(fd)


def test_records_come_back_whole_and_in_order(tmp_path: Path) -> None:
    journal, _, _ = _journal(tmp_path)
    written = [(f"1.2.3.{n}", os.urandom(n * 37)) for n in range(50)]
    written.append(("1.2.3.999", b""))  # a record without bytes: the file is durable
    for uid, data in written:
        journal.append(uid, data)
    assert _read(journal) == written


def test_a_torn_record_ends_the_replay(tmp_path: Path) -> None:
    journal, _, _ = _journal(tmp_path)
    for n in range(3):
        journal.append(f"1.2.{n}", b"x" * 1000)
    # The third record begins after two records of 8-byte aligned length.
    third = HEADER_SIZE + 2 * ((40 + 5 + 1000 + 7) & ~7)
    with journal.path.open("r+b") as fh:
        fh.seek(third + 100)
        fh.write(b"\xff")
    assert [uid for uid, _ in _read(journal)] == ["1.2.0", "1.2.1"]


def test_records_of_a_synced_epoch_are_not_replayed(tmp_path: Path) -> None:
    journal, epochs, flushes = _journal(tmp_path)
    journal.append("1.1", b"old")
    journal.checkpoint()
    journal.append("1.2", b"new")
    assert flushes.count == 1
    assert epochs.synced_through() == 1
    assert _read(journal, epochs.synced_through()) == [("1.2", b"new")]


def _settle(journal: StoreJournal) -> None:
    """Wait for a checkpoint the last appends started on the helper thread."""
    background = journal._background_thread
    if background is not None:
        background.join()


def _then_new_records_read_back(journal: StoreJournal, epochs: Epochs, data: bytes) -> None:
    """After a checkpoint, a few records (too few to start another) read back alone."""
    journal.checkpoint()
    for n in range(3):
        journal.append(f"1.9.new.{n}", data)
    assert _read(journal, epochs.synced_through()) == [(f"1.9.new.{n}", data) for n in range(3)]


def test_the_ring_wraps_and_checkpoints_itself_when_full(tmp_path: Path) -> None:
    journal, epochs, flushes = _journal(tmp_path)
    data = os.urandom(10 * 1024)
    for n in range(200):  # ~2 MB through a 256 KiB ring
        journal.append(f"1.9.{n}", data)
    assert flushes.count >= 7, "the ring never checkpointed"
    _settle(journal)
    live = _read(journal, epochs.synced_through())
    uids = [uid for uid, _ in live]
    # What is still needed is the newest records, contiguous, bytes intact (none, if a
    # checkpoint came after the last one).
    assert uids == [f"1.9.{n}" for n in range(200 - len(uids), 200)]
    assert all(d == data for _, d in live)
    _then_new_records_read_back(journal, epochs, data)


def test_records_that_fill_the_ring_exactly_wrap_inside_the_file(tmp_path: Path) -> None:
    journal, epochs, _ = _journal(tmp_path)
    # 46 bytes of record header and UID + 8146 bytes: 8192, 32 to a 256 KiB ring.
    data = os.urandom(8146)
    for n in range(100):
        journal.append(f"1.2.{n:04d}", data)
    assert journal.path.stat().st_size == SMALL_RING, "a record was written past the ring"
    _settle(journal)
    uids = [uid for uid, _ in _read(journal, epochs.synced_through())]
    assert uids == [f"1.2.{n:04d}" for n in range(100 - len(uids), 100)]
    _then_new_records_read_back(journal, epochs, data)


def test_a_full_ring_keeps_every_needed_record_whole(tmp_path: Path) -> None:
    """A direct write pads its last block with zeros: the ring keeps a block free, so
    the padding never reaches the oldest record still needed when the ring is full."""
    release = threading.Event()
    blocking = False

    def flush() -> None:
        if blocking:
            release.wait(30)

    epochs = Epochs(tmp_path)
    journal = StoreJournal(tmp_path, epochs, flush, SMALL_RING)
    data = os.urandom(5000)  # 5056-byte records: never on a block boundary for long
    for n in range(7):
        journal.append(f"1.6.old.{n}", data)
    journal.checkpoint()  # the needed records now start mid-block, mid-ring
    blocking = True
    written: list[str] = []

    def write() -> None:
        for n in range(100):  # more than the ring holds: blocks once it is full
            journal.append(f"1.6.{n}", data)
            written.append(f"1.6.{n}")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    seen = -1
    while len(written) != seen:  # until the writer waits for a checkpoint
        seen = len(written)
        writer.join(0.3)
    try:
        assert 40 < len(written) < 100, "the ring did not fill up"
        assert _read(journal, epochs.synced_through()) == [(uid, data) for uid in written]
    finally:
        release.set()
        writer.join(30)
    assert len(written) == 100


def test_a_record_of_the_previous_lap_is_not_read_as_new(tmp_path: Path) -> None:
    journal, _, _ = _journal(tmp_path)
    for n in range(60):  # wraps at least once
        journal.append(f"1.8.{n}", b"y" * 9000)
    journal.checkpoint()  # nothing is needed any more: the start moves to the end
    assert _read(journal, 0) == [], "old records were replayed after the start moved"


def test_the_older_header_slot_is_used_when_the_newer_is_torn(tmp_path: Path) -> None:
    journal, _, _ = _journal(tmp_path)
    journal.append("1.7.1", b"a")
    journal.checkpoint()  # header counter 2 -> slot 0
    journal.append("1.7.2", b"b")
    with journal.path.open("r+b") as fh:
        fh.write(b"garbage!")  # slot 0, the newest, torn
    # Slot 1 still points at the first record: everything from there is read.
    assert [uid for uid, _ in _read(journal, 0)] == ["1.7.1", "1.7.2"]


def test_a_record_larger_than_half_the_ring_is_refused(tmp_path: Path) -> None:
    journal, _, _ = _journal(tmp_path)
    with pytest.raises(JournalError):
        journal.append("1.6", bytes(200 * 1024))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    journal, epochs, _ = _journal(tmp_path, HEADER_SIZE + 8 * 1024 * 1024)

    def write(t: int) -> None:
        for n in range(100):
            journal.append(f"1.5.{t}.{n}", bytes([t]) * 2000)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = _read(journal, epochs.synced_through())
    assert sorted(uid for uid, _ in records) == sorted(
        f"1.5.{t}.{n}" for t in range(4) for n in range(100)
    )
    assert all(data == bytes([int(uid.split(".")[2])]) * 2000 for uid, data in records)


def test_only_journals_no_live_process_holds_are_abandoned(tmp_path: Path) -> None:
    live, _, _ = _journal(tmp_path)
    dead, _, _ = _journal(tmp_path)
    dead.append("1.4", b"z")
    os.close(dead._fd)  # what a killed process leaves: the file, unlocked
    found = list(abandoned(tmp_path))
    try:
        assert [path for path, _ in found] == [dead.path]
        assert [r.sop_instance_uid for r in read_records(found[0][1], 0)] == ["1.4"]
    finally:
        for _, fd in found:
            os.close(fd)
    assert live.path.exists()


def test_close_checkpoints_and_removes_the_file(tmp_path: Path) -> None:
    journal, epochs, flushes = _journal(tmp_path)
    journal.append("1.3", b"q")
    journal.close()
    assert not journal.path.exists()
    assert flushes.count == 1 and epochs.synced_through() == 1


def test_the_last_record_of_an_instance_wins_across_journals(tmp_path: Path) -> None:
    first, epochs, _ = _journal(tmp_path)
    second = StoreJournal(tmp_path, epochs, Flushes(), SMALL_RING)
    first.append("1.2.1", b"v1")
    second.append("1.2.1", b"v2")
    first.append("1.2.1")  # e.g. a store that failed after its record: no bytes
    second.append("1.2.2", b"w")
    records = []
    for journal in (second, first):
        fd = os.open(journal.path, os.O_RDONLY)
        records += read_records(fd, 0)
        os.close(fd)
    latest = latest_per_instance(records)
    assert latest["1.2.1"].data == b"" and latest["1.2.2"].data == b"w"


def _direct_descriptors(path: Path) -> list[int]:
    """This process's descriptors of ``path`` opened with O_DIRECT (/proc/self/fdinfo)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") != str(path):
                continue
            flags = Path(f"/proc/self/fdinfo/{name}").read_text().split("flags:")[1].split()[0]
        except OSError:
            continue
        if int(flags, 8) & os.O_DIRECT:
            found.append(int(name))
    return found


def test_records_are_written_past_the_page_cache_where_the_file_system_allows(
    tmp_path: Path,
) -> None:
    probe = tmp_path / "probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
        supported = True
    except OSError:
        supported = False
    journal, _, _ = _journal(tmp_path)
    journal.append("1.3.1", b"r" * 3000)
    assert bool(_direct_descriptors(journal.path)) == supported
    assert _read(journal) == [("1.3.1", b"r" * 3000)]
    journal.close()
    assert not _direct_descriptors(journal.path), "the direct descriptor was left open"
