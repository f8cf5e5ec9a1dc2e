"""pacsctl's observation commands on fleets: ``logs``, ``assoc``, ``certs show/reload``.

Streams (``logs -f``, ``assoc watch``) are merged into one output whose lines carry
their server; association IDs on a fleet are ``SERVER/ID``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from pacsd.client import Client
from pynetdicom import AE

from tests.conftest import PacsdProcess, console_script, sigint_as_at_a_terminal
from tests.fleet.conftest import StartFleet, by_server, run_fleet_pacsctl, stop
from tests.fleet.test_fleet_cli import table_rows
from tests.security.dicom_tls_peers import make_pki, rotate_server_certificate, tls_config

VERIFICATION = "1.2.840.10008.1.1"


def free_endpoint() -> str:
    """An endpoint nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def instant(text: str) -> tuple[int, int]:
    """An RFC 3339 time as JSON shows it (0 to 9 fraction digits) -> (seconds, nanos)."""
    stamp = Timestamp()
    stamp.FromJsonString(text)
    return stamp.seconds, stamp.nanos


def associate(port: int, calling: str) -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
    assert assoc.is_established
    return assoc


class Follow:
    """A long-running pacsctl whose stdout lines are collected on a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [console_script("pacsctl"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=sigint_as_at_a_terminal,
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def until(
        self, predicate: Callable[[list[str]], bool], poke: Callable[[], object], timeout: float
    ) -> list[str]:
        """``poke()`` until ``predicate(lines)`` holds: a stream is registered by the
        server a little after the call starts, so one poke may come before it."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.snapshot()
            if predicate(lines):
                return lines
            assert self.proc.poll() is None, (lines, self.proc.stderr and self.proc.stderr.read())
            assert time.monotonic() < deadline, lines
            poke()
            for _ in range(25):
                if predicate(self.snapshot()):
                    break
                time.sleep(0.02)

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C, as an operator ends a follow: the exit status and stderr."""
        self.proc.send_signal(signal.SIGINT)
        _, stderr = self.proc.communicate(timeout=15)
        self._thread.join(5)
        return self.proc.returncode, stderr

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def follows() -> Iterator[list[Follow]]:
    started: list[Follow] = []
    yield started
    for follow in started:
        follow.kill()


def toggler(server: PacsdProcess) -> Callable[[], None]:
    """Each call pauses or resumes the server: an audited control call (a record of
    source "control") and, for watches, nothing else."""
    state = {"paused": False}

    def poke() -> None:
        with Client(server.endpoint, timeout=5) as client:
            state["paused"] = not state["paused"]
            (client.server.pause if state["paused"] else client.server.resume)()

    return poke


def test_logs_tail_on_a_fleet_merges_in_time_order(start_fleet: StartFleet) -> None:
    two = start_fleet(2)
    # Interleaved in time (pause 1, pause 2, resume 1, resume 2): printing each
    # server's records as a block would not be in time order.
    clients = [Client(server.endpoint) for server in two]
    try:
        for change in ("pause", "resume"):
            for client in clients:
                getattr(client.server, change)()
    finally:
        for client in clients:
            client.close()
    dead = free_endpoint()
    endpoints = ",".join([two[0].endpoint, two[1].endpoint, dead])

    result = run_fleet_pacsctl(
        "-w", "json", "--endpoints", endpoints, "logs", "--source", "control", "--tail", "5"
    )
    assert result.returncode == 4, result
    items = [json.loads(line) for line in result.stdout.splitlines()]
    records = [item for item in items if "record" in item]
    errors = [item for item in items if "error" in item]
    assert {item["server"] for item in records} == {two[0].endpoint, two[1].endpoint}
    assert all(item["record"]["source"] == "control" for item in records)
    times = [instant(item["record"]["time"]) for item in records]
    assert times == sorted(times)
    audited = [(i["server"], i["record"]["message"].split()[0]) for i in records]
    assert audited == [
        (server.endpoint, f"ServerService.{change}")
        for change in ("PauseServer", "ResumeServer")
        for server in two
    ]
    assert [(e["server"], e["exit_code"], e["error"]["code"]) for e in errors] == [
        (dead, 3, "UNAVAILABLE")
    ]
    assert result.stderr == ""

    text = run_fleet_pacsctl("--endpoints", endpoints, "logs", "--source", "control")
    assert text.returncode == 4, text
    width = len(dead)
    lines = text.stdout.splitlines()
    assert lines and all(
        line[:width].rstrip() in (two[0].endpoint, two[1].endpoint) for line in lines
    )
    assert any("PauseServer" in line for line in lines)
    assert text.stderr.count(f"pacsctl: error: [{dead}] cannot reach pacsd") == 1
    assert "2 of 3 servers succeeded, 0 failed, 1 unreachable" in text.stderr


def test_logs_follow_on_a_fleet_outlives_a_dead_server(
    start_fleet: StartFleet, follows: list[Follow]
) -> None:
    """A server dead from the start and one killed mid-follow are each reported once;
    the remaining server's records keep coming; Ctrl-C then exits 4."""
    one, two = start_fleet(2)
    dead = free_endpoint()
    follow = Follow(
        "-w",
        "json",
        "--endpoints",
        f"{one.endpoint},{two.endpoint},{dead}",
        "logs",
        "-f",
        "--tail",
        "0",
        "--source",
        "control",
    )
    follows.append(follow)

    def records_of(endpoint: str, lines: list[str]) -> list[dict[str, Any]]:
        items = [json.loads(line) for line in lines]
        return [i for i in items if i["server"] == endpoint and "record" in i]

    poke_one, poke_two = toggler(one), toggler(two)
    follow.until(lambda lines: bool(records_of(one.endpoint, lines)), poke_one, 15)
    follow.until(lambda lines: bool(records_of(two.endpoint, lines)), poke_two, 15)

    stop(two, signal.SIGKILL)

    def failed(endpoint: str) -> Callable[[list[str]], bool]:
        return lambda lines: any(
            "error" in item and item["server"] == endpoint for item in map(json.loads, lines)
        )

    follow.until(failed(two.endpoint), lambda: None, 15)
    before = len(records_of(one.endpoint, follow.snapshot()))
    lines = follow.until(lambda lines: len(records_of(one.endpoint, lines)) > before, poke_one, 15)
    status, stderr = follow.interrupt()
    assert status == 4, stderr
    items = [json.loads(line) for line in follow.snapshot()]
    errors = [(i["server"], i["exit_code"], i["error"]["code"]) for i in items if "error" in i]
    assert sorted(errors) == sorted([(dead, 3, "UNAVAILABLE"), (two.endpoint, 3, "UNAVAILABLE")])
    # The survivor's records continued after the other server's failure was reported.
    killed_at = next(n for n, i in enumerate(items) if "error" in i and i["server"] == two.endpoint)
    assert any(i["server"] == one.endpoint and "record" in i for i in items[killed_at:])
    assert all(
        "PauseServer" in r["record"]["message"] or "ResumeServer" in r["record"]["message"]
        for r in records_of(one.endpoint, lines)
    )
    assert stderr == ""


