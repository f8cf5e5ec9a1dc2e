"""Rolling changes: change an add-in on a fleet batch by batch, checking each batch.

Reloading new add-in code on every node at once turns one bad release into an outage of
the whole fleet. A rollout changes ``batch`` servers at a time, then checks each of
them the way a modality would notice a problem: the process answers gRPC health, the
DICOM listener reports SERVING, and a real C-ECHO on the server's own DICOM port (taken
from ``GetServer``'s listeners) is answered with success. The first batch with a failed
server stops the rollout: later servers are left untouched, and the report says exactly
which servers were changed, which failed and why, and which were skipped.

    from pacsd.client import Fleet
    from pacsd.client.rollout import rollout

    with Fleet.from_inventory("fleet.toml") as fleet:
        report = rollout(fleet, "example_store", action="reload", batch=2)
        print(report.ok, report.changed, report.failed, report.skipped)
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pacsd.admin.v1 import addins_pb2
from pacsd.client._json import message_to_dict
from pacsd.client.addins import AddinChange
from pacsd.client.credentials import endpoint_host
from pacsd.client.dicom_echo import DEFAULT_CALLING_AE, EchoResult, c_echo
from pacsd.client.errors import PacsdError
from pacsd.client.fleet import error_to_dict
from pacsd.client.inventory import FleetServer

if TYPE_CHECKING:
    from pacsd.client.client import Client
    from pacsd.client.fleet import Fleet

__all__ = ["HealthReport", "RolloutReport", "ServerRollout", "check_health", "rollout"]

ACTIONS = ("reload", "load")
DEFAULT_ECHO_TIMEOUT = 5.0
_SERVING = "SERVING"
_ANY_HOST = ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True)
class HealthReport:
    """The three checks: gRPC health of the process (service "") and of the DICOM
    listener ("pacsd.dicom"), and a C-ECHO on the DICOM port."""

    process: str
    dicom: str
    echo: EchoResult

    @property
    def ok(self) -> bool:
        return self.process == _SERVING and self.dicom == _SERVING and self.echo.success

    def problem(self) -> str:
        """Why the server is not healthy, in one line ("" when it is)."""
        if self.process != _SERVING:
            return f"gRPC health is {self.process}"
        if self.dicom != _SERVING:
            return f"DICOM listener health is {self.dicom}"
        if not self.echo.success:
            return f"C-ECHO failed: {self.echo.error}"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "process": self.process,
            "dicom": self.dicom,
            "echo": {
                "success": self.echo.success,
                "status": self.echo.status,
                "error": self.echo.error,
                "round_trip_ms": self.echo.round_trip_ms,
            },
        }


def check_health(
    client: Client,
    *,
    calling_ae: str = DEFAULT_CALLING_AE,
    echo_timeout: float = DEFAULT_ECHO_TIMEOUT,
) -> HealthReport:
    """Health of one server as a DICOM peer sees it; raises PacsdError only when the
    control plane itself cannot be asked.

    The C-ECHO goes to a DICOM listener ``GetServer`` reports, the plain one when it
    listens; a server that only listens with TLS gets its C-ECHO over TLS, verified
    with the client's control-plane CA and presenting its certificate, if any (sites
    issue both from one CA: ``pacsctl certs``). A listener bound to every address
    (0.0.0.0, ::) is reached at the control endpoint's host.
    """
    process = client.health("")
    dicom = client.health("pacsd.dicom")
    server = client.server.get()
    listening = [
        item
        for item in server.listeners
        if item.protocol == "dicom" and item.listening and item.port
    ]
    listener = next((item for item in listening if not item.tls), None)
    listener = listener or next(iter(listening), None)
    if listener is None:
        echo = EchoResult(False, error="the server reports no listening DICOM port")
    else:
        host = listener.host
        if host in _ANY_HOST:
            host = endpoint_host(client.endpoint)
        echo = c_echo(
            host,
            listener.port,
            listener.ae_title or "ANY-SCP",
            calling_ae=calling_ae,
            timeout=echo_timeout,
            tls=_dicom_tls(client) if listener.tls else None,
        )
    return HealthReport(process, dicom, echo)


def _dicom_tls(client: Client) -> ssl.SSLContext:
    """TLS for a C-ECHO to a TLS-only DICOM listener, from the client's credentials."""
    credentials = client.credentials
    cacert = credentials.cacert if credentials else None
    context = ssl.create_default_context(cafile=str(cacert) if cacert else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if credentials is not None and credentials.cert is not None and credentials.key is not None:
        context.load_cert_chain(str(credentials.cert), str(credentials.key))
    return context


@dataclass
class ServerRollout:
    """One server in a rollout. ``status``: "changed" (the change was made and the
    server is healthy), "unchanged" (nothing to do there, healthy), "failed" (the
    change or a health check failed; ``error`` or ``health`` says which), "skipped"
    (the rollout stopped before its batch)."""

    server: FleetServer
    batch: int
    status: str = "skipped"
    change: AddinChange | None = None
    health: HealthReport | None = None
    error: Exception | None = None

    @property
    def unreachable(self) -> bool:
        return isinstance(self.error, PacsdError) and self.error.unreachable

    def problem(self) -> str:
        if self.error is not None:
            return str(self.error)
        if self.health is not None:
            return self.health.problem()
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server.name,
            "endpoint": self.server.endpoint,
            "batch": self.batch,
            "status": self.status,
            "changed": bool(self.change and self.change.changed),
            "addin": message_to_dict(self.change.addin) if self.change else None,
            "health": self.health.to_dict() if self.health else None,
            "error": error_to_dict(self.error) if self.error is not None else None,
        }


