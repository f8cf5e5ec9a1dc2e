"""Entry point of a worker process: ``python -m pacsd.server.workers.child``.

The supervisor writes one line on standard input (role and settings, role.py), reads
one line back on standard output ("ready ...") once the worker serves, and keeps
standard input open for as long as it lives: end of file means the supervisor is
gone (killed, even with SIGKILL), and the worker stops at once rather than serve on
unsupervised. Log records go to the log bus only; the supervisor relays them to the
server's sinks (relay.py), so console and files stay one stream.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from types import FrameType

from pydantic import ValidationError


def main() -> int:
    from pacsd.server import logsetup
    from pacsd.server.config import Settings, describe_validation_error
    from pacsd.server.runtime import Runtime, StartupError
    from pacsd.server.workers.role import decode_start

    _die_with_parent()
    line = sys.stdin.buffer.readline()
    if not line:
        print("pacsd worker: no start document on standard input", file=sys.stderr)
        return 2
    role, raw = decode_start(line)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        print(f"pacsd worker {role.index}: {describe_validation_error(exc)}", file=sys.stderr)
        return 1
    # The first process owns the console, the files and the public metrics endpoint.
    settings.log_console = False
    settings.log_file = None
    settings.log_json_file = None
    if settings.metrics_port is not None:
        # A private endpoint on a free loopback port, which the first process's
        # endpoint reads and adds up (metrics.py).
        settings.metrics_port = 0
        settings.metrics_host = "127.0.0.1"
    settings.dicom_port = role.dicom_port
    logsetup.configure(settings.log_level, settings)
    if role.run_dir:
        from pathlib import Path

        from pacsd.server.workers import balance

        balance.install(balance.Balancer(Path(role.run_dir), role.index, role.processes))
    runtime = Runtime(settings, role=role)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        runtime.request_shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        runtime.start()
    except StartupError as exc:
        print(f"pacsd worker {role.index}: error: {exc}", file=sys.stderr)
        return 1
    metrics = runtime.metrics.port if runtime.metrics is not None else 0
    sys.stdout.write(f"ready worker={role.index} metrics={metrics}\n")
    sys.stdout.flush()
    threading.Thread(
        target=_watch_supervisor, args=(runtime,), name="pacsd-supervisor-watch", daemon=True
    ).start()
    runtime.wait()
    runtime.shutdown()
    return 0


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the supervisor dies.

    A crash of the first process then ends the whole server at once, like a crash of a
    single-process server: nothing acknowledged is lost (acknowledged means durable),
    and a restart right after it finds the DICOM port free instead of held by orphans.
    The stdin watch below covers systems without prctl.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the supervisor died before the call: do what it asked
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _watch_supervisor(runtime: object) -> None:
    """Stop, with no grace period, once standard input ends (the supervisor died)."""
    # os.read, not sys.stdin: a daemon thread blocked in a buffered read makes the
    # interpreter's exit abort (it cannot take the buffer's lock).
    fd = sys.stdin.fileno()
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    runtime.request_shutdown(0.0)  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
