"""The storage base service (``ctx.storage``): a durable archive with a query index.

The built-in ``storage`` and ``query_retrieve`` add-ins are thin layers over it; another
add-in may use it too (e.g. to archive what it generates), or replace it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pacsd.addin.requests import StoreRequest
    from pydicom.dataset import Dataset


class OnDuplicate(StrEnum):
    """What a C-STORE of an already stored SOP Instance UID does."""

    #: Replace the stored instance (answer 0x0000).
    OVERWRITE = "overwrite"
    #: Refuse it: 0x0111 (Duplicate SOP Instance), the stored one stays.
    REJECT = "reject"
    #: Keep the stored one, discard the new one, answer 0x0000.
    KEEP = "keep"


class QueryModel(StrEnum):
    PATIENT_ROOT = "PATIENT"
    STUDY_ROOT = "STUDY"


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    status: int
    comment: str = ""


@dataclass(frozen=True, slots=True)
class StoredInstanceInfo:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: Path
    size: int
    study_uid: str
    series_uid: str


class Storage(Protocol):
    def store(
        self, req: StoreRequest, on_duplicate: OnDuplicate = OnDuplicate.OVERWRITE
    ) -> StoreOutcome:
        """Make the received instance durable and indexed; the outcome's status is the
        C-STORE answer (0x0000 only once both are committed)."""
        ...

    def find(
        self,
        model: QueryModel,
        identifier: Dataset,
        *,
        limit: int = 0,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[Dataset]:
        """C-FIND matching (PS3.4 C.2.2.2) of ``identifier`` at its QueryRetrieveLevel;
        yields response identifiers holding the requested keys."""
        ...

    def matching_instances(
        self, model: QueryModel, identifier: Dataset
    ) -> list[StoredInstanceInfo]:
        """The instances a C-MOVE or C-GET identifier selects."""
        ...

    def instance(self, sop_instance_uid: str) -> StoredInstanceInfo | None: ...
