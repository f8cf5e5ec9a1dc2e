"""Test add-in: a C-STORE handler that takes its time (for unload's grace period)."""

from __future__ import annotations

import time

from pacsd.addin import Addin, Status, StoreRequest, dimse

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


class Slow(Addin):
    name = "slow"

    @dimse.c_store(sop_classes=[SECONDARY_CAPTURE])
    def on_store(self, req: StoreRequest) -> int:
        self.ctx.log.info("slow store of %s begins", req.sop_instance_uid)
        time.sleep(1.5)
        return Status.SUCCESS

    def stop(self) -> None:
        self.ctx.log.info("slow add-in stopped")
