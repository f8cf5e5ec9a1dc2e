"""Reading the attributes the index needs from a stored file, and only those.

``read_instance`` parses the header with pydicom, stopping before Pixel Data and
keeping just the tags listed here, so indexing a 1 GB instance reads kilobytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsd.server.storage import fast_header
from pacsd.server.storage.uids import require_uid
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.tag import Tag

#: Attributes kept per level (keyword). Columns of the index come first; the rest go to
#: ``attrs`` (DICOM JSON) so C-FIND can return them without opening files.
PATIENT_KEYS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "PatientBirthTime",
    "EthnicGroup",
    "PatientComments",
)
STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "InstitutionName",
)
SERIES_KEYS = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "ProtocolName",
    "PerformedProcedureStepStartDate",
    "Laterality",
)
INSTANCE_KEYS = (
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "ContentDate",
    "ContentTime",
    "AcquisitionDate",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "ImageType",
)
ALL_KEYS = ("SpecificCharacterSet", *PATIENT_KEYS, *STUDY_KEYS, *SERIES_KEYS, *INSTANCE_KEYS)
_TAGS = [Tag(k) for k in ALL_KEYS]
_WANTED = fast_header.wanted(ALL_KEYS)

_PATIENT_COLUMNS = {"PatientID", "PatientName", "PatientBirthDate", "PatientSex"}
_STUDY_COLUMNS = {
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
}
_SERIES_COLUMNS = {
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "BodyPartExamined",
}
_INSTANCE_COLUMNS = {"SOPInstanceUID", "SOPClassUID", "InstanceNumber"}
_COLUMN_KEYS = tuple(
    sorted(_PATIENT_COLUMNS | _STUDY_COLUMNS | _SERIES_COLUMNS | _INSTANCE_COLUMNS)
)


#: Per level (patient, study, series, instance), the keys kept as JSON attributes rather
#: than columns: (keyword, tag, the tag as the JSON key), worked out once.
_EXTRAS = tuple(
    tuple((k, int(Tag(k)), f"{int(Tag(k)):08X}") for k in keys if k not in columns)
    for keys, columns in (
        (PATIENT_KEYS, _PATIENT_COLUMNS),
        (STUDY_KEYS, _STUDY_COLUMNS),
        (SERIES_KEYS, _SERIES_COLUMNS),
        (INSTANCE_KEYS, _INSTANCE_COLUMNS),
    )
)


class UnreadableInstance(ValueError):
    """The file is not a DICOM instance pacsd can index (no UIDs, not DICOM...)."""


@dataclass(slots=True)
class InstanceRecord:
    """One instance as the index stores it."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    study_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician: str
    series_uid: str
    modality: str
    series_number: str
    series_description: str
    series_date: str
    body_part: str
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: str
    transfer_syntax: str
    path: str = ""
    size: int = 0
    #: The node (server_id) whose blob store holds the file; "" when unknown.
    node: str = ""
    patient_attrs: dict[str, Any] = field(default_factory=dict)
    study_attrs: dict[str, Any] = field(default_factory=dict)
    series_attrs: dict[str, Any] = field(default_factory=dict)
    instance_attrs: dict[str, Any] = field(default_factory=dict)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return str(value).strip()


def _extras(ds: Dataset, keys: tuple[str, ...], columns: set[str]) -> dict[str, Any]:
    """DICOM JSON for the level's attributes that have no column of their own."""
    extra = Dataset()
    for keyword in keys:
        if keyword not in columns and keyword in ds:
            extra.add(ds[keyword])
    if not extra:
        return {}
    return extra.to_json_dict(bulk_data_threshold=1 << 20, bulk_data_element_handler=None)


