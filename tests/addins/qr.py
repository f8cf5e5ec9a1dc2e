"""Test add-in: C-FIND (slow, cancellable), C-GET, C-MOVE, N-ACTION, per-AE accepts()."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pacsd.addin import (
    Addin,
    AssociationInfo,
    FindRequest,
    GetRequest,
    MoveRequest,
    NRequest,
    Status,
    command,
    dimse,
)
from pydicom.dataset import Dataset

STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def instance(n: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = f"1.2.3.4.{n}"
    ds.PatientID = "QR"
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    return ds


class QR(Addin):
    name = "qr"

    def start(self, ctx: Any) -> None:
        super().start(ctx)
        self.cancel_seen = False
        self.last_level = ""

    def accepts(self, assoc: AssociationInfo, sop_class_uid: str) -> bool:
        return assoc.calling_ae != "NOFIND"

    @dimse.c_find(sop_classes=[STUDY_FIND])
    def find(self, req: FindRequest) -> Iterator[Dataset]:
        self.last_level = req.level
        for n in range(50):
            if req.is_cancelled():
                self.cancel_seen = True
                return
            result = Dataset()
            result.QueryRetrieveLevel = "STUDY"
            result.StudyInstanceUID = f"1.2.3.{n}"
            yield result
            time.sleep(0.05)

    @dimse.c_get(sop_classes=[STUDY_GET])
    def get(self, req: GetRequest) -> Iterator[Any]:
        yield 3
        for n in range(3):
            yield instance(n)

    @dimse.c_move(sop_classes=[STUDY_MOVE])
    def move(self, req: MoveRequest) -> Iterator[Any]:
        yield 1
        yield instance(9)

    @dimse.n_action(sop_classes=[STORAGE_COMMITMENT])
    def commit(self, req: NRequest) -> tuple[int, Dataset]:
        reply = Dataset()
        reply.TransactionUID = req.dataset.TransactionUID if req.dataset else "1.2"
        return Status.SUCCESS, reply

    @command("state")
    def state(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"cancel_seen": self.cancel_seen, "last_level": self.last_level}
