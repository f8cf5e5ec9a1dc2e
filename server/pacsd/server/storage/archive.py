"""The default storage service: blob store + index + group commit + store journal.

``store`` is the C-STORE path: validate, refuse a dataset that disagrees with its
command, make the instance durable, put the file under its final name, commit the index
row (batched with others), and only then report success. Durable means, by default, one
record in this process's store journal (journal.py): with the instance's bytes when it
is small, and then its file and row wait for no flush; otherwise the file is fsynced
before its rename as without the journal. Any failure before success leaves neither a
file nor a row behind and answers 0xA700 (out of resources) or 0xA900/0xC000.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pacsd.addin import Status, StoreRequest
from pacsd.addin.storage import OnDuplicate, QueryModel, StoredInstanceInfo, StoreOutcome
from pacsd.server.dicom import spool
from pacsd.server.storage.attributes import InstanceRecord, UnreadableInstance, read_instance
from pacsd.server.storage.blobs import BlobStore, Placed, fsync_dir
from pacsd.server.storage.group_commit import GroupCommitter
from pacsd.server.storage.index.repository import Index, StoredInstance
from pacsd.server.storage.journal import (
    Epochs,
    JournalReplayFailed,
    StoreJournal,
    abandoned,
    latest_per_instance,
    read_records,
    syncfs,
)
from pacsd.server.storage.uids import is_valid_uid
from pydicom.dataset import Dataset

log = logging.getLogger("pacsd.core.storage")

#: PS3.7 C.4.2.1.4 / Annex C: failure statuses the archive answers.
DUPLICATE_SOP_INSTANCE = 0x0111
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000


def info(row: StoredInstance) -> StoredInstanceInfo:
    return StoredInstanceInfo(
        row.sop_instance_uid,
        row.sop_class_uid,
        row.transfer_syntax,
        Path(row.path),
        row.size,
        row.study_uid,
        row.series_uid,
    )


class Archive:
    def __init__(
        self,
        blobs: BlobStore,
        index: Index,
        on_stored: Callable[[StoreRequest, StoredInstanceInfo], None] | None = None,
        node: str = "",
    ) -> None:
        #: This server's ID: rows it writes carry it, and reconcile/rebuild touch only
        #: those, so nodes sharing a PostgreSQL index never drop each other's rows.
        self.node = node
        self.blobs = blobs
        self.index = index
        self.committer = GroupCommitter(index.add)
        self._on_stored = on_stored
        #: This process's store journal (``open_journal``); None: every C-STORE flushes
        #: its file, folder and index row itself.
        self.journal: StoreJournal | None = None
        self._epochs: Epochs | None = None
        self._data_fd = -1

    def close(self) -> None:
        self.committer.close()
        if self.journal is not None:
            self.journal.close()
        if self._epochs is not None:
            self._epochs.close()
        if self._data_fd >= 0:
            os.close(self._data_fd)
            self._data_fd = -1

    def journal_stats(self) -> dict[str, int] | None:
        """This process's store journal, for metrics; None without one."""
        if self.journal is None or self._epochs is None:
            return None
        healthy = self.journal.usable and self._epochs.failed is None
        return {
            "records": self.journal.records,
            "checkpoints": self._epochs.advances,
            "used_bytes": self.journal.used,
            "healthy": int(healthy),
        }

    def flush(self) -> None:
        """Make every file and index row written so far durable (journal checkpoints).

        ``syncfs`` goes through a descriptor held since the journal opened: it reports
        a writeback error only to descriptors opened before the error.
        """
        syncfs(self._data_fd)
        self.index.db.flush()

    # -- C-STORE --------------------------------------------------------------------

    def store(
        self, req: StoreRequest, on_duplicate: OnDuplicate = OnDuplicate.OVERWRITE
    ) -> StoreOutcome:
        uid = req.sop_instance_uid
        if not is_valid_uid(uid) or not is_valid_uid(req.sop_class_uid):
            log.warning("C-STORE refused: invalid SOP Instance/Class UID %r", uid)
            return StoreOutcome(DATASET_DOES_NOT_MATCH, "invalid SOP Instance or Class UID")
        tmp = self._temp_file(req)
        if isinstance(tmp, StoreOutcome):
            return tmp
        spooled = req._spooled if req.dataset_path is not None else None
        try:
            return self._store_file(req, tmp, on_duplicate, spooled)
        finally:
            if spooled is None:
                tmp.unlink(missing_ok=True)  # a no-op once renamed into place
            # else the engine discards its spool file unless it was moved (SpoolFile)

    def _temp_file(self, req: StoreRequest) -> Path | StoreOutcome:
        if req.dataset_path is not None:
            return req.dataset_path
        try:  # the dataset arrived in memory (engine without spooling)
            header = spool.file_meta_bytes(
                req.sop_class_uid,
                req.sop_instance_uid,
                req.transfer_syntax,
                req.association.calling_ae,
            )
            return self.blobs.write_temp(header + req.encoded())
        except OSError as exc:
            log.error("C-STORE of %s: cannot write: %s", req.sop_instance_uid, exc)
            return StoreOutcome(Status.OUT_OF_RESOURCES, f"cannot write: {exc.strerror}")

    def _store_file(
        self, req: StoreRequest, tmp: Path, on_duplicate: OnDuplicate, spooled: Any
    ) -> StoreOutcome:
        uid = req.sop_instance_uid
        head = bytes(spooled.head) if spooled is not None else None
        try:
            if spooled is not None:
                record = read_instance(tmp, head=head, size=spooled.size)
            else:
                record = read_instance(tmp)
        except UnreadableInstance as exc:
            log.warning("C-STORE of %s refused: %s", uid, exc)
            return StoreOutcome(CANNOT_UNDERSTAND, str(exc)[:64])
        except OSError as exc:
            return StoreOutcome(Status.OUT_OF_RESOURCES, f"cannot read back: {exc.strerror}")
        if record.sop_instance_uid != uid or record.sop_class_uid != req.sop_class_uid:
            log.warning(
                "C-STORE refused: dataset %s/%s disagrees with command %s/%s",
                record.sop_class_uid,
                record.sop_instance_uid,
                req.sop_class_uid,
                uid,
            )
            return StoreOutcome(DATASET_DOES_NOT_MATCH, "dataset UIDs differ from the command")
        if on_duplicate is not OnDuplicate.OVERWRITE and self.index.instance(uid) is not None:
            if on_duplicate is OnDuplicate.REJECT:
                return StoreOutcome(DUPLICATE_SOP_INSTANCE, "duplicate SOP instance")
            return StoreOutcome(Status.SUCCESS, "duplicate kept")
        journalled = self.journal is not None
        # A small instance, whole in memory: its record holds its bytes and is on the
        # device before the file takes its final name (so that after a crash the name
        # never holds a torn file: the replay rewrites it), and the file needs no fsync.
        small = spooled is not None and head is not None and spooled.size == len(head)
        whole = head if journalled and small else None
        epoch = self._journal(uid, whole) if whole is not None else None
        if epoch is None:
            whole = None
        try:
            fd = spooled.fileno() if spooled is not None else None
            if whole is not None:
                placed = self.blobs.place(tmp, uid, fd=fd)
            else:
                placed = self.blobs.commit(tmp, uid, fd=fd)
        except OSError as exc:
            log.error("C-STORE of %s: cannot store: %s", uid, exc)
            if whole is not None:
                self._retire_records()  # or the replay would store what failed here
            why = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
            return StoreOutcome(Status.OUT_OF_RESOURCES, f"cannot store: {why}")
        final, kept = placed.final, placed.kept
        if journalled and whole is None:
            # The file is durable already: a record without bytes, written only now so
            # that it never stands for a file that is not, takes the place of the index
            # commit's flush (the replay indexes the UID again).
            epoch = self._journal(uid, None)
        if spooled is not None:
            spooled.moved(final)
        record.path = str(final)
        record.node = self.node
        try:
            self.committer.add(record)
        except Exception as exc:
            log.error("C-STORE of %s: index commit failed: %s", uid, exc)
            # The row still describes the version stored before: its file too.
            self._take_back(uid, placed)
            if journalled:
                self._retire_records()
            return StoreOutcome(Status.OUT_OF_RESOURCES, "index unavailable")
        if journalled and (epoch is None or self._epoch_moved(epoch)):
            try:
                if epoch is None:
                    # The journal failed. A checkpoint flushes this file and row, and
                    # retires older records a replay would write over this version.
                    self._checkpoint()
                else:  # a checkpoint began after the record: its flush may have been early
                    if whole is not None:
                        self.blobs.sync(final)
                    self.index.db.flush()
            except OSError as exc:
                log.error("C-STORE of %s: cannot make it durable: %s", uid, exc)
                self._withdraw(uid, placed)
                return StoreOutcome(Status.OUT_OF_RESOURCES, f"cannot store: {exc.strerror}")
        self.blobs.forget(kept)
        if self._on_stored is not None:
            stored = StoredInstanceInfo(
                uid,
                record.sop_class_uid,
                record.transfer_syntax,
                final,
                record.size,
                record.study_uid,
                record.series_uid,
            )
            self._on_stored(req, stored)
        return StoreOutcome(Status.SUCCESS)

    def _journal(self, uid: str, whole: bytes | None) -> int | None:
        """Append the instance's record (its bytes if ``whole``); its epoch, or None if
        the journal failed (the caller then flushes everything itself)."""
        assert self.journal is not None
        try:
            return self.journal.append(uid, whole or b"")
        except OSError as exc:
            log.warning("C-STORE of %s: store journal failed (%s); flushing instead", uid, exc)
            return None

    def _epoch_moved(self, epoch: int) -> bool:
        assert self.journal is not None
        try:
            return self.journal.epoch_moved(epoch)
        except OSError:  # the epoch file is closed (shutdown): flush to be safe
            return True

    def _checkpoint(self) -> None:
        """Make every file and row so far durable and every journal record so far, in
        any process, unnecessary (each journal frees its ring at its next checkpoint)."""
        assert self._epochs is not None
        self._epochs.advance(self.flush)

    def _retire_records(self) -> None:
        """After a C-STORE failed past its record: a checkpoint, so that no replay
        stores what the peer was told had failed (best effort: logged if it fails)."""
        try:
            self._checkpoint()
        except OSError as exc:
            log.error("store journal checkpoint after a failed C-STORE failed: %s", exc)

    def _withdraw(self, uid: str, placed: Placed) -> None:
        """Take back a stored instance whose answer is a failure (best effort): the
        version stored before comes back, file and row, or the instance goes if there
        was none; a version another store put there since stays, and is indexed."""
        outcome = self._take_back(uid, placed)
        if outcome in ("back", "replaced"):
            try:
                self.committer.add(self._row(placed.final))
            except Exception as exc:
                log.error("C-STORE of %s: cannot index the version in place: %s", uid, exc)
        else:
            try:
                self.index.remove_instances([uid])
            except Exception as exc:
                log.error("C-STORE of %s: cannot remove its row: %s", uid, exc)
        self._retire_records()

    def _row(self, path: Path) -> InstanceRecord:
        """The index row of an instance file already under its final name (reconcile,
        replay, rebuild, a version put back); raises UnreadableInstance."""
        record = read_instance(path)
        record.path, record.node = str(path), self.node
        return record

    def _take_back(self, uid: str, placed: Placed) -> str | None:
        """``BlobStore.take_back`` for a failed store; None (logged) if it failed."""
        try:
            return self.blobs.take_back(placed)
        except OSError as exc:
            log.error("C-STORE of %s: cannot take its file back: %s", uid, exc)
            return None

    # -- query and retrieve ---------------------------------------------------------

    def find(
        self,
        model: QueryModel,
        identifier: Dataset,
        *,
        limit: int = 0,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[Dataset]:
        from pacsd.server.storage import query

        return query.find(self.index, model, identifier, limit=limit, cancelled=cancelled)

    def matching_instances(
        self, model: QueryModel, identifier: Dataset
    ) -> list[StoredInstanceInfo]:
        from pacsd.server.storage import query

        return [info(row) for row in query.match_instances(self.index, model, identifier)]

    def instance(self, sop_instance_uid: str) -> StoredInstanceInfo | None:
        if not is_valid_uid(sop_instance_uid):
            return None
        row = self.index.instance(sop_instance_uid)
        return None if row is None else info(row)

    # -- administration ---------------------------------------------------------------

    def delete(self, level: str, uid: str) -> list[StoredInstanceInfo]:
        """Delete a study, series or instance: files first, then rows (crash-safe)."""
        if not is_valid_uid(uid):
            raise ValueError(f"invalid UID {uid!r}")
        doomed = self.index.instances_of(level, uid)
        for row in doomed:
            self.blobs.delete(Path(row.path))
        if doomed:
            self.index.remove_instances([row.sop_instance_uid for row in doomed])
        if doomed and self._epochs is not None:
            # No journal record of these may outlive the delete, in any process: a
            # replay would bring them back. Taken after the files went, so that a
            # store of one of them that raced the delete is not brought back either.
            self._checkpoint()
        return [info(row) for row in doomed]

    def reconcile(self) -> dict[str, Any]:
        """Make the index and the files agree after a crash (run at startup).

        Files without rows were renamed into place but not yet committed: they are
        complete (the rename came after fsync), so they are indexed. Rows without files
        were being deleted: they go. Leftover temporary files go.
        """
        removed_tmp = self.blobs.clean_tmp()
        known = self.index.all_paths(self.node)
        on_disk = {p.stem: p for p in self.blobs.files()}
        missing = [uid for uid, path in known.items() if uid not in on_disk]
        if missing:
            self.index.remove_instances(missing)
        adopted = bad = 0
        for uid, path in on_disk.items():
            if uid in known:
                continue
            try:
                record = self._row(path)
            except UnreadableInstance as exc:
                log.error("unreadable file %s removed during reconciliation: %s", path, exc)
                self.blobs.delete(path)
                bad += 1
                continue
            self.index.add([record])
            adopted += 1
        summary = {
            "indexed": adopted,
            "dropped_rows": len(missing),
            "removed_tmp": removed_tmp,
            "removed_unreadable": bad,
        }
        if adopted or missing or bad:
            log.warning("index reconciled with the files: %s", summary)
        return summary

    # -- store journal ----------------------------------------------------------------

    def open_journal(self, folder: Path, size: int, replay: bool, enable: bool = True) -> None:
        """Deal with journals no live process holds, then start this process's.

        ``replay`` (the first process, nothing else running): their records may stand
        for files and rows the operating system lost, so they are applied. Otherwise
        they are a dead worker's, whose files and rows are in the page cache: a
        checkpoint makes them durable. Either way the files then go.
        """
        if not enable and not folder.is_dir():
            return
        self._data_fd = os.open(self.blobs.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._epochs = Epochs(folder)
        held = list(abandoned(folder))
        try:
            if held:
                try:
                    if replay:
                        self._replay([fd for _, fd in held], self._epochs.synced_through())
                    self._epochs.advance(self.flush)
                except OSError as exc:
                    raise JournalReplayFailed(
                        f"cannot apply the store journals a crash left in {folder}: {exc}; "
                        "they are kept (free space or repair the disk, then start again)"
                    ) from exc
                for path, _ in held:
                    path.unlink(missing_ok=True)
                fsync_dir(folder)
        finally:
            for _, fd in held:
                os.close(fd)
        if not enable:
            return
        try:
            self.journal = StoreJournal(folder, self._epochs, self.flush, size)
        except OSError as exc:  # e.g. a data folder too small for it
            log.warning(
                "store journal not created (%s): every C-STORE flushes its own file and "
                "index commit",
                exc,
            )
            return
        self.index.db.set_synchronous("NORMAL")  # the journal's records stand in for it

    def _replay(self, fds: list[int], synced_through: int) -> None:
        records = [record for fd in fds for record in read_records(fd, synced_through)]
        latest = latest_per_instance(records)
        rows = []
        restored = 0
        for uid, record in latest.items():
            if not is_valid_uid(uid):
                continue
            path = self.blobs.path_for(uid)
            if record.data:  # an OSError here ends the startup (open_journal)
                placed = self.blobs.commit(self.blobs.write_temp(record.data), uid)
                self.blobs.forget(placed.kept)
                restored += 1
            elif not path.exists():
                continue  # its file went since (a store that failed at its index commit)
            try:
                rows.append(self._row(path))
            except UnreadableInstance as exc:  # checked when stored: the disk changed it
                log.error("journalled instance %s not indexed: %s", uid, exc)
        for start in range(0, len(rows), 500):
            self.index.add(rows[start : start + 500])
        log.warning(
            "store journal replayed: %d records, %d files rewritten, %d instances re-indexed",
            len(records),
            restored,
            len(rows),
        )

    def rebuild(self, batch: int = 500) -> int:
        """Re-index every file of this node from scratch (``pacsd index rebuild``)."""
        known = list(self.index.all_paths(self.node))
        if known:
            self.index.remove_instances(known)
        count = 0
        pending = []
        for path in self.blobs.files():
            try:
                pending.append(self._row(path))
            except UnreadableInstance as exc:
                log.error("skipping unreadable %s: %s", path, exc)
                continue
            if len(pending) >= batch:  # one transaction per batch, not per file
                self.index.add(pending)
                count += len(pending)
                pending = []
        if pending:
            self.index.add(pending)
            count += len(pending)
        return count


def open_archive(
    settings: Any,
    on_stored: Callable[[StoreRequest, StoredInstanceInfo], None] | None = None,
    node: str = "",
    reconcile: bool = True,
    prepare_buckets: bool = True,
) -> Archive:
    """Open the blob store and index of ``settings`` and reconcile them (startup; a
    worker process, started after the first one reconciled, passes False)."""
    from pacsd.server.storage.index.db import open_index_db

    blobs = BlobStore(settings.data_dir)
    journal_size = settings.store_journal_mb * 1024 * 1024
    index = Index(open_index_db(settings.index_url, settings.data_dir))
    archive = Archive(blobs, index, on_stored, node)
    try:
        archive.open_journal(
            settings.data_dir / "journal", journal_size, replay=reconcile, enable=journal_size > 0
        )
        if reconcile:
            archive.reconcile()
    except Exception:
        archive.close()
        index.db.close()
        raise
    if prepare_buckets:
        threading.Thread(
            target=_prepare_buckets, args=(blobs,), name="pacsd-buckets", daemon=True
        ).start()
    return archive


def _prepare_buckets(blobs: BlobStore) -> None:
    try:
        made = blobs.prepare_buckets()
    except OSError as exc:  # a store going away under it (tests), a full disk...
        log.info("bucket folders not prepared ahead (%s): made as instances arrive", exc)
        return
    log.info("bucket folders ready (%d made)", made)