def record_from_dataset(ds: Dataset, transfer_syntax: str) -> InstanceRecord:
    """Build the index record; raises UnreadableInstance when UIDs are missing or invalid."""
    try:
        study_uid = require_uid(_text(ds, "StudyInstanceUID"), "Study Instance UID")
        series_uid = require_uid(_text(ds, "SeriesInstanceUID"), "Series Instance UID")
        sop_uid = require_uid(_text(ds, "SOPInstanceUID"), "SOP Instance UID")
        sop_class = require_uid(_text(ds, "SOPClassUID"), "SOP Class UID")
    except ValueError as exc:
        raise UnreadableInstance(str(exc)) from exc
    return InstanceRecord(
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        birth_date=_text(ds, "PatientBirthDate"),
        sex=_text(ds, "PatientSex"),
        study_uid=study_uid,
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        accession_number=_text(ds, "AccessionNumber"),
        study_id=_text(ds, "StudyID"),
        study_description=_text(ds, "StudyDescription"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        series_uid=series_uid,
        modality=_text(ds, "Modality"),
        series_number=_text(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        series_date=_text(ds, "SeriesDate"),
        body_part=_text(ds, "BodyPartExamined"),
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        instance_number=_text(ds, "InstanceNumber"),
        transfer_syntax=transfer_syntax,
        patient_attrs=_extras(ds, PATIENT_KEYS, _PATIENT_COLUMNS),
        study_attrs=_extras(ds, STUDY_KEYS, _STUDY_COLUMNS),
        series_attrs=_extras(ds, SERIES_KEYS, _SERIES_COLUMNS),
        instance_attrs=_extras(ds, INSTANCE_KEYS, _INSTANCE_COLUMNS),
    )


def _fast_record(path: Path) -> InstanceRecord | None:
    """The record from the raw header (``fast_header``), or None when pydicom must read
    the file. Raises UnreadableInstance for missing or invalid UIDs, as pydicom's path."""
    try:
        syntax, raw = fast_header.read(path, _WANTED)
        texts = {k: fast_header.text(*raw[k]) for k in _COLUMN_KEYS if k in raw}

        attrs = tuple(
            {
                name: fast_header.json_value(tag, *raw[keyword])
                for keyword, tag, name in level
                if keyword in raw
            }
            for level in _EXTRAS
        )
    except (fast_header.NotFast, OSError, ValueError, struct.error):
        return None
    except Exception:  # pydicom refused one extra element: let it judge the whole file
        return None
    try:
        study_uid = require_uid(texts.get("StudyInstanceUID", ""), "Study Instance UID")
        series_uid = require_uid(texts.get("SeriesInstanceUID", ""), "Series Instance UID")
        sop_uid = require_uid(texts.get("SOPInstanceUID", ""), "SOP Instance UID")
        sop_class = require_uid(texts.get("SOPClassUID", ""), "SOP Class UID")
    except ValueError:
        return None  # pydicom's path says why, in its words
    t = texts.get
    return InstanceRecord(
        patient_id=t("PatientID", ""),
        patient_name=t("PatientName", ""),
        birth_date=t("PatientBirthDate", ""),
        sex=t("PatientSex", ""),
        study_uid=study_uid,
        study_date=t("StudyDate", ""),
        study_time=t("StudyTime", ""),
        accession_number=t("AccessionNumber", ""),
        study_id=t("StudyID", ""),
        study_description=t("StudyDescription", ""),
        referring_physician=t("ReferringPhysicianName", ""),
        series_uid=series_uid,
        modality=t("Modality", ""),
        series_number=t("SeriesNumber", ""),
        series_description=t("SeriesDescription", ""),
        series_date=t("SeriesDate", ""),
        body_part=t("BodyPartExamined", ""),
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        instance_number=t("InstanceNumber", ""),
        transfer_syntax=syntax,
        patient_attrs=attrs[0],
        study_attrs=attrs[1],
        series_attrs=attrs[2],
        instance_attrs=attrs[3],
    )


def read_instance(path: Path, fast: bool = True) -> InstanceRecord:
    """Parse only the indexed tags of a Part 10 file (never Pixel Data).

    Plain files are read from their raw header (``fast_header``); the others, and
    ``fast=False``, with pydicom.
    """
    if fast:
        record = _fast_record(path)
        if record is not None:
            record.path = str(path)
            record.size = path.stat().st_size
            return record
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
    except Exception as exc:
        raise UnreadableInstance(f"{path.name} is not a readable DICOM file: {exc}") from exc
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if not syntax:
        raise UnreadableInstance(f"{path.name} has no Transfer Syntax UID in its file meta")
    try:
        record = record_from_dataset(ds, syntax)
    except UnreadableInstance:
        raise
    except Exception as exc:  # pydicom converts values lazily: a broken element fails here
        raise UnreadableInstance(
            f"{path.name} has an unreadable element: {type(exc).__name__}: {exc}"
        ) from exc
    record.path = str(path)
    record.size = path.stat().st_size
    return record


def dumps(attrs: dict[str, Any]) -> str:
    return json.dumps(attrs, separators=(",", ":"), sort_keys=True) if attrs else "{}"
