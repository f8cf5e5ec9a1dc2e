"""An example pacsd add-in: a small C-STORE SCP that keeps what it receives.

Load it at runtime without restarting the server::

    pacsctl addin load /path/to/example_store.py
    pacsctl addin settings example_store --set folder=/tmp/received
    pacsctl -w json addin invoke example_store stats

It shows the four things an add-in declares: handlers (``@dimse.c_store``), observers
(``@hook``), settings (``settings_model``) and commands (``@command``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pacsd.addin import (
    Addin,
    AddinContext,
    AddinSettings,
    AssociationInfo,
    DimseFailure,
    Status,
    StoreRequest,
    command,
    dimse,
    hook,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"

#: The status answered for a stored instance. (The reload test edits this line.)
STORE_STATUS = Status.SUCCESS


class ExampleStoreSettings(AddinSettings):
    #: Where instances are written; empty keeps only the count.
    folder: str = ""
    #: Refuse instances larger than this many bytes (0 = no limit).
    max_bytes: int = 0


class ExampleStore(Addin):
    name = "example_store"
    version = "1.0.0"
    description = "Stores CT, MR and Secondary Capture instances in a folder."
    settings_model = ExampleStoreSettings

    def start(self, ctx: AddinContext) -> None:
        super().start(ctx)
        self._lock = threading.Lock()
        self.stored = 0
        self.associations = 0
        self.last_sop_instance_uid = ""

    @dimse.c_store(
        sop_classes=[CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, SECONDARY_CAPTURE_IMAGE_STORAGE]
    )
    def on_store(self, req: StoreRequest) -> int:
        settings: ExampleStoreSettings = self.ctx.settings
        data = req.encoded()
        if settings.max_bytes and len(data) > settings.max_bytes:
            raise DimseFailure(Status.OUT_OF_RESOURCES, "instance larger than max_bytes")
        if settings.folder:
            folder = Path(settings.folder)
            folder.mkdir(parents=True, exist_ok=True)
            # A real archive validates the UID before using it in a path.
            (folder / f"{req.sop_instance_uid}.dcm").write_bytes(data)
        with self._lock:
            self.stored += 1
            self.last_sop_instance_uid = req.sop_instance_uid
        self.ctx.log.info("stored %s from %s", req.sop_instance_uid, req.association.calling_ae)
        return int(STORE_STATUS)

    @hook
    def association_accepted(self, assoc: AssociationInfo) -> None:
        with self._lock:
            self.associations += 1

    @command("stats")
    def stats(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return {
                "stored": self.stored,
                "associations": self.associations,
                "last_sop_instance_uid": self.last_sop_instance_uid,
            }