def test_assoc_list_get_abort_on_a_fleet(start_fleet: StartFleet) -> None:
    one, two = start_fleet(2)
    endpoints = f"{one.endpoint},{two.endpoint}"
    assoc = associate(one.dicom_port, "FLEET_SCU")
    try:
        listed = run_fleet_pacsctl("-w", "json", "--endpoints", endpoints, "assoc", "list")
        assert listed.returncode == 0, listed
        servers = by_server(json.loads(listed.stdout))
        assert servers[two.endpoint]["result"]["associations"] == []
        [item] = servers[one.endpoint]["result"]["associations"]
        assert item["calling_ae"] == "FLEET_SCU"
        address = f"{one.endpoint}/{item['id']}"

        table = run_fleet_pacsctl("--endpoints", endpoints, "assoc", "list")
        assert table.returncode == 0, table
        assert [row[:3] for row in table_rows(table.stdout)] == [
            [one.endpoint, address, "FLEET_SCU"]
        ]

        # A bare ID is ambiguous on two servers: a usage error, nothing asked.
        bare = run_fleet_pacsctl("--endpoints", endpoints, "assoc", "get", item["id"])
        assert bare.returncode == 2 and "SERVER/ID" in bare.stderr, bare
        unknown = run_fleet_pacsctl("--endpoints", endpoints, "assoc", "get", f"x:1/{item['id']}")
        assert unknown.returncode == 2 and "no server named 'x:1'" in unknown.stderr, unknown

        got = run_fleet_pacsctl("-w", "json", "--endpoints", endpoints, "assoc", "get", address)
        assert got.returncode == 0, got
        document = json.loads(got.stdout)
        assert list(by_server(document)) == [one.endpoint]  # only that server was asked
        assert document["servers"][0]["result"]["association"]["id"] == item["id"]
        # The same ID on the other server is not live there: that server's NOT_FOUND.
        other = run_fleet_pacsctl(
            "-w", "json", "--endpoints", endpoints, "assoc", "get", f"{two.endpoint}/{item['id']}"
        )
        assert other.returncode == 4, other
        [only] = json.loads(other.stdout)["servers"]
        assert (only["server"], only["error"]["reason"]) == (two.endpoint, "ASSOCIATION_NOT_FOUND")

        aborted = run_fleet_pacsctl("--endpoints", endpoints, "assoc", "abort", address)
        assert aborted.returncode == 0, aborted
        assert table_rows(aborted.stdout)[0][0] == one.endpoint
        assert f"association {item['id']} (FLEET_SCU -> PACSD" in aborted.stdout
        deadline = time.monotonic() + 10
        while not assoc.is_aborted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert assoc.is_aborted
        # One server chosen by the fleet itself: a bare ID is enough.
        single = run_fleet_pacsctl("--endpoints", one.endpoint, "assoc", "get", item["id"])
        assert single.returncode == 4 and "ASSOCIATION_NOT_FOUND" in single.stderr, single
    finally:
        if assoc.is_established:
            assoc.release()


