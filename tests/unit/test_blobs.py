"""The blob store's bucket folders: prepared ahead, so a young store's commits pay no
mkdir and no fsync of the root; files listed from every bucket in order."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pacsd.server.storage import blobs
from pacsd.server.storage.blobs import BUCKETS, BlobStore

UIDS = [f"1.2.826.0.1.3680043.10.1425.9.{n}" for n in range(40)]


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders the store fsyncs, in order (the real fsync still runs)."""
    calls: list[Path] = []
    real = blobs.fsync_dir

    def record(path: Path) -> None:
        calls.append(path)
        real(path)

    monkeypatch.setattr(blobs, "fsync_dir", record)
    return calls


def _commit(store: BlobStore, uid: str) -> Path:
    tmp = store.tmp / f"{uid}.part"
    tmp.write_bytes(uid.encode())
    return store.commit(tmp, uid).final


def test_prepared_buckets_spare_commits_the_mkdir_and_the_root_fsync(
    tmp_path: Path, synced: list[Path]
) -> None:
    store = BlobStore(tmp_path)
    assert store.prepare_buckets(chunk=1000) == len(BUCKETS) == 4096
    assert sorted(p.name for p in store.root.iterdir()) == list(BUCKETS)
    assert synced == [store.root] * 6  # once for what was listed, once per chunk
    synced.clear()
    for uid in UIDS:
        final = _commit(store, uid)
        assert final.read_bytes() == uid.encode()
    assert store.root not in synced  # only the buckets, once per commit
    assert len(synced) == len(UIDS)


def test_without_preparation_a_new_bucket_costs_a_root_fsync(
    tmp_path: Path, synced: list[Path]
) -> None:
    store = BlobStore(tmp_path)
    _commit(store, UIDS[0])
    assert synced[0] == store.root
    assert synced[1] == store.path_for(UIDS[0]).parent


def test_a_second_preparation_only_makes_what_is_missing(tmp_path: Path) -> None:
    first = BlobStore(tmp_path)
    _commit(first, UIDS[0])  # one bucket made on demand
    again = BlobStore(tmp_path)  # a restart
    assert again.prepare_buckets() == 4095
    assert again.prepare_buckets() == 0


def test_files_lists_every_instance_bucket_by_bucket(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.prepare_buckets()
    finals = [_commit(store, uid) for uid in UIDS]
    (store.root / BUCKETS[7] / "stray.part").write_bytes(b"x")  # not an instance
    listed = list(store.files())
    assert sorted(listed) == sorted(finals)
    assert listed == sorted(listed, key=lambda p: (p.parent.name, p.name))


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "look-first"])
def test_a_replaced_version_keeps_a_second_name_until_forgotten_or_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: bool
) -> None:
    if not renameat2:
        monkeypatch.setattr(blobs, "_renameat2", None)
    store = BlobStore(tmp_path)
    uid = "1.2.826.0.1.3680043.9.99.7"

    def place(data: bytes) -> blobs.Placed:
        tmp = store.tmp / f"{len(data)}.part"
        tmp.write_bytes(data)
        return store.place(tmp, uid)

    first = place(b"old")
    assert first.kept is None  # nothing there before: no second name
    second = place(b"newer")
    assert second.kept is not None and second.kept.read_bytes() == b"old"
    assert second.final.read_bytes() == b"newer"
    store.put_back(second.kept, second.final)
    assert second.final.read_bytes() == b"old" and not second.kept.exists()
    third = place(b"newest")
    assert third.kept is not None
    store.forget(third.kept)
    assert third.final.read_bytes() == b"newest" and list(store.tmp.iterdir()) == []


def _placer(
    store: BlobStore,
) -> tuple[Callable[[str, bytes], blobs.Placed], Callable[[str], bytes | None]]:
    """``place(uid, data)``: a temporary file holding ``data`` placed as ``uid`` (no
    fsync); ``final(uid)``: what the final name holds now (None: nothing)."""

    def place(uid: str, data: bytes) -> blobs.Placed:
        tmp = store.tmp / f"{uid}-{data.decode()}.part"
        tmp.write_bytes(data)
        return store.place(tmp, uid)

    def final(uid: str) -> bytes | None:
        path = store.path_for(uid)
        return path.read_bytes() if path.exists() else None

    return place, final


