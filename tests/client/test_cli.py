"""``pacsctl`` as a script or an operator meets it: real server, real DCMTK peer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from typing import Any

from tests.conftest import PacsdProcess, console_script, dcmtk, dcmtk_env, run_pacsctl


def echoscu(server: PacsdProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("echoscu"), "-v", "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port)],
        capture_output=True,
        text=True,
        timeout=30,
        env=dcmtk_env(),
    )


def ok(server: PacsdProcess | str, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_pacsctl(server, *args)
    assert result.returncode == 0, result
    assert result.stderr == "", result
    return result


def server_json(server: PacsdProcess) -> dict[str, Any]:
    document = json.loads(ok(server, "-w", "json", "server", "get").stdout)
    assert set(document) == {"server"}
    described: dict[str, Any] = document["server"]
    return described


def closed_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_json_counters_rise_after_c_echo(pacsd: PacsdProcess) -> None:
    before = server_json(pacsd)
    assert before["state"] == "SERVER_STATE_RUNNING"
    assert before["api_version"] == "v1"
    accepted = before["counters"]["associations_accepted"]
    assert type(accepted) is int

    for _ in range(2):
        result = echoscu(pacsd)
        assert result.returncode == 0, result

    deadline = time.monotonic() + 5
    while True:
        counters = server_json(pacsd)["counters"]
        if counters["associations_accepted"] == accepted + 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counters["associations_accepted"] == accepted + 2
    assert type(counters["dimse_messages_received"]) is int
    assert counters["dimse_messages_received"] >= 2


def test_status_is_server_get(pacsd: PacsdProcess) -> None:
    via_alias = json.loads(ok(pacsd, "-w", "json", "status").stdout)["server"]
    direct = server_json(pacsd)
    for key in ("version", "api_version", "state", "pid", "start_time", "listeners", "data_dir"):
        assert via_alias[key] == direct[key], key


def test_table_output_is_readable(pacsd: PacsdProcess) -> None:
    out = ok(pacsd, "server", "get").stdout
    assert "STATE" in out
    assert "RUNNING" in out
    assert "SERVER_STATE_" not in out
    assert "LISTENERS" in out
    assert str(pacsd.dicom_port) in out
    assert str(pacsd.control_port) in out
    assert "0 accepted / 0 rejected / 0 aborted" in out
    assert ok(pacsd, "status").stdout.splitlines()[:3] == out.splitlines()[:3]


def test_pause_rejects_echoscu_and_resume_lets_it_in(pacsd: PacsdProcess) -> None:
    assert ok(pacsd, "server", "pause").stdout.strip() == "server paused"
    assert ok(pacsd, "server", "pause").stdout.strip() == "server already paused (no change)"

    rejected = echoscu(pacsd)
    assert rejected.returncode != 0
    assert "rejected" in (rejected.stdout + rejected.stderr).lower(), rejected

    assert ok(pacsd, "server", "resume").stdout.strip() == "server resumed"
    accepted = echoscu(pacsd)
    assert accepted.returncode == 0, accepted
    assert server_json(pacsd)["counters"]["associations_rejected"] == 1


def test_changes_in_json(pacsd: PacsdProcess) -> None:
    paused = json.loads(ok(pacsd, "-w", "json", "server", "pause").stdout)
    assert paused["changed"] is True
    assert paused["server"]["state"] == "SERVER_STATE_PAUSED"
    again = json.loads(ok(pacsd, "-w", "json", "server", "pause").stdout)
    assert again["changed"] is False

    stopped = json.loads(ok(pacsd, "-w", "json", "server", "stop", "--grace", "0").stdout)
    assert stopped["changed"] is True
    assert stopped["server"]["state"] == "SERVER_STATE_STOPPED"
    dicom = next(x for x in stopped["server"]["listeners"] if x["protocol"] == "dicom")
    assert dicom["listening"] is False

    started = json.loads(ok(pacsd, "-w", "json", "server", "start").stdout)
    assert started == {"server": started["server"], "changed": True}
    assert started["server"]["state"] == "SERVER_STATE_RUNNING"
    assert echoscu(pacsd).returncode == 0


def test_unreachable_server_exits_3() -> None:
    endpoint = closed_endpoint()
    result = run_pacsctl(endpoint, "status")
    assert result.returncode == 3
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pacsctl: error: ")
    assert endpoint in lines[0]
    assert lines[0].endswith("(UNAVAILABLE)")
    assert "Traceback" not in result.stderr

    as_json = run_pacsctl(endpoint, "-w", "json", "server", "pause")
    assert as_json.returncode == 3
    assert as_json.stdout == ""
    error = json.loads(as_json.stderr)["error"]
    assert error["code"] == "UNAVAILABLE"
    assert error["reason"] == ""


def test_deadline_while_connecting_exits_3() -> None:
    with socket.socket() as mute:  # accepts TCP, never answers HTTP/2
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        result = run_pacsctl(f"127.0.0.1:{mute.getsockname()[1]}", "--timeout", "1", "status")
    assert result.returncode == 3, result
    assert result.stdout == ""
    assert result.stderr.strip().endswith("(DEADLINE_EXCEEDED)")


def test_usage_errors_exit_2(pacsd: PacsdProcess) -> None:
    for args in (
        ("no-such-command",),
        ("server", "stop", "--grace", "-1"),
        ("server", "stop", "--grace", "nan"),
        ("--timeout", "0", "status"),
        ("-w", "yaml", "status"),
        ("-e", "", "status"),
    ):
        result = run_pacsctl(pacsd, *args)
        assert result.returncode == 2, (args, result)
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
    assert server_json(pacsd)["state"] == "SERVER_STATE_RUNNING"


def test_health_exit_status_follows_the_listener(pacsd: PacsdProcess) -> None:
    assert ok(pacsd, "health").stdout.strip() == "SERVING"
    serving = json.loads(ok(pacsd, "-w", "json", "health", "--service", "pacsd.dicom").stdout)
    assert serving == {"status": "SERVING", "service": "pacsd.dicom"}

    ok(pacsd, "server", "pause")
    paused = run_pacsctl(pacsd, "health", "--service", "pacsd.dicom")
    assert paused.returncode == 1
    assert paused.stdout.strip() == "NOT_SERVING"
    assert ok(pacsd, "health").stdout.strip() == "SERVING"

    unknown = run_pacsctl(pacsd, "-w", "json", "health", "--service", "no.such")
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout)["status"] == "SERVICE_UNKNOWN"


def test_resume_while_stopped_reports_json_error_on_stderr(pacsd: PacsdProcess) -> None:
    ok(pacsd, "server", "stop", "--grace", "0")

    result = run_pacsctl(pacsd, "-w", "json", "server", "resume")
    assert result.returncode == 1
    assert result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "FAILED_PRECONDITION"
    assert error["reason"] == "SERVER_STOPPED"
    assert error["message"]
    assert error["metadata"] == {}

    text = run_pacsctl(pacsd, "server", "resume")
    assert text.returncode == 1
    assert text.stdout == ""
    assert len(text.stderr.splitlines()) == 1
    assert text.stderr.startswith("pacsctl: error: ")
    assert text.stderr.strip().endswith("(FAILED_PRECONDITION/SERVER_STOPPED)")


def test_taken_dicom_port_is_a_server_error_not_unreachable(pacsd: PacsdProcess) -> None:
    ok(pacsd, "server", "stop", "--grace", "0")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", pacsd.dicom_port))
        squatter.listen(1)
        result = run_pacsctl(pacsd, "-w", "json", "server", "start")
    assert result.returncode == 1, result
    assert result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "UNAVAILABLE"
    assert error["reason"] == "DICOM_PORT_IN_USE"
    assert error["metadata"]["port"] == str(pacsd.dicom_port)


def test_shutdown_ends_the_server(pacsd: PacsdProcess) -> None:
    assert ok(pacsd, "shutdown", "--grace", "0").stdout.strip() == "shutdown requested"
    assert pacsd.wait(timeout=30) == 0
    after = run_pacsctl(pacsd, "status")
    assert after.returncode == 3


def test_endpoint_from_the_environment(pacsd: PacsdProcess) -> None:
    env = {**os.environ, "PACSCTL_ENDPOINT": pacsd.endpoint}
    result = subprocess.run(
        [console_script("pacsctl"), "-w", "json", "status"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["server"]["pid"] == pacsd.proc.pid
