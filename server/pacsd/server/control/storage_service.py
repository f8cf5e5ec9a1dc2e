"""``pacsd.admin.v1.StorageService``: thin mapping from RPCs to the Archive.

The archive does the work (counting and listing from the index, deleting files before
rows); this module validates what the caller sent, so that a typo is answered with the
field it is in rather than with an empty result, and maps the outcome to messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from datetime import datetime
from typing import TYPE_CHECKING

import grpc
from pacsd.admin.v1 import errors_pb2, storage_pb2, storage_pb2_grpc
from pacsd.server.control.errors import ControlError, rpc
from pacsd.server.control.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from pacsd.server.storage.index.repository import StudySummary
from pacsd.server.storage.uids import is_valid_uid

if TYPE_CHECKING:
    from pacsd.addin.storage import StoredInstanceInfo
    from pacsd.server.runtime import Runtime
    from pacsd.server.storage.archive import Archive

log = logging.getLogger("pacsd.core.control")

_DATE = re.compile(r"^[0-9]{8}$")
_TOKEN_PREFIX = "st:"
#: Lower bound that excludes undated studies: the index keeps a missing Study Date
#: as "", which sorts before every real date, so "on or before X" alone would match
#: them; a study without a date is not "on or before" anything.
_EARLIEST = "00000000"


def _invalid(field: str, message: str, reason: int = errors_pb2.INVALID_ARGUMENT) -> ControlError:
    return ControlError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, {"field": field})


def _date(value: str, field: str) -> str:
    """``value`` if it is a real YYYYMMDD day. Dates are compared as text in the index,
    so "2024-01-01" would silently select the wrong studies instead of failing."""
    if not value:
        return ""
    try:
        if not _DATE.match(value):
            raise ValueError(value)
        datetime.strptime(value, "%Y%m%d")
    except ValueError as exc:
        raise _invalid(field, f"{field} must be a date as YYYYMMDD, not {value!r}") from exc
    return value


def _uid(value: str, field: str) -> str:
    if not value:
        raise _invalid(field, f"{field} is required")
    if not is_valid_uid(value):
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise _invalid(
            field,
            f"{field} {shown!r} is not a DICOM UID (digits and dots, at most 64 characters)",
            errors_pb2.INVALID_UID,
        )
    return value


def _fingerprint(request: storage_pb2.ListStudiesRequest) -> str:
    """Ties a page token to the filters it was issued for: the offset it holds means
    nothing under other filters, and silently applying it would skip studies."""
    key = "\x00".join(
        (request.patient_id, request.study_date_from, request.study_date_to, request.modality)
    )
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _encode_token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{offset}:{fingerprint}".encode()).decode()


def _decode_token(token: str, fingerprint: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        if not text.startswith(_TOKEN_PREFIX):
            raise ValueError(token)
        offset_text, _, issued_for = text.removeprefix(_TOKEN_PREFIX).partition(":")
        offset = int(offset_text)
        # base64 decoding is lenient; only the exact token this server issued (for
        # these filters) is accepted.
        if offset < 0 or _encode_token(offset, issued_for) != token:
            raise ValueError(token)
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise _invalid(
            "page_token", "page_token was not issued by this server", errors_pb2.INVALID_PAGE_TOKEN
        ) from exc
    if issued_for != fingerprint:
        raise _invalid(
            "page_token",
            "page_token was issued for other filters; repeat the first request's filters",
            errors_pb2.INVALID_PAGE_TOKEN,
        )
    return offset


def study_message(s: StudySummary) -> storage_pb2.Study:
    return storage_pb2.Study(
        study_instance_uid=s.study_uid,
        patient_id=s.patient_id,
        patient_name=s.patient_name,
        study_date=s.study_date,
        study_description=s.study_description,
        accession_number=s.accession_number,
        modalities=list(s.modalities),
        series=s.series,
        instances=s.instances,
        bytes=s.bytes,
    )


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _archive(self) -> Archive:
        """The runtime's archive, read on every call: it is closed at shutdown."""
        archive = self._rt.archive
        if archive is None:
            raise ControlError(
                grpc.StatusCode.FAILED_PRECONDITION,
                errors_pb2.STORAGE_UNAVAILABLE,
                "the archive is not open in this server",
            )
        return archive

    @rpc
    def GetStorageStats(
        self, request: storage_pb2.GetStorageStatsRequest, context: grpc.ServicerContext
    ) -> storage_pb2.GetStorageStatsResponse:
        archive = self._archive()
        counts = archive.index.counts()
        return storage_pb2.GetStorageStatsResponse(
            stats=storage_pb2.StorageStats(
                patients=counts.patients,
                studies=counts.studies,
                series=counts.series,
                instances=counts.instances,
                bytes=counts.bytes,
                data_dir=str(self._rt.settings.data_dir.resolve()),
                index_backend=archive.index.dialect,
            )
        )

    @rpc
    def ListStudies(
        self, request: storage_pb2.ListStudiesRequest, context: grpc.ServicerContext
    ) -> storage_pb2.ListStudiesResponse:
        date_from = _date(request.study_date_from, "study_date_from")
        date_to = _date(request.study_date_to, "study_date_to")
        if date_from and date_to and date_from > date_to:
            raise _invalid(
                "study_date_to",
                f"study_date_to {date_to} is before study_date_from {date_from}",
            )
        if request.page_size < 0:
            raise _invalid("page_size", "page_size must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        fingerprint = _fingerprint(request)
        offset = _decode_token(request.page_token, fingerprint) if request.page_token else 0
        archive = self._archive()
        studies, total = archive.index.studies(
            patient_id=request.patient_id,
            date_from=date_from or (_EARLIEST if date_to else ""),
            date_to=date_to,
            modality=request.modality,
            limit=size,
            offset=offset,
        )
        end = offset + len(studies)
        return storage_pb2.ListStudiesResponse(
            studies=[study_message(s) for s in studies],
            next_page_token=_encode_token(end, fingerprint) if studies and end < total else "",
            total_size=total,
        )

    def _delete(self, level: str, uid: str) -> tuple[bool, int, int]:
        archive = self._archive()
        deleted: list[StoredInstanceInfo] = archive.delete(level, uid)
        size = sum(item.size for item in deleted)
        if deleted:
            # Deletes cannot be undone: leave a trace of who removed what.
            log.warning(
                "%s %s deleted through the control plane: %d instance(s), %d bytes",
                level,
                uid,
                len(deleted),
                size,
            )
        return bool(deleted), len(deleted), size

    @rpc
    def DeleteStudy(
        self, request: storage_pb2.DeleteStudyRequest, context: grpc.ServicerContext
    ) -> storage_pb2.DeleteStudyResponse:
        uid = _uid(request.study_instance_uid, "study_instance_uid")
        changed, count, size = self._delete("study", uid)
        return storage_pb2.DeleteStudyResponse(
            changed=changed, instances_deleted=count, bytes_deleted=size
        )

    @rpc
    def DeleteSeries(
        self, request: storage_pb2.DeleteSeriesRequest, context: grpc.ServicerContext
    ) -> storage_pb2.DeleteSeriesResponse:
        uid = _uid(request.series_instance_uid, "series_instance_uid")
        changed, count, size = self._delete("series", uid)
        return storage_pb2.DeleteSeriesResponse(
            changed=changed, instances_deleted=count, bytes_deleted=size
        )

    @rpc
    def DeleteInstance(
        self, request: storage_pb2.DeleteInstanceRequest, context: grpc.ServicerContext
    ) -> storage_pb2.DeleteInstanceResponse:
        uid = _uid(request.sop_instance_uid, "sop_instance_uid")
        changed, count, size = self._delete("instance", uid)
        return storage_pb2.DeleteInstanceResponse(
            changed=changed, instances_deleted=count, bytes_deleted=size
        )