def test_assoc_watch_on_a_fleet_merges_the_events(
    start_fleet: StartFleet, follows: list[Follow]
) -> None:
    one, two = start_fleet(2)
    width = max(len(one.endpoint), len(two.endpoint))
    follow = Follow(
        "--endpoints", f"{one.endpoint},{two.endpoint}", "assoc", "watch", "--lifecycle-only"
    )
    follows.append(follow)

    def accepted(server: PacsdProcess, calling: str) -> Callable[[list[str]], bool]:
        return lambda lines: any(
            line.startswith(server.endpoint) and " ACCEPTED " in line and f" {calling}->" in line
            for line in lines
        )

    follow.until(
        accepted(one, "SCU_ONE"), lambda: associate(one.dicom_port, "SCU_ONE").release(), 15
    )
    follow.until(
        accepted(two, "SCU_TWO"), lambda: associate(two.dicom_port, "SCU_TWO").release(), 15
    )
    status, stderr = follow.interrupt()
    assert status == 0, stderr
    lines = follow.snapshot()
    assert all(line[:width].rstrip() in (one.endpoint, two.endpoint) for line in lines)
    assert not any(" SCU_TWO->" in line for line in lines if line.startswith(one.endpoint))
    assert stderr == ""


def test_certs_show_and_reload_on_a_fleet(start_fleet: StartFleet, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    config = tls_config(tmp_path, pki)
    tls_a, tls_b = start_fleet(2, args=lambda i: ["--config", str(config)])
    (plain,) = start_fleet(1)
    endpoints = f"{tls_a.endpoint},{tls_b.endpoint},{plain.endpoint}"

    shown = run_fleet_pacsctl("--endpoints", endpoints, "certs", "show")
    assert shown.returncode == 0, shown
    rows = table_rows(shown.stdout)
    servers = [row[0] for row in rows if row[2] == "server"]
    assert servers == [tls_a.endpoint, tls_b.endpoint]
    assert {row[5] for row in rows if row[2] == "server"} == {pki.server.fingerprint_sha256}
    assert [plain.endpoint, "-", "(no DICOM TLS listener configured)"] in [r[:3] for r in rows]

    new = rotate_server_certificate(pki, "pacsd-fleet")
    reloaded = run_fleet_pacsctl("-w", "json", "--endpoints", endpoints, "certs", "reload")
    assert reloaded.returncode == 4, reloaded  # the plain server has nothing to reload
    document = by_server(json.loads(reloaded.stdout))
    for server in (tls_a, tls_b):
        leaf = document[server.endpoint]["result"]["tls"]["certificates"][0]
        assert (leaf["subject"], leaf["sha256_fingerprint"]) == (
            "CN=pacsd-fleet",
            new.fingerprint_sha256,
        )
    assert document[plain.endpoint]["error"]["reason"] == "TLS_NOT_CONFIGURED"

    # certs init/issue write local files: they keep refusing fleet options.
    local = run_fleet_pacsctl(
        "--endpoints", endpoints, "certs", "init", "--dir", str(tmp_path / "ca")
    )
    assert local.returncode == 2 and "does not support --endpoints/--fleet" in local.stderr
    assert not (tmp_path / "ca").exists()