def test_a_failed_store_takes_back_only_its_own_file(tmp_path: Path) -> None:
    """Another store of the same instance (another association or worker) may replace
    the file of a store that then fails: that version, which its peer was told was
    stored, stays; the failed store's own file goes, or the version it replaced
    comes back, only while the name still holds it."""
    store = BlobStore(tmp_path)

    place, final = _placer(store)

    # An overwrite that fails after another one replaced it.
    place("1.2.3.1", b"old")
    mine = place("1.2.3.1", b"mine")
    theirs = place("1.2.3.1", b"theirs")
    assert store.take_back(mine) == "replaced"
    assert final("1.2.3.1") == b"theirs"
    store.forget(theirs.kept)
    # A new instance that fails after another store replaced it.
    new = place("1.2.3.2", b"new")
    other = place("1.2.3.2", b"other")
    assert store.take_back(new) == "replaced"
    assert final("1.2.3.2") == b"other"
    store.forget(other.kept)
    # Alone: the version replaced comes back, or the name goes.
    place("1.2.3.3", b"v1")
    assert store.take_back(place("1.2.3.3", b"v2")) == "back"
    assert final("1.2.3.3") == b"v1"
    assert store.take_back(place("1.2.3.4", b"only")) == "removed"
    assert final("1.2.3.4") is None
    assert list(store.tmp.iterdir()) == [], "a second name was left behind"


def test_stores_that_all_fail_bring_back_the_version_the_first_one_replaced(
    tmp_path: Path,
) -> None:
    """Overwrites of one instance that overlap and all fail, in any order, leave the
    version that stood before the first of them (or no file, if there was none): a
    failed store hands the version it replaced to the store that replaced its file.
    Whichever succeeds stands, and no second name is left behind."""
    store = BlobStore(tmp_path)
    orders = list(itertools.permutations(range(3)))

    place, final = _placer(store)

    for n, order in enumerate(orders):
        for before in (b"before", None):
            uid = f"1.2.3.9.{n}.{int(before is None)}"
            if before is not None:
                place(uid, before)
            placed = [place(uid, data) for data in (b"first", b"second", b"third")]
            for i in order:
                store.take_back(placed[i])
            assert final(uid) == before, (order, before)
            assert list(store.tmp.iterdir()) == [], "a second name was left behind"
        # The last one to fail was the only one left: the rest fail, one succeeds.
        uid = f"1.2.3.9.{n}.2"
        place(uid, b"before")
        placed = [place(uid, data) for data in (b"first", b"second", b"third")]
        survivor = order[-1]
        for i in order[:-1]:
            store.take_back(placed[i])
        store.forget(placed[survivor].kept)
        assert final(uid) == (b"first", b"second", b"third")[survivor], order
        leftovers = list(store.tmp.iterdir())
        # A successor's name that was forgotten before a predecessor handed over to
        # it cannot happen here (the survivor forgets last); nothing may be left.
        assert leftovers == [], leftovers


def test_replacing_a_file_waits_while_another_store_takes_one_back(tmp_path: Path) -> None:
    """The check "the name still holds my file" and what follows it are one step for
    every thread and process of the store (``flock`` on the bucket folder)."""
    store, other = BlobStore(tmp_path), BlobStore(tmp_path)  # e.g. two workers
    uid = "1.2.826.0.1.3680043.9.99.8"
    first = store.tmp / "first.part"
    first.write_bytes(b"first")
    placed = store.place(first, uid)
    second = other.tmp / "second.part"
    second.write_bytes(b"second")
    with store._guard(placed.final):
        replacing = threading.Thread(target=other.place, args=(second, uid))
        replacing.start()
        replacing.join(0.3)
        assert replacing.is_alive(), "the file was replaced while the lock was held"
        assert placed.final.read_bytes() == b"first"
    replacing.join(10)
    assert not replacing.is_alive() and placed.final.read_bytes() == b"second"


@pytest.mark.parametrize("before", [None, b"old"], ids=["new", "overwrite"])
def test_a_commit_whose_folder_cannot_be_flushed_leaves_what_was_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: bytes | None
) -> None:
    """The caller answers a failure: a new instance's file must not stay under its
    final name without a row (startup's reconcile would index it), and an overwrite's
    old version comes back."""
    store = BlobStore(tmp_path)
    uid = "1.2.826.0.1.3680043.9.99.9"
    final = store.path_for(uid)
    if before is not None:
        old = store.tmp / "old.part"
        old.write_bytes(before)
        store.commit(old, uid)
    bucket, real = final.parent, blobs.fsync_dir

    def fails_once_for_the_bucket(path: Path) -> None:
        if path == bucket and not failed:
            failed.append(path)
            raise OSError(5, "Input/output error")
        real(path)

    failed: list[Path] = []
    monkeypatch.setattr(blobs, "fsync_dir", fails_once_for_the_bucket)
    new = store.tmp / "new.part"
    new.write_bytes(b"new")
    with pytest.raises(OSError):
        store.commit(new, uid)
    assert failed == [bucket]
    assert (final.read_bytes() if final.exists() else None) == before
    assert list(store.tmp.iterdir()) == [], "a name was left in tmp/"
