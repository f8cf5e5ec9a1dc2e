"""Test add-in: watches messages only while told to (``Addin.observes``), or fails to say."""

from __future__ import annotations

import threading
from typing import Any

from pacsd.addin import Addin, AssociationInfo, DimseMessage, Hook, command, hook


class ChoosyWatch(Addin):
    name = "choosy_watch"

    def start(self, ctx: Any) -> None:
        super().start(ctx)
        self.lock = threading.Lock()
        self.watching = False
        self.broken = False
        self.events: list[dict[str, Any]] = []

    def observes(self, hook: Hook) -> bool:
        if self.broken:
            raise RuntimeError("observes is broken")
        return self.watching

    def _add(self, direction: str, msg: DimseMessage) -> None:
        with self.lock:
            self.events.append(
                {
                    "direction": direction,
                    "service": msg.service,
                    "response": msg.is_response,
                    "id": msg.message_id,
                    "status": msg.status,
                    "has_dataset": msg.has_dataset,
                }
            )

    @hook
    def message_received(self, assoc: AssociationInfo, msg: DimseMessage) -> None:
        self._add("received", msg)

    @hook
    def message_sent(self, assoc: AssociationInfo, msg: DimseMessage) -> None:
        self._add("sent", msg)

    @command("set")
    def set(self, args: dict[str, Any]) -> dict[str, Any]:
        self.watching = bool(args.get("watching", self.watching))
        self.broken = bool(args.get("broken", self.broken))
        return {"watching": self.watching, "broken": self.broken}

    @command("events")
    def dump(self, args: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            events, self.events = self.events, []
        return {"events": events}
