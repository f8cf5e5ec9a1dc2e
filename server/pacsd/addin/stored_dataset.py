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
"""

from __future__ import annotations

import os
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info

_REQUIRED = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")


class StoredDataset(Dataset):
    """The SOP Class and Instance UIDs and file meta of a stored file; ``path`` is
    the file."""

    path: Path

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> StoredDataset:
        """Read the file meta of ``path``: OSError if it cannot be read, ValueError
        if it has no file meta naming its class, instance and transfer syntax."""
        path = Path(path)
        try:
            meta = read_file_meta_info(path)
        except OSError:
            raise
        except Exception as exc:
            raise ValueError(f"{path} is not a DICOM file with file meta: {exc}") from exc
        for keyword in _REQUIRED:
            if not meta.get(keyword):
                raise ValueError(f"{path} has no {keyword} in its file meta")
        ds = cls()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.path = path
        return ds

    def load(self) -> Dataset:
        """The whole dataset, decoded (what pacsd sends when the syntax must change)."""
        return dcmread(self.path)
