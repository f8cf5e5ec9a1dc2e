"""``pacsctl apply`` / ``pacsctl diff``: declarative state on five real servers."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pacsd.client import Client

from tests.conftest import PacsdProcess
from tests.fleet.conftest import StartFleet, by_server, run_fleet_pacsctl, stop, write_inventory

DESIRED = textwrap.dedent(
    """
    inventory = "fleet.toml"

    [groups.everyone.ae_titles.ARCHIVE]
    host = "10.0.0.5"
    port = 104
    description = "long-term archive"

    [groups.ct]
    selector = "role=ct"

    [groups.ct.addins.query_retrieve]
    state = "enabled"
    settings = { max_results = 500 }

    [groups.mr]
    selector = "role=mr"

    [groups.mr.addins.query_retrieve]
    state = "unloaded"
    """
)

CT = ("pacs1", "pacs2", "pacs4")
MR = ("pacs3", "pacs5")


@pytest.fixture
def fleet_dir(start_fleet: StartFleet, tmp_path: Path) -> tuple[Path, list[PacsdProcess]]:
    """Five servers whose query_retrieve add-in is not loaded at startup, an inventory
    (pacs1, pacs2, pacs4 are role=ct; pacs3, pacs5 role=mr) and the desired state."""
    config = tmp_path / "no-qr.toml"
    config.write_text("[addins.query_retrieve]\nenabled = false\n")
    servers = start_fleet(5, lambda i: ["--config", str(config)])
    folder = tmp_path / "site"
    folder.mkdir()
    write_inventory(folder / "fleet.toml", servers)
    (folder / "desired.toml").write_text(DESIRED)
    return folder, servers


def pacsctl_json(*args: str, status: int = 0) -> dict[str, Any]:
    result = run_fleet_pacsctl("-w", "json", *args)
    assert result.returncode == status, result
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def changes(document: dict[str, Any]) -> dict[str, list[tuple[str, str, str]]]:
    return {
        name: [(c["target"], c["name"], c["action"]) for c in item["changes"]]
        for name, item in by_server(document).items()
    }


def actual(server: PacsdProcess) -> dict[str, Any]:
    with Client(server.endpoint) as client:
        qr = client.addins.get("query_retrieve")
        state = {
            "ae": [(e.ae_title, e.host, e.port, e.description) for e in client.aetitles.list()],
            "qr": qr.state,
        }
        if qr.state == 2:  # ENABLED
            state["max_results"] = client.addins.get_settings("query_retrieve")["max_results"]
        return state


EXPECTED_CT = [
    ("ae_title", "ARCHIVE", "create"),
    ("addin", "query_retrieve", "load"),
    ("addin_settings", "query_retrieve", "settings"),
]


def test_apply_then_reapply_changes_nothing(
    fleet_dir: tuple[Path, list[PacsdProcess]],
) -> None:
    folder, servers = fleet_dir
    desired = str(folder / "desired.toml")
    before = [actual(s) for s in servers]

    planned = pacsctl_json("diff", "-f", desired)
    assert planned["dry_run"] is True and planned["changed"] is True
    assert changes(planned) == {
        **{name: EXPECTED_CT for name in CT},
        **{name: [("ae_title", "ARCHIVE", "create")] for name in MR},
    }
    settings_step = by_server(planned)["pacs1"]["changes"][2]
    assert settings_step["after"] == {"max_results": 500}
    assert settings_step["before"] is None  # not knowable before the add-in is loaded
    assert by_server(planned)["pacs3"]["groups"] == ["everyone", "mr"]
    dry = pacsctl_json("apply", "--dry-run", "-f", desired)
    assert changes(dry) == changes(planned)
    assert [actual(s) for s in servers] == before  # diff and --dry-run change nothing

    applied = run_fleet_pacsctl("apply", "-f", desired)
    assert applied.returncode == 0, applied
    assert applied.stderr == ""
    lines = applied.stdout.splitlines()
    assert lines[0] == f"pacs1 ({servers[0].endpoint}) [everyone, ct]: 3 changes"
    assert lines[1] == '  + ae_title ARCHIVE: 10.0.0.5:104 "long-term archive"'
    assert lines[2] == "  + addin query_retrieve: load (AVAILABLE -> ENABLED)"
    assert lines[3].startswith("  ~ addin query_retrieve settings: max_results")
    assert lines[-1] == "applied 11 changes on 5 servers; 0 already in sync"

    archive = ("ARCHIVE", "10.0.0.5", 104, "long-term archive")
    for name, server in zip(("pacs1", "pacs2", "pacs3", "pacs4", "pacs5"), servers, strict=True):
        state = actual(server)
        assert state["ae"] == [archive], name
        if name in CT:
            assert (state["qr"], state["max_results"]) == (2, 500), name
        else:
            assert state["qr"] == 1, name  # AVAILABLE: not loaded

    again = pacsctl_json("apply", "-f", desired)
    assert again["changed"] is False
    assert all(item["in_sync"] and item["changes"] == [] for item in again["servers"])
    assert again["summary"]["in_sync"] == 5
    text = run_fleet_pacsctl("apply", "-f", desired)
    assert text.returncode == 0
    assert text.stdout.splitlines()[-1] == "applied 0 changes on 0 servers; 5 already in sync"
    assert all(line.endswith(": no changes") for line in text.stdout.splitlines()[:-1])

    # Drift on one server: diff shows exactly it; apply puts it back.
    with Client(servers[1].endpoint) as client:
        client.addins.disable("query_retrieve")
        client.aetitles.update("ARCHIVE", port=11112)
    drift = pacsctl_json("diff", "-f", desired)
    assert {name: c for name, c in changes(drift).items() if c} == {
        "pacs2": [("ae_title", "ARCHIVE", "update"), ("addin", "query_retrieve", "enable")]
    }
    assert by_server(drift)["pacs2"]["changes"][0]["before"] == {"port": 11112}
    fixed = pacsctl_json("apply", "-f", desired)
    assert by_server(fixed)["pacs2"]["changes"][1]["changed"] is True
    assert actual(servers[1]) == {"ae": [archive], "qr": 2, "max_results": 500}

    # One server dies: the others are still checked, it is reported, exit 4.
    stop(servers[4], signal.SIGKILL)
    partial = pacsctl_json("apply", "-f", desired, status=4)
    dead = by_server(partial)["pacs5"]
    assert dead["ok"] is False and dead["error"]["code"] == "UNAVAILABLE"
    assert all(by_server(partial)[n]["in_sync"] for n in ("pacs1", "pacs2", "pacs3", "pacs4"))
    assert partial["summary"]["unreachable"] == 1
    table = run_fleet_pacsctl("apply", "-f", desired)
    assert table.returncode == 4
    assert f"pacs5 ({servers[4].endpoint}) [everyone, mr]: unreachable" in table.stdout
    assert "pacsctl: error: [pacs5] cannot reach pacsd" in table.stderr


def test_selector_narrows_apply_and_failures_stop_only_that_server(
    fleet_dir: tuple[Path, list[PacsdProcess]],
) -> None:
    folder, servers = fleet_dir
    bad = folder / "bad.toml"
    bad.write_text(
        textwrap.dedent(
            """
            [groups.all.ae_titles.PEER]
            host = "10.0.0.7"
            port = 104

            [groups.all.addins.query_retrieve]
            settings = { max_results = -1 }
            """
        )
    )
    # Only the north CT servers, by the global selector (the file names no inventory).
    result = pacsctl_json(
        "--fleet",
        str(folder / "fleet.toml"),
        "--selector",
        "site=north,role=ct",
        "apply",
        "-f",
        str(bad),
        status=4,
    )
    assert list(by_server(result)) == ["pacs1", "pacs2"]
    for item in result["servers"]:
        # The AE title and the load happened; the invalid setting stopped that server.
        assert [c.get("changed") for c in item["changes"]] == [True, True, None]
        assert item["error"]["reason"] == "ADDIN_SETTINGS_INVALID"
    with Client(servers[3].endpoint) as client:  # pacs4 was not selected
        assert list(client.aetitles.list()) == []


BAD_FILES = [
    (
        """
        [groups.a.addins.storage]
        state = "enabled"
        [groups.b.addins.storage]
        state = "disabled"
        """,
        "storage (groups a and b): state 'enabled' vs 'disabled'",
    ),
    (
        """
        [groups.a.addins.storage]
        settings = { duplicates = "reject" }
        [groups.b.addins.storage]
        settings = { duplicates = "keep" }
        """,
        "setting duplicates",
    ),
    (
        """
        [groups.a.ae_titles.X]
        host = "h"
        port = 1
        [groups.b.ae_titles.X]
        host = "h"
        port = 2
        """,
        "AE title X is declared differently by groups a and b",
    ),
    (
        """
        [groups.a.server]
        log_level = "DEBUG"
        [groups.b.server]
        log_level = "INFO"
        """,
        "server setting log_level = 'DEBUG' (group a) vs 'INFO' (group b)",
    ),
    ("[groups.a.server]\nlimits = { x = 1 }\n", "server settings are single values"),
    ("[groups.a.addins.x]\nstate = 'on'\n", "state: must be one of"),
    ("[groups.a.ae_titles.X]\nhost = 'h'\nport = 0\n", "port: must be an integer"),
    ("[groups.a.ae_titles.X]\nabsent = true\nport = 1\n", "takes no other keys"),
    ("[groups.a]\nselector = 'x in ('\n", "unbalanced"),
    ("[groups.a.addins.x]\nsource = './y.py'\n", "not 'x'"),
    ("[groups.a]\nhosts = []\n", "unknown key"),
    ("", "no [groups.NAME] table"),
]


def test_bad_desired_files_change_nothing(pacsd: PacsdProcess, tmp_path: Path) -> None:
    """Refused before any server is contacted (exit 2), however the file is wrong."""
    write_inventory(tmp_path / "fleet.toml", [pacsd])
    path = tmp_path / "bad.toml"
    for body, message in BAD_FILES:
        path.write_text('inventory = "fleet.toml"\n' + textwrap.dedent(body))
        result = run_fleet_pacsctl("apply", "-f", str(path))
        assert result.returncode == 2, (body, result)
        assert message in result.stderr, (body, result.stderr)
        assert result.stdout == ""
    with Client(pacsd.endpoint) as client:
        assert client.addins.get("storage").state == 2
        assert list(client.aetitles.list()) == []


def test_prune_and_absent_ae_titles(start_fleet: StartFleet, tmp_path: Path) -> None:
    servers = start_fleet(2)
    for server in servers:
        with Client(server.endpoint) as client:
            client.aetitles.create("KEEP", "10.0.0.1", 104)
            client.aetitles.create("GONE", "10.0.0.2", 104)
            client.aetitles.create("STRAY", "10.0.0.3", 104)
    desired = tmp_path / "desired.toml"
    desired.write_text(
        textwrap.dedent(
            """
            [groups.all]
            prune_ae_titles = true
            [groups.all.ae_titles.KEEP]
            host = "10.0.0.1"
            port = 104
            [groups.all.ae_titles.GONE]
            absent = true
            """
        )
    )
    endpoints = ",".join(s.endpoint for s in servers)
    planned = pacsctl_json("--endpoints", endpoints, "diff", "-f", str(desired))
    assert set(map(tuple, changes(planned).values())) == {
        (("ae_title", "GONE", "delete"), ("ae_title", "STRAY", "delete"))
    }
    pacsctl_json("--endpoints", endpoints, "apply", "-f", str(desired))
    for server in servers:
        with Client(server.endpoint) as client:
            assert [e.ae_title for e in client.aetitles.list()] == ["KEEP"]
    again = pacsctl_json("--endpoints", endpoints, "apply", "-f", str(desired))
    assert again["changed"] is False


def test_apply_server_settings(start_fleet: StartFleet, tmp_path: Path) -> None:
    """Log level and limits are declared like the rest; the server validates them while
    planning, so a restart-only setting fails the plan and changes nothing."""
    servers = start_fleet(2)
    folder = tmp_path / "site"
    folder.mkdir()
    write_inventory(folder / "fleet.toml", servers)
    desired = folder / "desired.toml"
    desired.write_text(
        textwrap.dedent(
            """
            inventory = "fleet.toml"
            [groups.all.server]
            log_level = "debug"
            max_associations = 7
            handler_time_limit = 12.5
            ae_title = "PACSD"      # needs a restart, but already in force: in sync
            """
        )
    )
    planned = pacsctl_json("diff", "-f", str(desired))
    step = by_server(planned)["pacs1"]["changes"]
    assert [(c["target"], c["action"]) for c in step] == [("server_settings", "settings")]
    assert step[0]["before"] == {
        "handler_time_limit": 60,
        "log_level": "INFO",
        "max_associations": 64,
    }
    assert step[0]["after"] == {
        "handler_time_limit": 12.5,
        "log_level": "DEBUG",
        "max_associations": 7,
    }
    with Client(servers[0].endpoint) as client:
        assert client.server.settings().settings["max_associations"] == 64  # diff: no change

    applied = run_fleet_pacsctl("apply", "-f", str(desired))
    assert applied.returncode == 0, applied
    assert "  ~ server settings: handler_time_limit 60 -> 12.5, log_level " in applied.stdout
    for server in servers:
        with Client(server.endpoint) as client:
            values = client.server.settings().settings
            assert (values["max_associations"], values["handler_time_limit"]) == (7, 12.5)
            assert client.logs.levels().default == "DEBUG"
    again = pacsctl_json("apply", "-f", str(desired))
    assert again["changed"] is False and again["summary"]["in_sync"] == 2

    desired.write_text(
        'inventory = "fleet.toml"\n[groups.all.server]\nmax_associations = 9\ndicom_port = 1\n'
    )
    refused = pacsctl_json("apply", "-f", str(desired), status=4)
    for item in refused["servers"]:
        assert item["ok"] is False and item["changes"] == []
        assert item["error"]["reason"] == "SETTING_REQUIRES_RESTART"
        assert item["error"]["metadata"]["fields"] == "dicom_port"
    with Client(servers[0].endpoint) as client:
        assert client.server.settings().settings["max_associations"] == 7


def test_apply_help_names_every_kind_of_entry() -> None:
    """The help is where an operator learns what a desired-state file may hold: server
    settings included, not only add-ins and AE titles."""
    from click.testing import CliRunner
    from pacsd.client.cli import apply as apply_module
    from pacsd.client.cli.main import cli

    result = CliRunner().invoke(cli, ["apply", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    summary = " ".join(result.output.split())
    for words in ("server settings", "log level", "limits", "add-ins", "AE titles"):
        assert words in summary, words
    assert apply_module.__doc__ is not None
    assert "[groups.NAME.server]" in apply_module.__doc__
