"""A stored Part 10 file that a C-GET or C-MOVE handler yields in place of its dataset.

A retrieve handler that yields ``dcmread(path)`` holds the whole instance in memory,
and pynetdicom encodes it once more to send it: a C-GET of a 256 MiB multi-frame
raised the engine's peak RSS from 80 MB to 870 MB. A handler that yields
``StoredDataset.open(path)`` reads only the file meta. pacsd sends the file's bytes
as they are, one PDU at a time, when the peer accepted the stored transfer syntax. It
decodes the file only when the peer needs another syntax (an uncompressed one it can
convert to).

It is a pydicom ``Dataset`` holding the two UIDs. pynetdicom's retrieve services
count, list and report sub-operations by them, and they accept nothing else.

Sending opens the file once (``opened``) and reads everything from that open file:
the meta, the data set's offset, the bytes sent. A store of the same instance that
renames a new version over the name meanwhile (another transfer syntax, another meta
length) changes nothing in what one sub-operation sends. Nothing stays open between
``open`` and the send: retrieves pull results ahead in batches (64), and that many
descriptors per retrieve would soon reach a process's limit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info

_REQUIRED = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")


class StoredDataset(Dataset):
    """The SOP Class and Instance UIDs and file meta of a stored file at ``path``."""

    path: Path

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> StoredDataset:
        """Read the file meta of ``path``: OSError if it cannot be read, ValueError if
        it has no file meta naming its class, instance and transfer syntax."""
        path = Path(path)
        meta = _meta(path, str(path))
        ds = cls()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.path = path
        return ds

    @contextmanager
    def opened(self) -> Iterator[tuple[str, FileMetaDataset]]:
        """The file opened now: a name that reads that open file (``/proc/self/fd/N``),
        whatever happens to ``path`` meanwhile, and its file meta as it is now."""
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            source = f"/proc/self/fd/{fd}"
            yield source, _meta(self.path, source)
        finally:
            os.close(fd)


def _meta(path: Path, source: str) -> FileMetaDataset:
    try:
        meta = read_file_meta_info(source)
    except OSError:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a DICOM file with file meta: {exc}") from exc
    for keyword in _REQUIRED:
        if not meta.get(keyword):
            raise ValueError(f"{path} has no {keyword} in its file meta")
    return meta
