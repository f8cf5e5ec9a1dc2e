"""Test add-in: a C-FIND whose results are each slow, or one of which never comes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from pacsd.addin import Addin, FindRequest, dimse
from pydicom.dataset import Dataset

WORKLIST_FIND = "1.2.840.10008.5.1.4.31"

release = threading.Event()


def result(n: int) -> Dataset:
    ds = Dataset()
    ds.PatientID = f"P{n}"
    return ds


class SlowFind(Addin):
    name = "slow_find"

    @dimse.c_find(sop_classes=[WORKLIST_FIND], time_limit=1.0)
    def find(self, req: FindRequest) -> Iterator[Dataset]:
        hang = str(req.dataset.get("PatientID", "")) == "HANG"
        for n in range(4):
            if hang and n == 3:
                release.wait(30)  # past the 1 s limit
            else:
                time.sleep(0.4)  # under the limit each, 1.6 s in all
            yield result(n)

    def stop(self) -> None:
        release.set()
