"""Reading the attributes the index needs from a stored file, and only those.

``read_instance`` parses the header with pydicom, stopping before Pixel Data and
keeping just the tags listed here, so indexing a 1 GB instance reads kilobytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
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


#: Record fields filled with an attribute's text, and the attribute.
_TEXT_FIELDS = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "birth_date": "PatientBirthDate",
    "sex": "PatientSex",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "accession_number": "AccessionNumber",
    "study_id": "StudyID",
    "study_description": "StudyDescription",
    "referring_physician": "ReferringPhysicianName",
    "modality": "Modality",
    "series_number": "SeriesNumber",
    "series_description": "SeriesDescription",
    "series_date": "SeriesDate",
    "body_part": "BodyPartExamined",
    "instance_number": "InstanceNumber",
}
#: Record fields filled with a UID that must be present and valid: (attribute, its name).
_UID_FIELDS = {
    "study_uid": ("StudyInstanceUID", "Study Instance UID"),
    "series_uid": ("SeriesInstanceUID", "Series Instance UID"),
    "sop_instance_uid": ("SOPInstanceUID", "SOP Instance UID"),
    "sop_class_uid": ("SOPClassUID", "SOP Class UID"),
}


def _record(
    text: Callable[[str], str],
    transfer_syntax: str,
    extras: Callable[[], tuple[dict[str, Any], ...]],
) -> InstanceRecord:
    """The record from an attribute's text (either reader's). A missing or invalid UID
    raises UnreadableInstance before anything else is read; then the text fields, then
    ``extras`` (per level: patient, study, series, instance)."""
    try:
        uids: dict[str, Any] = {
            f: require_uid(text(key), name) for f, (key, name) in _UID_FIELDS.items()
        }
    except ValueError as exc:
        raise UnreadableInstance(str(exc)) from exc
    texts: dict[str, Any] = {field: text(key) for field, key in _TEXT_FIELDS.items()}
    patient, study, series, instance = extras()
    return InstanceRecord(
        **texts,
        **uids,
        transfer_syntax=transfer_syntax,
        patient_attrs=patient,
        study_attrs=study,
        series_attrs=series,
        instance_attrs=instance,
    )


def record_from_dataset(ds: Dataset, transfer_syntax: str) -> InstanceRecord:
    """Build the index record; raises UnreadableInstance when UIDs are missing or invalid."""
    return _record(
        lambda keyword: _text(ds, keyword),
        transfer_syntax,
        lambda: (
            _extras(ds, PATIENT_KEYS, _PATIENT_COLUMNS),
            _extras(ds, STUDY_KEYS, _STUDY_COLUMNS),
            _extras(ds, SERIES_KEYS, _SERIES_COLUMNS),
            _extras(ds, INSTANCE_KEYS, _INSTANCE_COLUMNS),
        ),
    )


def _fast_record(path: Path, head: bytes | None = None) -> InstanceRecord | None:
    """The record from the raw header (``fast_header``), or None when pydicom must read
    the file (also for missing or invalid UIDs: pydicom's path says why, in its words)."""
    try:
        syntax, raw = fast_header.read(path, _WANTED, head)
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
        return _record(lambda keyword: texts.get(keyword, ""), syntax, lambda: attrs)
    except ValueError:
        return None


def read_instance(
    path: Path, fast: bool = True, head: bytes | None = None, size: int | None = None
) -> InstanceRecord:
    """Parse only the indexed tags of a Part 10 file (never Pixel Data).

    Plain files are read from their raw header (``fast_header``); the others, and
    ``fast=False``, with pydicom. A caller that just wrote the file may pass its first
    bytes (``head``, see ``fast_header.read``) and its ``size``, sparing the reads.
    """
    if fast:
        record = _fast_record(path, head)
        if record is not None:
            record.path = str(path)
            record.size = path.stat().st_size if size is None else size
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


#: One encoder for every row (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def dumps(attrs: dict[str, Any]) -> str:
    return _ENCODER.encode(attrs) if attrs else "{}"
