"""Test add-in: archives a private SOP class (one pynetdicom does not list as storage)."""

from __future__ import annotations

from pacsd.addin import Addin, StoreRequest, dimse

#: A private SOP class under pacsd's implementation root.
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.10.1425.99.1"


class PrivateStore(Addin):
    name = "private_store"

    @dimse.c_store(sop_classes=[PRIVATE_SOP_CLASS])
    def store(self, req: StoreRequest) -> int:
        return self.ctx.storage.store(req).status
