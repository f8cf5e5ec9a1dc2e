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

The file is opened once, by ``open``, and everything after reads that open file
(``source``): the meta, the data set's offset, the bytes sent. A store of the same
instance that renames a new version over it meanwhile (another transfer syntax,
another meta length) changes nothing in what this one sends. The descriptor closes
when the object is collected, or at ``close``.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info

_REQUIRED = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")


class StoredDataset(Dataset):
    """The SOP Class and Instance UIDs and file meta of a stored file; ``path`` is
    the file's name, ``source`` the file as opened."""

    path: Path

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> StoredDataset:
        """Open ``path`` and read its file meta: OSError if it cannot be read,
        ValueError if it has no file meta naming its class, instance and syntax."""
        path = Path(path)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        source = f"/proc/self/fd/{fd}"
        try:
            meta = read_file_meta_info(source)
            missing = [keyword for keyword in _REQUIRED if not meta.get(keyword)]
        except OSError:
            os.close(fd)
            raise
        except Exception as exc:
            os.close(fd)
            raise ValueError(f"{path} is not a DICOM file with file meta: {exc}") from exc
        if missing:
            os.close(fd)
            raise ValueError(f"{path} has no {missing[0]} in its file meta")
        ds = cls()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.path = path
        ds._source = source
        ds._closer = weakref.finalize(ds, os.close, fd)
        return ds

    @property
    def source(self) -> str:
        """A name of the file as it was opened (``/proc/self/fd/N``), for reading it
        again whatever has happened to ``path`` since."""
        source: str = self._source
        return source

    def load(self) -> Dataset:
        """The whole dataset, decoded (what pacsd sends when the syntax must change)."""
        return dcmread(self.source)

    def close(self) -> None:
        """Close the file now rather than when the object is collected."""
        self._closer()