@dataclass
class RolloutReport:
    addin: str
    action: str
    source: str
    batch_size: int
    servers: list[ServerRollout] = field(default_factory=list)
    #: The batch (1-based) whose failure stopped the rollout; None when it completed.
    stopped_at: int | None = None

    @property
    def ok(self) -> bool:
        return self.stopped_at is None

    def _names(self, *statuses: str) -> list[str]:
        return [s.server.name for s in self.servers if s.status in statuses]

    @property
    def changed(self) -> list[str]:
        """Servers where the change was made (also those that then failed a health
        check: the new code runs there)."""
        return [s.server.name for s in self.servers if s.change is not None and s.change.changed]

    @property
    def failed(self) -> list[str]:
        return self._names("failed")

    @property
    def skipped(self) -> list[str]:
        return self._names("skipped")

    @property
    def batches(self) -> int:
        return max((s.batch for s in self.servers), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "addin": self.addin,
            "action": self.action,
            "source": self.source,
            "batch_size": self.batch_size,
            "completed": self.ok,
            "stopped_at_batch": self.stopped_at,
            "changed": self.changed,
            "failed": self.failed,
            "skipped": self.skipped,
            "servers": [s.to_dict() for s in self.servers],
        }


def rollout(
    fleet: Fleet,
    addin: str,
    *,
    action: str = "reload",
    source: str = "",
    batch: int = 1,
    calling_ae: str = DEFAULT_CALLING_AE,
    echo_timeout: float = DEFAULT_ECHO_TIMEOUT,
    on_batch: Callable[[int, list[ServerRollout]], None] | None = None,
) -> RolloutReport:
    """Reload ``addin`` (``action="reload"``) or load it (``action="load"``, from
    ``source``: a path on the servers or a name; default the add-in's name) on the
    fleet's servers, ``batch`` at a time, in fleet order.

    Within a batch the servers change concurrently; after it, every one must pass
    ``check_health``. The first batch with a failure ends the rollout. ``on_batch``
    is called after each batch with its number and results (for progress output).
    Never raises for a server's failure; ValueError for bad arguments.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer of 1 or more, not {batch!r}")
    is_path = "/" in source or source.endswith(".py")
    if action == "load" and is_path and Path(source).stem != addin:
        raise ValueError(
            f"the server names an add-in loaded from {source} {Path(source).stem!r}, not {addin!r}"
        )
    shown_source = (source or addin) if action == "load" else ""
    report = RolloutReport(addin, action, shown_source, batch)
    servers = list(fleet.servers)
    report.servers = [
        ServerRollout(server, index // batch + 1) for index, server in enumerate(servers)
    ]
    by_name = {s.server.name: s for s in report.servers}

    def change(server: FleetServer, client: Client) -> ServerRollout:
        outcome = by_name[server.name]
        try:
            if action == "reload":
                outcome.change = client.addins.reload(addin)
            else:
                outcome.change = client.addins.load(source or addin)
            if outcome.change.addin.state == addins_pb2.ADDIN_STATE_FAILED:
                raise RuntimeError(f"add-in {addin} failed: {outcome.change.addin.error}")
            outcome.health = check_health(client, calling_ae=calling_ae, echo_timeout=echo_timeout)
        except Exception as exc:  # this server's failure ends the rollout, not the call
            outcome.error = exc
        healthy = outcome.error is None and outcome.health is not None and outcome.health.ok
        if not healthy:
            outcome.status = "failed"
        elif outcome.change is not None and outcome.change.changed:
            outcome.status = "changed"
        else:
            outcome.status = "unchanged"
        return outcome

    for number in range(1, report.batches + 1):
        names = [s.server.name for s in report.servers if s.batch == number]
        fleet.each(change, names=names)
        done = [by_name[name] for name in names]
        if on_batch is not None:
            on_batch(number, done)
        if any(s.status == "failed" for s in done):
            report.stopped_at = number
            break
    return report
