"""The blob store's bucket folders are made ahead, so C-STOREs skip mkdir and a root fsync."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pacsd.server.storage import blobs
from pacsd.server.storage.archive import open_archive
from pacsd.server.storage.blobs import BUCKETS, BlobStore

UID = "1.2.826.0.1.3680043.10.543.9.1"


def folders(store: BlobStore) -> set[str]:
    return {p.name for p in store.root.iterdir() if p.is_dir()}


def test_every_bucket_is_made_once_and_existing_ones_are_kept(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    kept = store.path_for(UID)
    kept.parent.mkdir()
    kept.write_bytes(b"instance")
    assert store.create_buckets() == BUCKETS - 1
    assert len(folders(store)) == BUCKETS
    assert kept.read_bytes() == b"instance"
    assert store.create_buckets() == 0


@pytest.mark.parametrize("ahead", [True, False])
def test_a_commit_into_a_prepared_bucket_does_not_sync_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead: bool
) -> None:
    store = BlobStore(tmp_path)
    if ahead:
        store.create_buckets()
    synced: list[Path] = []
    real = blobs._fsync_dir

    def fsync_dir(path: Path) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(blobs, "_fsync_dir", fsync_dir)
    tmp = store.write_temp(b"instance")
    final = store.commit(tmp, UID)
    assert final.read_bytes() == b"instance"
    # The file's own folder is always synced (the rename); the root only for a new one.
    assert synced == ([final.parent] if ahead else [store.root, final.parent])


def test_the_first_process_prepares_the_buckets_at_startup(tmp_path: Path) -> None:
    settings = SimpleNamespace(data_dir=tmp_path, index_url="")
    archive = open_archive(settings)
    try:
        deadline = time.monotonic() + 30
        while len(folders(archive.blobs)) < BUCKETS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(folders(archive.blobs)) == BUCKETS
    finally:
        archive.close()
        archive.index.db.close()


def test_a_worker_leaves_them_to_the_first_process(tmp_path: Path) -> None:
    worker = open_archive(SimpleNamespace(data_dir=tmp_path, index_url=""), reconcile=False)
    try:
        time.sleep(0.5)
        assert folders(worker.blobs) == set()
    finally:
        worker.close()
        worker.index.db.close()
