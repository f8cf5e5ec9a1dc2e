"""``pacsctl rollout``: batch by batch, health-checked, stopping at the first failure."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from pacsd.client import Client, Fleet
from pacsd.client.rollout import rollout

from tests.conftest import PacsdProcess
from tests.fleet.conftest import StartFleet, run_fleet_pacsctl, write_inventory

CANARY = textwrap.dedent(
    """
    from typing import Any

    from pacsd.addin import Addin, command


    class Canary(Addin):
        name = "canary"
        version = "{version}"

        @command("version")
        def report(self, args: dict[str, Any]) -> dict[str, Any]:
            return {{"version": self.version}}
    """
)

#: A copy that imports but fails in start(): the server reports ADDIN_LOAD_FAILED.
BROKEN = textwrap.dedent(
    """
    from pacsd.addin import Addin


    class Canary(Addin):
        name = "canary"
        version = "9.9.9"

        def start(self, ctx):
            raise RuntimeError("this build is broken")
    """
)


def start_with_canaries(
    start_fleet: StartFleet, tmp_path: Path, count: int, loaded: bool
) -> tuple[list[PacsdProcess], list[Path]]:
    """``count`` servers, each with its own add-in folder holding canary.py 1.0.0
    (loaded at startup when ``loaded``), so one server's copy can differ."""
    files = []
    configs = []
    for index in range(count):
        folder = tmp_path / f"addins{index + 1}"
        folder.mkdir()
        files.append(folder / "canary.py")
        files[-1].write_text(CANARY.format(version="1.0.0"))
        config = tmp_path / f"pacsd{index + 1}.toml"
        config.write_text(
            f"addin_paths = [{str(folder)!r}]\n[addins.canary]\nenabled = {str(loaded).lower()}\n"
        )
        configs.append(config)
    servers = start_fleet(count, lambda i: ["--config", str(configs[i])])
    return servers, files


def canary(server: PacsdProcess) -> tuple[str, str]:
    with Client(server.endpoint) as client:
        addin = client.addins.get("canary")
        state = addin.state
        name = {1: "AVAILABLE", 2: "ENABLED", 3: "DISABLED", 4: "FAILED"}[state]
        if state == 2:
            return name, client.addins.invoke("canary", "version")["version"]
        return name, addin.version


