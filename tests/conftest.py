"""Shared fixtures: real pacsd processes on free ports, and the DCMTK tools.

Every integration test talks to a real ``pacsd serve`` subprocess over loopback. DCMTK
is required: a missing tool fails the test (CI must install it), it is never skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest_plugins = ["pacsd.addin.testing"]

BIN_DIR = Path(sys.executable).parent
LISTENING = re.compile(
    r"^listening dicom=(?P<dhost>\S+):(?P<dport>\d+) control=(?P<chost>\S+):(?P<cport>\d+)$"
)


def sigint_as_at_a_terminal() -> None:
    """``preexec_fn`` for a command a test stops with SIGINT, as an operator's Ctrl-C.

    A shell without job control starts background commands with SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler: run from such a shell (nohup ...
    &), the suite would wait for commands that never see the signal.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def console_script(name: str) -> str:
    """The console script installed beside this interpreter (the package under test)."""
    path = BIN_DIR / name
    if not path.exists():
        pytest.fail(f"{name} is not installed beside {sys.executable}; run pip install -e .[test]")
    return str(path)


def dcmtk(tool: str) -> str:
    # pynetdicom installs its own echoscu/storescu beside the interpreter; skip that folder.
    search = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN_DIR
    )
    path = shutil.which(tool, path=search)
    if path is None:
        pytest.fail(f"DCMTK's {tool} is required (apt-get install dcmtk); tests never skip it")
    return path


def dcmtk_env() -> dict[str, str]:
    # Debian's DCMTK keeps Nagle on unless told otherwise.
    return {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class PacsdProcess:
    proc: subprocess.Popen[str]
    data_dir: Path
    stderr_path: Path
    dicom_host: str = ""
    dicom_port: int = 0
    control_port: int = 0
    ae_title: str = "PACSD"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.control_port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """The log once it holds ``text``.

        A peer can see a refusal before the server has logged why (the alert goes out
        first), so a line that follows a peer's exit is waited for, not read at once.
        """
        deadline = time.monotonic() + timeout
        log = self.stderr()
        while text not in log and time.monotonic() < deadline:
            time.sleep(0.05)
            log = self.stderr()
        assert text in log, f"{text!r} not logged within {timeout}s"
        return log

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)


def _start(
    tmp_path: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    ae_title: str = "PACSD",
    timeout: float = 20,
) -> PacsdProcess:
    n = len(list(tmp_path.glob("pacsd-*.stderr")))
    data_dir = tmp_path / f"data{n}"
    if "--data-dir" in args:  # a later flag wins, so the caller's choice is the one used
        data_dir = Path(args[list(args).index("--data-dir") + 1])
    stderr_path = tmp_path / f"pacsd-{n}.stderr"
    cmd = [
        console_script("pacsd"),
        "serve",
        "--dicom-port",
        "0",
        "--control-port",
        "0",
        "--data-dir",
        str(data_dir),
        "--ae-title",
        ae_title,
        *args,
    ]
    with stderr_path.open("w") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            # One engine process unless a test asks for more (tests/workers/): the
            # default follows the CPUs, and most tests count on one process's view.
            # Bucket folders made as instances arrive, unless a test asks (it costs a
            # fresh server ~0.3 s of CPU, hundreds of times over the suite).
            env={
                **os.environ,
                "PACSD_WORKERS": "1",
                "PACSD_PREPARE_BUCKETS": "0",
                **(env or {}),
            },
        )
    server = PacsdProcess(proc, data_dir, stderr_path, ae_title=ae_title)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline().strip()
        if line or proc.poll() is not None:
            break
    match = LISTENING.match(line)
    if not match:
        proc.kill()
        proc.wait()
        pytest.fail(f"pacsd did not start: stdout={line!r} stderr={server.stderr()}")
    server.dicom_host = match["dhost"]
    server.dicom_port = int(match["dport"])
    server.control_port = int(match["cport"])
    return server


@pytest.fixture
def start_pacsd(tmp_path: Path) -> Iterator[object]:
    """Factory: ``start_pacsd(args=[...], env={...})`` -> a running PacsdProcess."""
    started: list[PacsdProcess] = []

    def start(
        args: Sequence[str] = (), env: dict[str, str] | None = None, **kw: object
    ) -> PacsdProcess:
        server = _start(tmp_path, args, env, **kw)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.terminate()
            try:
                server.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()


@pytest.fixture
def pacsd(start_pacsd: object) -> PacsdProcess:
    """One running pacsd with default add-ins, on free ports."""
    return start_pacsd()  # type: ignore[operator,no-any-return]


def run_pacsctl(
    server: PacsdProcess | str, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    endpoint = server if isinstance(server, str) else server.endpoint
    return subprocess.run(
        [console_script("pacsctl"), "-e", endpoint, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def pacsd_no_storage(start_pacsd: object, tmp_path: Path) -> PacsdProcess:
    """A pacsd without the built-in storage and query_retrieve add-ins, so test add-ins
    may claim storage and Q/R SOP classes without a routing conflict."""
    config = tmp_path / "no-storage.toml"
    config.write_text(
        "[addins.storage]\nenabled = false\n[addins.query_retrieve]\nenabled = false\n"
    )
    return start_pacsd(["--config", str(config)])  # type: ignore[operator,no-any-return]
