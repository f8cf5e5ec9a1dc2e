"""The Query/Retrieve SCP: C-FIND, C-MOVE and C-GET, Patient Root and Study Root.

A thin layer over the ``storage`` base service, which does the matching (PS3.4 C.2.2.2)
and knows where each instance lives. This add-in adds the policies around it:

- **result cap** (``max_results``, 0 = unlimited): C-FIND sends the first
  ``max_results`` matches as pending responses and then ends with ``0xA700`` (Refused:
  Out of Resources) instead of success, so the peer knows the list is incomplete and
  can narrow its query, and a warning is logged. Success would hide the truncation;
  failing without any result would make a broad query useless. C-MOVE/C-GET are not
  capped (pynetdicom refuses more than 65535 sub-operations itself).
- **invalid identifiers** raise the storage service's ``DimseFailure`` (0xA900 for a
  level or hierarchy the model does not allow, 0xC000 for unparseable values), which
  pacsd answers as is.
- **retrieves** yield each stored instance as a pydicom Dataset read from its file:
  pynetdicom 3.0.4's C-MOVE/C-GET SCP only accepts Datasets (not paths). The Dataset
  keeps the file's transfer syntax, so a compressed instance is sent compressed when
  the peer accepted that syntax, and counted as a failed sub-operation (listed in the
  Failed SOP Instance UID List by pynetdicom) when it did not. A file that cannot be
  read is reported the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pacsd.addin import (
    Addin,
    AddinSettings,
    FindRequest,
    GetRequest,
    MoveRequest,
    Status,
    StoredDataset,
    dimse,
    sop,
)
from pacsd.addin.status import DimseFailure
from pacsd.addin.storage import QueryModel, StoredInstanceInfo
from pydantic import Field
from pydicom.dataset import Dataset

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

MODELS: dict[str, QueryModel] = {
    PATIENT_ROOT_FIND: QueryModel.PATIENT_ROOT,
    PATIENT_ROOT_MOVE: QueryModel.PATIENT_ROOT,
    PATIENT_ROOT_GET: QueryModel.PATIENT_ROOT,
    STUDY_ROOT_FIND: QueryModel.STUDY_ROOT,
    STUDY_ROOT_MOVE: QueryModel.STUDY_ROOT,
    STUDY_ROOT_GET: QueryModel.STUDY_ROOT,
}


class QueryRetrieveSettings(AddinSettings):
    #: Most C-FIND matches returned; past it the query ends with 0xA700. 0: no limit.
    max_results: int = Field(1000, ge=0)


class QueryRetrieveAddin(Addin):
    name = "query_retrieve"
    version = "1.0.0"
    description = "C-FIND, C-MOVE and C-GET (Patient Root, Study Root) over the archive."
    settings_model = QueryRetrieveSettings

    # -- C-FIND -------------------------------------------------------------------------

    @dimse.c_find(sop_classes=(PATIENT_ROOT_FIND, STUDY_ROOT_FIND))
    def on_find(self, req: FindRequest) -> Iterator[Any]:
        try:
            yield from self._find(req)
        except DimseFailure as exc:
            self._refused("C-FIND", req, exc)
            raise

    def _find(self, req: FindRequest) -> Iterator[Any]:
        identifier = _identifier(req.dataset)
        settings: QueryRetrieveSettings = self.ctx.settings
        cap = settings.max_results
        # Ask for one more than the cap: only then do we know the answer was cut short.
        matches = self.ctx.storage.find(
            MODELS[req.sop_class_uid],
            identifier,
            limit=cap + 1 if cap else 0,
            cancelled=req.is_cancelled,
        )
        retrieve_ae = "RetrieveAETitle" in identifier
        for sent, match in enumerate(matches):
            if cap and sent >= cap:
                self.ctx.log.warning(
                    "C-FIND from %s at %s level matched more than max_results=%d; "
                    "answered 0xA700 after the first %d",
                    req.association.calling_ae,
                    req.level,
                    cap,
                    cap,
                )
                yield Status.OUT_OF_RESOURCES, None
                return
            if retrieve_ae:
                match.RetrieveAETitle = req.association.called_ae
            yield match

    def _refused(
        self, service: str, req: FindRequest | MoveRequest | GetRequest, exc: DimseFailure
    ) -> None:
        """pacsd answers the status without logging it; say why, for the operator."""
        self.ctx.log.warning(
            "%s from %s refused with 0x%04X: %s",
            service,
            req.association.calling_ae,
            exc.status,
            exc.comment or exc,
        )

    # -- C-MOVE / C-GET -----------------------------------------------------------------

    @dimse.c_move(sop_classes=(PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE))
    def on_move(self, req: MoveRequest) -> Iterator[Any]:
        yield from self._retrieve(req)

    # The sub-operations go back on the peer's association in the stored transfer
    # syntax, so every syntax the archive may hold is offered for them.
    @dimse.c_get(
        sop_classes=(PATIENT_ROOT_GET, STUDY_ROOT_GET),
        transfer_syntaxes=sop.ALL_TRANSFER_SYNTAXES,
    )
    def on_get(self, req: GetRequest) -> Iterator[Any]:
        yield from self._retrieve(req)

    def _retrieve(self, req: MoveRequest | GetRequest) -> Iterator[Any]:
        try:
            identifier = _identifier(req.dataset)
            model = MODELS[req.sop_class_uid]
            instances = self.ctx.storage.matching_instances(model, identifier)
        except DimseFailure as exc:
            self._refused("C-MOVE" if isinstance(req, MoveRequest) else "C-GET", req, exc)
            raise
        # The pairs let pacsd propose each stored transfer syntax to a C-MOVE destination.
        yield len(instances), sorted({(i.sop_class_uid, i.transfer_syntax) for i in instances})
        for instance in instances:
            if req.is_cancelled():
                return
            yield self._load(instance)

    def _load(self, instance: StoredInstanceInfo) -> Dataset:
        """The stored file, sent as it is (read a PDU at a time) or decoded if the peer
        needs another transfer syntax; on failure, a stub pynetdicom counts as failed."""
        try:
            return StoredDataset.open(instance.path)
        except Exception as exc:
            self.ctx.log.error(
                "cannot read %s for a retrieve (%s): %s",
                instance.sop_instance_uid,
                instance.path,
                exc,
            )
            # No file meta: send_c_store raises, and pynetdicom lists the UID as failed.
            stub = Dataset()
            stub.SOPClassUID = instance.sop_class_uid
            stub.SOPInstanceUID = instance.sop_instance_uid
            return stub


def _identifier(dataset: Dataset | None) -> Dataset:
    if dataset is None:
        raise DimseFailure(Status.IDENTIFIER_DOES_NOT_MATCH, "no identifier")
    return dataset
