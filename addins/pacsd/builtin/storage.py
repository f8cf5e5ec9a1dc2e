"""The Storage SCP: C-STORE for every storage SOP class and transfer syntax.

It is a thin policy layer over the ``storage`` base service, which does the work
(durable file, indexed row, group commit). The duplicate policy is a setting.
"""

from __future__ import annotations

from pacsd.addin import Addin, AddinSettings, Permission, StoreRequest, dimse, sop
from pacsd.addin.storage import OnDuplicate


class StorageSettings(AddinSettings):
    #: What a second C-STORE of a stored SOP Instance UID does: ``overwrite`` (replace,
    #: 0x0000), ``reject`` (0x0111, keep the first) or ``keep`` (keep the first, 0x0000).
    duplicates: OnDuplicate = OnDuplicate.OVERWRITE


class StorageAddin(Addin):
    name = "storage"
    version = "1.0.0"
    description = "Stores every instance it receives, bit for bit, durably and indexed."
    settings_model = StorageSettings

    @dimse.c_store(sop_classes=sop.ALL_STORAGE, transfer_syntaxes=sop.ALL_TRANSFER_SYNTAXES)
    def on_store(self, req: StoreRequest) -> int:
        settings: StorageSettings = self.ctx.settings
        duplicates = settings.duplicates
        if duplicates is OnDuplicate.OVERWRITE and (
            Permission.OVERWRITE not in req.association.permissions
        ):
            # A peer without "overwrite" never replaces what is archived: 0x0111.
            duplicates = OnDuplicate.REJECT
        outcome = self.ctx.storage.store(req, duplicates)
        if outcome.comment and outcome.status:
            self.ctx.log.warning(
                "C-STORE of %s answered 0x%04X: %s",
                req.sop_instance_uid,
                outcome.status,
                outcome.comment,
            )
        return outcome.status
