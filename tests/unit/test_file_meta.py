"""The File Meta Information pacsd encodes by hand (dicom/spool.py: file_meta_bytes),
read back by pydicom: every element and the group length right, for instances that
follow each other (the elements around the SOP Instance UID are encoded once)."""

from __future__ import annotations

import io

import pytest
from pacsd.server.dicom.spool import IMPLEMENTATION_CLASS_UID, file_meta_bytes
from pydicom import dcmread

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.mark.parametrize("source_ae", ["STORESCU", "", "ODD"])
def test_each_instance_gets_its_own_uid_and_a_right_group_length(source_ae: str) -> None:
    for n, (sop_class, uid) in enumerate(
        [(CT, "1.2.3.4"), (CT, "1.2.3.45"), (MR, "1.2.3.456.7"), (CT, "1.2.3.4")]
    ):
        raw = file_meta_bytes(sop_class, uid, EXPLICIT, source_ae)
        # A dataset after the meta: pydicom reads it only if the group length is right.
        ds = dcmread(io.BytesIO(raw + b"\x10\x00\x10\x00PN\x04\x00DOE "))
        assert ds.PatientName == "DOE", f"instance {n}: the group length is wrong"
        meta = ds.file_meta
        assert meta.MediaStorageSOPClassUID == sop_class
        assert meta.MediaStorageSOPInstanceUID == uid
        assert meta.TransferSyntaxUID == EXPLICIT
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert meta.get("SourceApplicationEntityTitle", "") == source_ae
        assert meta.FileMetaInformationGroupLength == len(raw) - 132 - 12
