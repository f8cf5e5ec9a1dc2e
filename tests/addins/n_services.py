"""Test add-in: answers every DIMSE-N service, so only the caller's permissions decide.

Each service is routed for a SOP class that defines it (PS3.4): MPPS for N-CREATE and
N-SET, Printer for N-GET, Storage Commitment for N-ACTION and N-EVENT-REPORT, Basic
Film Session for N-DELETE. Every handler succeeds and counts its calls, so a refusal
the peer sees can only come from the server's access policy.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from pacsd.addin import Addin, NRequest, Status, command, dimse
from pydicom.dataset import Dataset

MPPS = "1.2.840.10008.3.1.2.3.3"
PRINTER = "1.2.840.10008.5.1.1.16"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
FILM_SESSION = "1.2.840.10008.5.1.1.1"


class NServices(Addin):
    name = "n_services"

    def start(self, ctx: Any) -> None:
        super().start(ctx)
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()

    def _answer(self, req: NRequest) -> tuple[int, Dataset]:
        with self._lock:
            self._calls[req.service] += 1
        reply = Dataset()
        reply.SOPInstanceUID = req.sop_instance_uid or "1.2.3.4"
        return Status.SUCCESS, reply

    @dimse.n_create(sop_classes=[MPPS])
    def create(self, req: NRequest) -> tuple[int, Dataset]:
        return self._answer(req)

    @dimse.n_set(sop_classes=[MPPS])
    def set(self, req: NRequest) -> tuple[int, Dataset]:
        return self._answer(req)

    @dimse.n_get(sop_classes=[PRINTER])
    def get(self, req: NRequest) -> tuple[int, Dataset]:
        return self._answer(req)

    @dimse.n_action(sop_classes=[STORAGE_COMMITMENT])
    def action(self, req: NRequest) -> tuple[int, Dataset]:
        return self._answer(req)

    @dimse.n_event_report(sop_classes=[STORAGE_COMMITMENT])
    def event_report(self, req: NRequest) -> tuple[int, Dataset]:
        return self._answer(req)

    @dimse.n_delete(sop_classes=[FILM_SESSION])
    def delete(self, req: NRequest) -> int:
        with self._lock:
            self._calls[req.service] += 1
        return Status.SUCCESS

    @command("calls")
    def calls(self, args: dict[str, Any]) -> dict[str, Any]:
        """How often each service reached a handler (the policy refused the rest)."""
        with self._lock:
            return dict(self._calls)
