"""Test add-in: records every ``instance_stored`` event."""

from __future__ import annotations

import threading
from typing import Any

from pacsd.addin import Addin, AssociationInfo, command, hook


class StoredWatch(Addin):
    name = "stored_watch"

    def start(self, ctx: Any) -> None:
        super().start(ctx)
        self.lock = threading.Lock()
        self.seen: list[dict[str, Any]] = []

    @hook
    def instance_stored(self, assoc: AssociationInfo, event: dict[str, Any]) -> None:
        with self.lock:
            self.seen.append({**event, "calling_ae": assoc.calling_ae, "assoc": assoc.id})

    @command("seen")
    def dump(self, args: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return {"seen": list(self.seen)}
