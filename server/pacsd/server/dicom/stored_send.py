"""C-STORE requests that send a stored file as it is, a PDU at a time.

pynetdicom can send a Part 10 file without decoding it: ``send_c_store(path)`` with
``_config.STORE_SEND_CHUNKED_DATASET`` on reads the data set from the file as each
P-DATA is written. That only works through a context accepted for the file's own
transfer syntax, and the switch is process-wide: an add-in may set it, or rely on it
being off. pacsd leaves it alone. It wraps ``Association.send_c_store`` (every
association: the C-GET's own, a C-MOVE's sub-association, the client's) so that a
:class:`~pacsd.addin.stored_dataset.StoredDataset` (what the retrieve handlers yield,
and what the client sends for a file) goes out from its file when the peer accepted
its syntax, and is decoded (``dcmread``) only when the peer needs another one. For
that one call, on that thread, pynetdicom's ``association`` module sees the switch on
(``_Config``); everything else sees pynetdicom's own setting.

Reading the file as it is sent only bounds memory if the reading waits for the
writing. On plain connections ``send_path.send_file`` writes the PDUs from the file on
the sending thread (acceptors: ``engine.PacsdDIMSE``; requestors: ``client.
_ClientDIMSE``), and a slow peer makes it wait in ``send``. On TLS pynetdicom's DIMSE
layer queues every P-DATA for the upper layer's thread (the only one that writes an
``SSLSocket``) and goes on reading: with the file in the page cache and a peer slower
than the disk, a C-GET of a 64 MiB instance queued all of it. ``wait_for_room`` holds
the sender while ``MAX_QUEUED`` P-DATA wait (``pdu_guard.GuardedDUL.send_pdu``).
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from pacsd.addin.stored_dataset import StoredDataset
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import _config
from pynetdicom import association as association_module
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

#: P-DATA primitives a sender may queue ahead of the upper layer's thread: enough to
#: keep that thread writing, few enough that a file read as it is sent never piles up.
MAX_QUEUED = 16


def _accepts(assoc: Association, sop_class: str, syntax: str) -> bool:
    """Whether ``assoc`` may send ``sop_class`` in ``syntax`` unchanged: the exact
    match of pynetdicom's ``_get_valid_context`` for the SCU role (which logs an error
    when it finds none; here that only means the file is decoded)."""
    return any(
        cx.abstract_syntax == sop_class and cx.as_scu is True and cx.transfer_syntax[0] == syntax
        for cx in assoc.accepted_contexts
    )


class _Config:
    """pynetdicom's ``_config`` as its ``association`` module sees it: the same values,
    except ``STORE_SEND_CHUNKED_DATASET``, on while this thread sends a stored file."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_config, name)

    @property
    def STORE_SEND_CHUNKED_DATASET(self) -> bool:
        return bool(getattr(_sending, "stored", False) or _config.STORE_SEND_CHUNKED_DATASET)


_sending = threading.local()


@functools.cache
def install() -> None:
    """Wrap ``Association.send_c_store`` (once per process)."""
    original = Association.send_c_store

    @functools.wraps(original)
    def send_c_store(self: Association, dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if not isinstance(dataset, StoredDataset):
            return original(self, dataset, *args, **kwargs)
        with dataset.opened() as (source, meta):
            if not _accepts(self, str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)):
                return original(self, dcmread(source), *args, **kwargs)
            _sending.stored = True
            try:  # the file as opened: pynetdicom and send_file read it by that name
                return original(self, source, *args, **kwargs)
            finally:
                _sending.stored = False

    association_module._config = _Config()  # type: ignore[assignment]
    Association.send_c_store = send_c_store  # type: ignore[method-assign]


def wait_for_room(dul: DULServiceProvider, primitive: Any) -> bool:
    """Hold the caller while ``MAX_QUEUED`` P-DATA wait to be written; False when
    ``primitive`` should be dropped, because the upper layer's thread is gone (the
    association ended: nothing queued would be written any more).

    The upper layer's own thread never waits (it is the one that drains the queue),
    nor does anything but P-DATA (A-ABORT, A-RELEASE go at once).
    """
    if not isinstance(primitive, P_DATA) or threading.current_thread() is dul:
        return True
    queued = dul.to_provider_queue
    while queued.qsize() >= MAX_QUEUED:
        if dul._kill_thread or not dul.is_alive():
            return False
        time.sleep(0.0002)
    return True
