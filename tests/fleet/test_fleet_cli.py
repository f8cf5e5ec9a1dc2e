"""``pacsctl --endpoints / --fleet / --selector``: every command on many servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from pacsd.client import Fleet
from pacsd.client.cli.main import cli

from tests.conftest import PacsdProcess, console_script
from tests.fleet.conftest import (
    StartFleet,
    by_server,
    run_fleet_pacsctl,
    stop,
    write_inventory,
)


def table_rows(out: str) -> list[list[str]]:
    """The data rows of a boxed table (header and rules dropped)."""
    lines = [line for line in out.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_status_table_and_json_per_server(five: list[PacsdProcess], tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "fleet.toml", five)
    result = run_fleet_pacsctl("--fleet", str(inventory), "status")
    assert result.returncode == 0, result
    assert result.stderr == ""
    header = result.stdout.splitlines()[1]
    assert [c.strip() for c in header.strip("|").split("|")][:2] == ["SERVER", "STATE"]
    rows = table_rows(result.stdout)
    assert [row[0] for row in rows] == ["pacs1", "pacs2", "pacs3", "pacs4", "pacs5"]
    assert {row[1] for row in rows} == {"RUNNING"}
    assert [row[-1] for row in rows] == [f"127.0.0.1:{s.dicom_port}" for s in five]

    # JSON: one object per server (here the two a selector picks).
    result = run_fleet_pacsctl(
        "-w", "json", "--fleet", str(inventory), "--selector", "site=north,role=ct", "status"
    )
    assert result.returncode == 0, result
    document = json.loads(result.stdout)
    assert document["summary"] == {"servers": 2, "succeeded": 2, "failed": 0, "unreachable": 0}
    servers = by_server(document)
    assert list(servers) == ["pacs1", "pacs2"]
    for name, server in zip(("pacs1", "pacs2"), five[:2], strict=True):
        item = servers[name]
        assert item["ok"] is True and item["exit_code"] == 0 and item["error"] is None
        assert item["endpoint"] == server.endpoint
        # "result" is exactly what the single-server command prints.
        assert item["result"]["server"]["pid"] == server.proc.pid


def test_changes_and_lists_on_endpoints(start_fleet: StartFleet) -> None:
    three = start_fleet(3)
    endpoints = ",".join(s.endpoint for s in three)
    added = run_fleet_pacsctl(
        "--endpoints", endpoints, "ae", "add", "ARCHIVE", "10.0.0.5", "104", "--description", "lt"
    )
    assert added.returncode == 0, added
    assert [row[1] for row in table_rows(added.stdout)] == [
        "AE title ARCHIVE added (10.0.0.5:104)"
    ] * 3

    listed = run_fleet_pacsctl("--endpoints", endpoints, "ae", "list")
    assert table_rows(listed.stdout) == [
        [s.endpoint, "ARCHIVE", "10.0.0.5", "104", "lt"] for s in three
    ]

    addins = run_fleet_pacsctl("-w", "json", "--endpoints", endpoints, "addin", "list")
    for item in json.loads(addins.stdout)["servers"]:
        names = {a["name"] for a in item["result"]["addins"]}
        assert {"storage", "verification"} <= names

    paused = run_fleet_pacsctl("--endpoints", endpoints, "server", "pause")
    assert [row[1:] for row in table_rows(paused.stdout)] == [["server paused", "PAUSED"]] * 3
    # health exits 1 per server when not SERVING: with a fleet that is "some failed", 4.
    health = run_fleet_pacsctl("--endpoints", endpoints, "health", "--service", "pacsd.dicom")
    assert health.returncode == 4, health
    assert {row[1] for row in table_rows(health.stdout)} == {"NOT_SERVING"}
    assert "0 of 3 servers succeeded" in health.stderr


def test_dead_server_exit_4_and_none_reachable_exit_3(
    five: list[PacsdProcess], tmp_path: Path
) -> None:
    inventory = write_inventory(tmp_path / "fleet.toml", five)
    stop(five[1], signal.SIGKILL)
    result = run_fleet_pacsctl("-w", "json", "--fleet", str(inventory), "status")
    assert result.returncode == 4, result
    document = json.loads(result.stdout)
    assert document["summary"] == {"servers": 5, "succeeded": 4, "failed": 1, "unreachable": 1}
    dead = by_server(document)["pacs2"]
    assert dead["ok"] is False and dead["exit_code"] == 3 and dead["result"] is None
    assert dead["error"]["code"] == "UNAVAILABLE"
    assert all(by_server(document)[f"pacs{i}"]["ok"] for i in (1, 3, 4, 5))
    assert result.stderr == ""  # with -w json everything is in the document

    table = run_fleet_pacsctl("--fleet", str(inventory), "status")
    assert table.returncode == 4
    assert [row[0] for row in table_rows(table.stdout)] == ["pacs1", "pacs3", "pacs4", "pacs5"]
    assert f"pacsctl: error: [pacs2] cannot reach pacsd at {five[1].endpoint}" in table.stderr
    assert "4 of 5 servers succeeded, 0 failed, 1 unreachable" in table.stderr

    only_dead = run_fleet_pacsctl("--fleet", str(inventory), "--selector", "name=pacs2", "status")
    assert only_dead.returncode == 3, only_dead
    assert only_dead.stdout == ""


def test_fleet_usage_errors_exit_2(tmp_path: Path) -> None:
    """Nothing is sent: these fail before any server is contacted (none runs here)."""
    one = "127.0.0.1:1"
    inventory = write_inventory(tmp_path / "fleet.toml", [one, "127.0.0.1:2"])
    broken = tmp_path / "broken.toml"
    broken.write_text('[[servers]]\nendpoint = "a:1"\nlabelz = {}\n')
    cases = [
        (("--endpoints", one, "-e", one, "status"), "not both"),
        (("--endpoints", one, "--fleet", str(inventory), "status"), "not both"),
        (("--selector", "site=north", "status"), "--selector needs --fleet"),
        (("--endpoints", one, "--selector", "a=b", "status"), "needs --fleet"),
        (("--fleet", str(inventory), "--selector", "site=west", "status"), "matches"),
        (("--fleet", str(inventory), "--selector", "site in (", "status"), "unbalanced"),
        (("--fleet", str(broken), "status"), "labelz"),
        (("--fleet", str(tmp_path / "missing.toml"), "status"), "cannot read inventory"),
        (("--endpoints", f"{one},,", "status"), "empty endpoint"),
        (("--endpoints", one, "ae", "update", "X"), "at least one of"),
        (("--endpoints", one, "addin", "settings", "x", "--set", "novalue"), "KEY=VALUE"),
    ]
    for args, message in cases:
        result = run_fleet_pacsctl(*args)
        assert result.returncode == 2, (args, result)
        assert message in result.stderr, (args, result.stderr)
        assert result.stdout == ""
    # A usage error found per server is reported once, with the command's own usage line.
    result = run_fleet_pacsctl("--endpoints", f"{one},127.0.0.1:2", "ae", "update", "X")
    assert result.stderr.count("Error:") == 1
    assert "Usage: pacsctl ae update [OPTIONS] AE_TITLE" in result.stderr


def test_inventory_from_the_environment(start_fleet: StartFleet, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "fleet.toml", start_fleet(2))
    env = {**os.environ, "PACSCTL_FLEET": str(inventory), "PACSCTL_SELECTOR": "name=pacs2"}
    result = subprocess.run(
        [console_script("pacsctl"), "health"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result
    assert table_rows(result.stdout) == [["pacs2", "SERVING"]]


def test_timeout_from_the_inventory_unless_given(pacsd: PacsdProcess, tmp_path: Path) -> None:
    """A server that accepts TCP but never answers costs its deadline: the inventory's
    ``defaults.timeout``, unless --timeout is given."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        inventory = write_inventory(
            tmp_path / "fleet.toml", [pacsd, endpoint], extra="[defaults]\ntimeout = 0.5\n"
        )
        start = time.monotonic()
        quick = run_fleet_pacsctl("-w", "json", "--fleet", str(inventory), "status")
        quick_seconds = time.monotonic() - start
        start = time.monotonic()
        slow = run_fleet_pacsctl(
            "-w", "json", "--timeout", "2.5", "--fleet", str(inventory), "status"
        )
        slow_seconds = time.monotonic() - start
    for result in (quick, slow):
        assert result.returncode == 4, result
        item = by_server(json.loads(result.stdout))["pacs2"]
        assert item["exit_code"] == 3 and item["error"]["code"] == "DEADLINE_EXCEEDED"
    assert quick_seconds < 2.0, quick_seconds
    assert slow_seconds >= 2.5, slow_seconds


