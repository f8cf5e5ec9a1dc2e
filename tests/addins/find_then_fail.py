"""Test add-in: a worklist C-FIND with as many matches as asked, then maybe a failure."""

from __future__ import annotations

from collections.abc import Iterator

from pacsd.addin import Addin, DimseFailure, FindRequest, dimse
from pydicom.dataset import Dataset

WORKLIST_FIND = "1.2.840.10008.5.1.4.31"


class FindThenFail(Addin):
    name = "find_then_fail"

    @dimse.c_find(sop_classes=[WORKLIST_FIND])
    def find(self, req: FindRequest) -> Iterator[Dataset]:
        """``PatientID`` "N" answers N matches (P0, P1, ...); ``PatientName`` names
        the Error Comment of a failure that follows them (none: success)."""
        count = int(str(req.dataset.get("PatientID", "0")) or 0)
        comment = str(req.dataset.get("PatientName", "") or "")
        for n in range(count):
            ds = Dataset()
            ds.PatientID = f"P{n}"
            yield ds
        if comment:
            raise DimseFailure(0xC001, comment)
