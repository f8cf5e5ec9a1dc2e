"""Test add-in: one handler raises, one hangs past its time limit, a hook raises."""

from __future__ import annotations

import threading

from pacsd.addin import Addin, AssociationInfo, Status, StoreRequest, dimse, hook

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"

release = threading.Event()


class Faulty(Addin):
    name = "faulty"

    @dimse.c_store(sop_classes=[SECONDARY_CAPTURE])
    def boom(self, req: StoreRequest) -> int:
        raise RuntimeError("deliberate failure in a handler")

    @dimse.c_store(sop_classes=[MR_IMAGE], time_limit=1.0)
    def hang(self, req: StoreRequest) -> int:
        release.wait(30)
        return Status.SUCCESS

    @hook
    def association_accepted(self, assoc: AssociationInfo) -> None:
        raise ValueError("deliberate failure in a hook")

    def stop(self) -> None:
        release.set()
