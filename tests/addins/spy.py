"""Test add-in: watches everything, changes outgoing C-ECHO-RSPs, rejects one AE."""

from __future__ import annotations

import threading
from typing import Any

from pacsd.addin import Addin, AssociationInfo, DimseMessage, Reject, command, hook


class Spy(Addin):
    name = "spy"

    def start(self, ctx: Any) -> None:
        super().start(ctx)
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []

    def _add(self, assoc: AssociationInfo, what: str, **extra: Any) -> None:
        with self.lock:
            self.events.append(
                {"assoc": assoc.id, "calling": assoc.calling_ae, "event": what, **extra}
            )

    @hook
    def association_requested(self, assoc: AssociationInfo) -> None:
        if assoc.calling_ae == "BADGUY":
            raise Reject.calling_ae_not_recognized("BADGUY is not welcome")
        self._add(assoc, "requested")

    @hook
    def association_accepted(self, assoc: AssociationInfo) -> None:
        self._add(assoc, "accepted")

    @hook
    def association_rejected(self, assoc: AssociationInfo, reason: str) -> None:
        self._add(assoc, "rejected", reason=reason)

    @hook
    def association_released(self, assoc: AssociationInfo) -> None:
        self._add(assoc, "released")

    @hook
    def association_aborted(self, assoc: AssociationInfo) -> None:
        self._add(assoc, "aborted")

    @hook
    def message_received(self, assoc: AssociationInfo, msg: DimseMessage) -> None:
        self._add(
            assoc, "received", service=msg.service, response=msg.is_response, id=msg.message_id
        )

    @hook
    def message_sent(self, assoc: AssociationInfo, msg: DimseMessage) -> None:
        self._add(assoc, "sent", service=msg.service, response=msg.is_response, id=msg.message_id)

    @hook
    def before_send(self, assoc: AssociationInfo, msg: DimseMessage) -> None:
        if msg.service == "C-ECHO" and msg.is_response:
            msg.set("ErrorComment", "seen by spy")

    @command("events")
    def dump(self, args: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return {"events": list(self.events)}