def test_rollout_stops_at_a_server_whose_addin_fails_to_load(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    servers, files = start_with_canaries(start_fleet, tmp_path, 5, loaded=False)
    files[2].write_text(BROKEN)  # pacs3's copy
    inventory = write_inventory(tmp_path / "fleet.toml", servers)

    result = run_fleet_pacsctl(
        "-w", "json", "--fleet", str(inventory), "rollout", "--addin", "canary",
        "--load", "canary", "--batch", "2",
    )  # fmt: skip
    assert result.returncode == 4, result
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["completed"] is False
    assert report["stopped_at_batch"] == 2
    assert report["changed"] == ["pacs1", "pacs2", "pacs4"]  # pacs4 shared pacs3's batch
    assert report["failed"] == ["pacs3"]
    assert report["skipped"] == ["pacs5"]
    items = {item["server"]: item for item in report["servers"]}
    assert [items[f"pacs{i}"]["batch"] for i in range(1, 6)] == [1, 1, 2, 2, 3]
    failed = items["pacs3"]
    assert failed["status"] == "failed"
    assert failed["error"]["reason"] == "ADDIN_LOAD_FAILED"
    assert "this build is broken" in failed["error"]["message"]
    assert failed["health"] is None
    for name in ("pacs1", "pacs2", "pacs4"):
        health = items[name]["health"]
        assert items[name]["status"] == "changed"
        assert health["ok"] and health["process"] == "SERVING" and health["dicom"] == "SERVING"
        assert health["echo"]["success"] and health["echo"]["status"] == 0
    assert items["pacs5"]["status"] == "skipped" and items["pacs5"]["health"] is None

    assert [canary(s)[0] for s in servers] == [
        "ENABLED",
        "ENABLED",
        "FAILED",
        "ENABLED",
        "AVAILABLE",  # never touched
    ]

    # Fixed and released as 2.0.0 everywhere: a reload rollout goes through.
    for file in files:
        file.write_text(CANARY.format(version="2.0.0"))
    done = run_fleet_pacsctl(
        "--fleet", str(inventory), "rollout", "--addin", "canary", "--reload", "--batch", "2"
    )
    assert done.returncode == 0, done
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "batch 1/3: pacs1, pacs2"
    assert lines[1].startswith("  pacs1: add-in canary reloaded (version 2.0.0); healthy (C-ECHO")
    assert lines[-1] == ("rollout complete: 3 batches; changed: pacs1, pacs2, pacs3, pacs4, pacs5")
    assert [canary(s) for s in servers] == [("ENABLED", "2.0.0")] * 5


def test_rollout_stops_when_a_server_fails_its_health_check(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    servers, files = start_with_canaries(start_fleet, tmp_path, 4, loaded=True)
    for file in files:
        file.write_text(CANARY.format(version="1.1.0"))
    with Client(servers[1].endpoint) as client:
        client.server.pause()  # pacs2 takes the change but refuses associations
    inventory = write_inventory(tmp_path / "fleet.toml", servers)

    result = run_fleet_pacsctl("--fleet", str(inventory), "rollout", "--addin", "canary")
    assert result.returncode == 4, result
    assert result.stdout.splitlines() == [
        "batch 1/4: pacs1",
        result.stdout.splitlines()[1],
        "batch 2/4: pacs2",
        "  pacs2: FAILED: changed, then DICOM listener health is NOT_SERVING",
        "rollout stopped at batch 2 of 4; failed: pacs2; changed: pacs1, pacs2; "
        "not touched: pacs3, pacs4",
    ]
    assert result.stdout.splitlines()[1].startswith("  pacs1: add-in canary reloaded")
    assert "pacsctl: error: [pacs2] DICOM listener health is NOT_SERVING" in result.stderr
    assert [canary(s)[1] for s in servers] == ["1.1.0", "1.1.0", "1.0.0", "1.0.0"]

    # The SDK gives the same report; a stopped listener fails the C-ECHO check too.
    with Client(servers[1].endpoint) as client:
        client.server.resume()
        client.server.stop(grace_period=0)
    with Fleet.from_inventory(inventory, selector="name in (pacs1,pacs2)") as fleet:
        report = rollout(fleet, "canary", batch=2)
    assert not report.ok and report.stopped_at == 1
    assert report.failed == ["pacs2"]
    bad = report.servers[1]
    assert bad.health is not None and not bad.health.echo.success
    assert bad.health.dicom == "NOT_SERVING"
    assert bad.health.echo.error == "the server reports no listening DICOM port"


def test_rollout_usage_errors(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "fleet.toml", ["127.0.0.1:1"])
    cases = [
        (("rollout", "--addin", "x", "--reload", "--load", "x"), "not both"),
        (("rollout", "--addin", "x", "--batch", "0"), "--batch"),
        (("rollout", "--addin", "x", "--load", "/srv/y.py"), "not 'x'"),
        (("rollout",), "--addin"),
    ]
    for args, message in cases:
        result = run_fleet_pacsctl("--fleet", str(inventory), *args)
        assert result.returncode == 2, (args, result)
        assert message in result.stderr, (args, result.stderr)


def test_rollout_with_every_server_down_exits_3(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "fleet.toml", ["127.0.0.1:1", "127.0.0.1:2"])
    result = run_fleet_pacsctl(
        "-w", "json", "--fleet", str(inventory), "rollout", "--addin", "x", "--batch", "2"
    )
    assert result.returncode == 3, result
    report = json.loads(result.stdout)
    assert report["failed"] == ["pacs1", "pacs2"] and report["changed"] == []
