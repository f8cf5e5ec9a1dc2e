"""The supervisor: runs workers 1 .. workers-1 beside the first process.

Each worker is ``python -m pacsd.server.workers.child`` in its own session (a Ctrl-C
on the terminal reaches the first process, which stops the workers in order). A worker
that exits without being asked to is restarted after a short delay that grows while
restarts keep failing; before it serves again it is brought to the current state
(sync.py). Its spool files (named after its PID) are removed first: the upload they
held was never acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from pacsd.admin.v1 import server_pb2, server_pb2_grpc
from pacsd.server.workers import balance
from pacsd.server.workers.relay import Relay
from pacsd.server.workers.role import WorkerRole, encode_start

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime

log = logging.getLogger("pacsd.core.workers")

T = TypeVar("T")

#: Seconds before restart attempt 1, 2, ... (the last repeats) of a worker that died.
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: A worker that served this long has its restart delay reset.
STABLE_SECONDS = 60.0
#: Seconds a worker may take to start serving.
START_TIMEOUT = 60.0
#: Seconds a replicated call may take on one worker (an unload drains associations).
CALL_TIMEOUT = 120.0


class WorkerStartError(Exception):
    """A worker did not start; the message is the line operators see."""


class WorkerState(StrEnum):
    STARTING = "starting"
    SERVING = "serving"
    RESTARTING = "restarting"
    STOPPED = "stopped"


@dataclass(frozen=True)
class WorkerStatus:
    index: int
    pid: int
    state: WorkerState
    restarts: int
    started_at: datetime | None


class WorkerProcess:
    """One worker: its process, its control channel and its relays."""

    def __init__(self, role: WorkerRole) -> None:
        self.role = role
        self.index = role.index
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = WorkerState.STARTING
        self.restarts = 0
        self.started_at: datetime | None = None
        self.channel: grpc.Channel | None = None
        self.relay: Relay | None = None
        #: The worker's private metrics endpoint on loopback (0: metrics are off).
        self.metrics_port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def spawn(self, settings: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pacsd.server.workers.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode_start(self.role, settings))
        self.proc.stdin.flush()  # stdin stays open: its end tells the worker we died

    def wait_ready(self, timeout: float) -> None:
        """Wait for the worker's "ready" line, then for its control channel."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        line = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline()
                break
            if proc.poll() is not None:
                break
        if not line.startswith(b"ready"):
            code = proc.poll()
            if code is None:
                proc.kill()
                proc.wait()
                why = f"did not start within {timeout:.0f}s"
            else:
                why = f"exited with status {code} while starting (its error is logged above)"
            raise WorkerStartError(f"worker {self.index} {why}")
        proc.stdout.close()  # nothing more comes on it
        fields = dict(part.split("=", 1) for part in line.decode().split()[1:] if "=" in part)
        self.metrics_port = int(fields.get("metrics", "0"))
        self.channel = grpc.insecure_channel(self.role.control_address)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=10)
        except grpc.FutureTimeoutError as exc:
            raise WorkerStartError(f"worker {self.index}'s control socket does not answer") from exc
        self.started_at = datetime.now(UTC)

    def call(self, method: str, payload: bytes, timeout: float = CALL_TIMEOUT) -> bytes:
        """A unary call on the worker, with a serialized request (replication)."""
        assert self.channel is not None
        result: bytes = self.channel.unary_unary(method)(payload, timeout=timeout)
        return result

    def close(self) -> None:
        if self.relay is not None:
            self.relay.stop()
            self.relay = None
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class Supervisor:
    def __init__(self, runtime: Runtime, dicom_port: int, tls_port: int | None) -> None:
        self._rt = runtime
        #: Private folder of the workers' control sockets (mkdtemp: mode 0700).
        self.run_dir = Path(tempfile.mkdtemp(prefix="pacsd-"))
        processes = runtime.settings.workers
        self.workers = [
            WorkerProcess(
                WorkerRole(
                    i,
                    f"unix:{self.run_dir / f'w{i}.sock'}",
                    dicom_port,
                    tls_port,
                    run_dir=str(self.run_dir),
                    processes=processes,
                )
            )
            for i in range(1, processes)
        ]
        # This process is number 0 on the load board the workers share (balance.py).
        balance.create_board(self.run_dir, processes)
        balance.install(balance.Balancer(self.run_dir, 0, processes))
        #: Serialises state changes (replication.py) with worker (re)starts (sync.py).
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._monitors: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker and wait until each serves; raises WorkerStartError."""
        settings = self._settings_document()
        for worker in self.workers:
            worker.spawn(settings)
        deadline = time.monotonic() + START_TIMEOUT
        for worker in self.workers:
            worker.wait_ready(max(1.0, deadline - time.monotonic()))
            self._serving(worker)
        log.info(
            "%d worker process(es) share the DICOM port: %s",
            len(self.workers),
            ", ".join(f"{w.index} (pid {w.pid})" for w in self.workers),
        )

    def watch(self) -> None:
        """Start restarting workers that die (once the server is up)."""
        for worker in self.workers:
            thread = threading.Thread(
                target=self._monitor,
                args=(worker,),
                name=f"pacsd-worker-{worker.index}",
                daemon=True,
            )
            thread.start()
            self._monitors.append(thread)

    def stop(self, grace_period: float) -> None:
        """Shut every worker down with ``grace_period`` for its associations."""
        self._stopping.set()
        grace = duration_pb2.Duration()
        grace.FromNanoseconds(int(grace_period * 1e9))
        for worker in self.workers:
            if worker.channel is None or worker.proc is None or worker.proc.poll() is not None:
                continue
            try:
                server_pb2_grpc.ServerServiceStub(worker.channel).Shutdown(
                    server_pb2.ShutdownRequest(grace_period=grace), timeout=5
                )
            except grpc.RpcError:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.terminate()
        deadline = time.monotonic() + grace_period + 15
        for worker in self.workers:
            if worker.proc is None:
                continue
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in time; killing it", worker.index)
                worker.kill()
                worker.proc.wait()
            worker.state = WorkerState.STOPPED
            worker.close()
        for thread in self._monitors:
            thread.join(5)
        balance.install(None)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- what the control plane uses --------------------------------------------------

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Held while a state change is applied and replicated (replication.py)."""
        with self._lock:
            yield

    def replicate(self, method: str, payload: bytes) -> None:
        """Send a call the first process applied to every serving worker. A worker that
        fails it is killed: its restart brings it to the current state."""
        for worker in self.serving():
            try:
                worker.call(method, payload)
            except grpc.RpcError as exc:
                log.error(
                    "worker %d (pid %d) did not apply %s: %s; restarting it",
                    worker.index,
                    worker.pid,
                    method.rsplit("/", 1)[-1],
                    exc.details() if hasattr(exc, "details") else exc,
                )
                worker.kill()

    def serving(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.state is WorkerState.SERVING]

    def each(self, call: Callable[[WorkerProcess], T]) -> list[tuple[WorkerProcess, T]]:
        """``call`` on every serving worker; workers that fail it are left out (they are
        restarting or about to be)."""
        results = []
        for worker in self.serving():
            try:
                results.append((worker, call(worker)))
            except grpc.RpcError as exc:
                log.debug("worker %d did not answer: %s", worker.index, exc)
        return results

    def find(self, assoc_id: str) -> WorkerProcess | None:
        """The worker an association ID belongs to ("w2.a7" -> worker 2)."""
        for worker in self.workers:
            if assoc_id.startswith(worker.role.assoc_prefix):
                return worker
        return None

    def statuses(self) -> list[WorkerStatus]:
        return [
            WorkerStatus(w.index, w.pid, w.state, w.restarts, w.started_at) for w in self.workers
        ]

    # -- internals --------------------------------------------------------------------

    def _settings_document(self) -> dict[str, Any]:
        """The settings in force now (runtime changes included) for a new worker."""
        document: dict[str, Any] = self._rt.settings.model_dump(mode="json")
        return document

    def _serving(self, worker: WorkerProcess) -> None:
        assert worker.channel is not None
        worker.relay = Relay(self._rt, worker.index, worker.pid, worker.channel)
        worker.relay.start()
        worker.state = WorkerState.SERVING

    def _monitor(self, worker: WorkerProcess) -> None:
        failures = 0
        while not self._stopping.is_set():
            proc = worker.proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            lived = (
                (datetime.now(UTC) - worker.started_at).total_seconds()
                if worker.started_at
                else 0.0
            )
            if lived >= STABLE_SECONDS:
                failures = 0
            with self._lock:
                worker.state = WorkerState.RESTARTING
                worker.close()
            log.error(
                "worker %d (pid %d) exited with status %s; restarting it",
                worker.index,
                proc.pid,
                code,
            )
            _remove_spool_files(self._rt.settings.data_dir / "tmp", proc.pid)
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            if self._stopping.wait(delay):
                return
            self._restart(worker)
            if worker.state is not WorkerState.SERVING:
                failures += 1

    def _restart(self, worker: WorkerProcess) -> None:
        from pacsd.server.workers.sync import SyncError, bring_up_to_date

        with self._lock:
            if self._stopping.is_set():
                return
            try:
                worker.spawn(self._settings_document())
                worker.wait_ready(START_TIMEOUT)
                bring_up_to_date(self._rt, worker)
            except (WorkerStartError, SyncError, grpc.RpcError, OSError) as exc:
                log.error("worker %d could not be restarted: %s", worker.index, exc)
                worker.kill()
                return
            worker.restarts += 1
            self._serving(worker)
        log.warning("worker %d restarted (pid %d)", worker.index, worker.pid)


def _remove_spool_files(spool_dir: Path, pid: int) -> None:
    """Drop the half-received instances of a dead worker (never acknowledged)."""
    for leftover in spool_dir.glob(f"*-{pid}-*.part"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            log.info("removed %s, left by worker pid %d", leftover.name, pid)
