"""``client.storage``: the SDK side of ``pacsd.admin.v1.StorageService``.

What the archive holds (counts and bytes, studies by patient, date and modality) and
removing studies, series or instances from it. Deletes are idempotent like every
other change: deleting what is not stored succeeds with ``changed=False``, so cleanup
scripts can re-run. They cannot be undone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pacsd.admin.v1 import storage_pb2, storage_pb2_grpc
from pacsd.client._paging import PageTokens
from pacsd.client.errors import InvalidArgument

if TYPE_CHECKING:
    from pacsd.client.client import Client

__all__ = ["Deletion", "StorageAPI", "StudiesPage", "StudyList"]

#: The server's largest page (``ListStudiesRequest.page_size``); larger asks are capped.
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Deletion:
    """Result of a delete: ``changed`` is False when nothing matched (then the counts
    are 0); ``instances`` and ``bytes`` say how much was removed."""

    changed: bool
    instances: int
    bytes: int


class StudyList(list[storage_pb2.Study]):
    """What ``studies()`` returns: a plain list of ``Study`` messages that also knows
    ``total_size``, how many studies matched on the server (more than ``len()`` when
    a ``limit`` cut the list short)."""

    total_size: int = 0


@dataclass(frozen=True)
class StudiesPage:
    """One page of ``ListStudies``: pass ``next_page_token`` (empty on the last page)
    with the same filters to get the next. ``total_size`` counts every matching study
    on the server when the page was read."""

    studies: list[storage_pb2.Study]
    next_page_token: str
    total_size: int


class StorageAPI:
    """``pacsd.admin.v1.StorageService``: the archive of one server.

    Errors carry the server's reason: ``InvalidArgument`` with INVALID_UID for a UID
    that is not digits and dots (``metadata["field"]`` names it), INVALID_ARGUMENT for
    a date that is not YYYYMMDD, INVALID_PAGE_TOKEN for a token issued for other
    filters; ``FailedPrecondition``/STORAGE_UNAVAILABLE when the server's archive is
    not open.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = storage_pb2_grpc.StorageServiceStub(client._channel)

    # -- reading -----------------------------------------------------------------------

    def stats(self, *, timeout: float | None = None) -> storage_pb2.StorageStats:
        """Patients, studies, series, instances and bytes stored; data_dir, index_backend."""
        response = self._client._call(
            self._stub.GetStorageStats, storage_pb2.GetStorageStatsRequest(), timeout
        )
        return response.stats

    def studies(
        self,
        *,
        patient_id: str = "",
        date_from: str = "",
        date_to: str = "",
        modality: str = "",
        limit: int | None = None,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> StudyList:
        """The studies matching the filters, newest study date first.

        Follows ``next_page_token`` to the last page, like ``aetitles.list()``, so the
        result is complete unless ``limit`` caps it (then only the pages needed are
        fetched; ``total_size`` of the result still counts every match). ``page_size``
        (0: the server's default of 100) sets how many come per call and ``timeout``
        applies to each call. Dates are YYYYMMDD, both bounds inclusive. For archives
        too large to hold in one list, use ``iter_studies`` or ``studies_page``.
        """
        result = StudyList()
        for number, page in enumerate(
            self._pages(patient_id, date_from, date_to, modality, limit, page_size, timeout)
        ):
            if number == 0:  # the count when the listing began
                result.total_size = page.total_size
            result.extend(page.studies)
        return result

    def iter_studies(
        self,
        *,
        patient_id: str = "",
        date_from: str = "",
        date_to: str = "",
        modality: str = "",
        limit: int | None = None,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[storage_pb2.Study]:
        """Like ``studies``, but fetches each page only when the previous one is used up."""
        for page in self._pages(
            patient_id, date_from, date_to, modality, limit, page_size, timeout
        ):
            yield from page.studies

    def _pages(
        self,
        patient_id: str,
        date_from: str,
        date_to: str,
        modality: str,
        limit: int | None,
        page_size: int,
        timeout: float | None,
    ) -> Iterator[StudiesPage]:
        """Pages from the first, cut so that at most ``limit`` studies come in all."""
        _check_limit(limit)
        token = ""
        tokens = PageTokens("ListStudies", self._client.endpoint)
        got = 0
        while limit is None or got < limit:
            size = _page_size(limit, got, page_size)
            page = self.studies_page(
                patient_id=patient_id,
                date_from=date_from,
                date_to=date_to,
                modality=modality,
                page_size=size,
                page_token=token,
                timeout=timeout,
            )
            if limit is not None and got + len(page.studies) > limit:
                page = StudiesPage(
                    page.studies[: limit - got], page.next_page_token, page.total_size
                )
            got += len(page.studies)
            yield page
            token = page.next_page_token
            if not tokens.follow(token):
                return

    def studies_page(
        self,
        *,
        patient_id: str = "",
        date_from: str = "",
        date_to: str = "",
        modality: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> StudiesPage:
        """One ``ListStudies`` call: a page of studies, the next token and the total."""
        request = storage_pb2.ListStudiesRequest(
            patient_id=patient_id,
            study_date_from=date_from,
            study_date_to=date_to,
            modality=modality,
            page_size=_int32(page_size, "page_size"),
            page_token=page_token,
        )
        response = self._client._call(self._stub.ListStudies, request, timeout)
        return StudiesPage(
            list(response.studies), response.next_page_token, int(response.total_size)
        )

    # -- deleting ----------------------------------------------------------------------

    def delete_study(self, study_instance_uid: str, *, timeout: float | None = None) -> Deletion:
        """Delete every instance of the study (files, then index rows)."""
        response = self._client._call(
            self._stub.DeleteStudy,
            storage_pb2.DeleteStudyRequest(study_instance_uid=study_instance_uid),
            timeout,
        )
        return _deletion(response)

    def delete_series(self, series_instance_uid: str, *, timeout: float | None = None) -> Deletion:
        """Delete every instance of the series; its study goes when it has no series left."""
        response = self._client._call(
            self._stub.DeleteSeries,
            storage_pb2.DeleteSeriesRequest(series_instance_uid=series_instance_uid),
            timeout,
        )
        return _deletion(response)

    def delete_instance(self, sop_instance_uid: str, *, timeout: float | None = None) -> Deletion:
        """Delete one instance; its series goes when it has no instance left."""
        response = self._client._call(
            self._stub.DeleteInstance,
            storage_pb2.DeleteInstanceRequest(sop_instance_uid=sop_instance_uid),
            timeout,
        )
        return _deletion(response)


def _deletion(
    response: storage_pb2.DeleteStudyResponse
    | storage_pb2.DeleteSeriesResponse
    | storage_pb2.DeleteInstanceResponse,
) -> Deletion:
    return Deletion(
        bool(response.changed), int(response.instances_deleted), int(response.bytes_deleted)
    )


def _int32(value: int, field: str) -> int:
    # Negative values are the server's to refuse (it names the field); values protobuf
    # cannot carry in an int32 would otherwise escape as ValueError from protobuf.
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise InvalidArgument(
            f"{field} must be an integer, not {value!r}",
            reason="INVALID_ARGUMENT",
            metadata={"field": field},
        )
    return value


def _check_limit(limit: int | None) -> None:
    """Refuse a limit that is not a non-negative int before anything is sent."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgument(
            f"limit must be 0 or more, not {limit!r}",
            reason="INVALID_ARGUMENT",
            metadata={"field": "limit"},
        )


def _page_size(limit: int | None, got: int, page_size: int) -> int:
    """Ask for no more than is still wanted, so a small limit costs one small call on a
    large archive."""
    if limit is None:
        return page_size
    return min(limit - got, page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
