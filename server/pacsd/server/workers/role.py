"""What makes an engine process a worker: its number and where its control socket is."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class WorkerRole:
    #: 1 .. workers-1 (0 is the process that hosts the control plane).
    index: int
    #: The gRPC address the worker serves its control services on ("unix:/...").
    control_address: str
    #: The DICOM port the first process bound (the worker joins its SO_REUSEPORT group).
    dicom_port: int
    #: The DICOM TLS port the first process bound, if any (for a configured port 0).
    tls_port: int | None = None
    #: The server's private run folder and its number of engine processes (the load
    #: board and hand-over sockets of balance.py live there).
    run_dir: str = ""
    processes: int = 0

    @property
    def assoc_prefix(self) -> str:
        """Prefix of this worker's association IDs ("w1.a7")."""
        return f"w{self.index}."


def encode_start(role: WorkerRole, settings: dict[str, Any]) -> bytes:
    """The one line a worker reads on standard input: its role and the settings in
    force (secrets included, hence stdin rather than argv or the environment)."""
    return json.dumps({"role": asdict(role), "settings": settings}).encode() + b"\n"


def decode_start(line: bytes) -> tuple[WorkerRole, dict[str, Any]]:
    document = json.loads(line)
    return WorkerRole(**document["role"]), document["settings"]
