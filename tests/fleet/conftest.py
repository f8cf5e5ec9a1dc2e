"""Fleets of real pacsd processes on free ports, started in parallel.

``tests/conftest.py`` starts one server at a time; five in a row would cost five
interpreter start-ups back to back, so here every process is launched first and their
``listening`` lines are read afterwards, which overlaps the start-ups.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LISTENING, PacsdProcess, console_script

#: The labels the five-server fleet gets, by position: two sites, CT and MR groups.
LABELS = [
    {"site": "north", "role": "ct"},
    {"site": "north", "role": "ct"},
    {"site": "north", "role": "mr"},
    {"site": "south", "role": "ct"},
    {"site": "south", "role": "mr"},
]

StartFleet = Callable[..., list[PacsdProcess]]


def _launch(folder: Path, args: Sequence[str]) -> PacsdProcess:
    folder.mkdir(parents=True, exist_ok=True)
    stderr_path = folder / "pacsd.stderr"
    data_dir = folder / "data"
    cmd = [
        console_script("pacsd"),
        "serve",
        "--dicom-port",
        "0",
        "--control-port",
        "0",
        "--data-dir",
        str(data_dir),
        *args,
    ]
    with stderr_path.open("w") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            # Fleets of one engine process each, bucket folders made on demand: these
            # tests are about the fleet.
            env={**os.environ, "PACSD_WORKERS": "1", "PACSD_PREPARE_BUCKETS": "0"},
        )
    return PacsdProcess(proc, data_dir, stderr_path)


def _wait_listening(server: PacsdProcess) -> None:
    assert server.proc.stdout is not None
    # readline blocks until the line or EOF (the process died); pytest-timeout bounds it.
    line = server.proc.stdout.readline().strip()
    match = LISTENING.match(line)
    if not match:
        server.proc.kill()
        server.proc.wait()
        pytest.fail(f"pacsd did not start: stdout={line!r} stderr={server.stderr()}")
    server.dicom_host = match["dhost"]
    server.dicom_port = int(match["dport"])
    server.control_port = int(match["cport"])


def stop(server: PacsdProcess, signum: int = signal.SIGTERM) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signum)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def start_fleet(tmp_path: Path) -> Iterator[StartFleet]:
    """Factory: ``start_fleet(5, args=lambda i: [...])`` -> running servers, in order.

    ``args`` gives the extra ``pacsd serve`` arguments of server ``i`` (0-based).
    """
    started: list[PacsdProcess] = []

    def start(
        count: int, args: Callable[[int], Sequence[str]] = lambda i: ()
    ) -> list[PacsdProcess]:
        servers = [_launch(tmp_path / f"pacs{len(started) + i + 1}", args(i)) for i in range(count)]
        started.extend(servers)
        for server in servers:
            _wait_listening(server)
        return servers

    yield start
    # Signal them all first, then wait: their shutdowns overlap.
    for server in started:
        if server.proc.poll() is None:
            server.proc.terminate()
    for server in started:
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def five(start_fleet: StartFleet) -> list[PacsdProcess]:
    """Five pacsd servers with default add-ins."""
    return start_fleet(5)


def write_inventory(
    path: Path,
    servers: Sequence[PacsdProcess | str],
    labels: Sequence[dict[str, str]] = LABELS,
    extra: str = "",
) -> Path:
    """A fleet.toml naming the servers pacs1..pacsN, with ``labels`` by position."""
    blocks = []
    for index, server in enumerate(servers):
        endpoint = server if isinstance(server, str) else server.endpoint
        pairs = ", ".join(f'{k} = "{v}"' for k, v in labels[index % len(labels)].items())
        blocks.append(
            f'[[servers]]\nname = "pacs{index + 1}"\nendpoint = "{endpoint}"\n'
            f"labels = {{ {pairs} }}\n"
        )
    path.write_text(extra + "\n".join(blocks))
    return path


def run_fleet_pacsctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """pacsctl with exactly the arguments given (no -e added)."""
    return subprocess.run(
        [console_script("pacsctl"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def by_server(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A fleet JSON document's per-server objects, keyed by server name."""
    return {item["server"]: item for item in document["servers"]}