def test_a_refused_command_opens_no_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Usage errors found per server come before any connection: grpcio can hang at
    interpreter exit on a channel whose connectivity thread was still starting (this
    hung about one run in five before clients were opened lazily)."""
    opened: list[str] = []
    monkeypatch.setattr(Fleet, "client", lambda self, name: opened.append(name))
    runner = CliRunner()
    for args in (
        ["--endpoints", "127.0.0.1:1,127.0.0.1:2", "addin", "settings", "x", "--set", "bad"],
        ["--endpoints", "127.0.0.1:1", "ae", "update", "X"],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
    assert opened == []


def test_commands_without_a_fleet_table_still_get_a_server_column() -> None:
    """Commands added later (log-level, say) have no renderer of their own: their
    single-server tables are merged under a SERVER column; other text is sectioned."""
    from pacsd.client.cli import render
    from pacsd.client.cli.fleet import Outcome, _generic
    from pacsd.client.inventory import FleetServer

    def outcome(name: str, text: str) -> Outcome:
        return Outcome(FleetServer(name, f"{name}:1"), document={}, text=text)

    levels = render.table([["(default)", "INFO"], ["control", "AUDIT"]], header=["SOURCE", "LEVEL"])
    merged = _generic([outcome("a", levels), outcome("b", levels)])
    assert table_rows(merged) == [
        ["a", "(default)", "INFO"],
        ["a", "control", "AUDIT"],
        ["b", "(default)", "INFO"],
        ["b", "control", "AUDIT"],
    ]
    assert merged.splitlines()[1].split("|")[1].strip() == "SERVER"

    pairs = render.table([["folder", "/x"], ["max_bytes", "10"]])
    assert table_rows(_generic([outcome("a", pairs)])) == [
        ["a", "folder", "/x"],
        ["a", "max_bytes", "10"],
    ]
    odd = render.table([["x | y", "1"]])  # a cell holding the separator: not parsed
    assert _generic([outcome("a", odd)]).startswith("== a (a:1)\n")
    mixed = _generic([outcome("a", levels), outcome("b", "line one\nline two")])
    assert mixed.startswith("== a (a:1)\n") and "== b (b:1)\nline one" in mixed
