"""Desired-state files and plan lines, without servers (apply itself: test_apply.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pacsd.client.desired import DesiredStateError, Step, load_desired
from pacsd.client.inventory import FleetServer

CT = FleetServer("ct1", "127.0.0.1:1", {"role": "ct", "site": "north"})
MR = FleetServer("mr1", "127.0.0.1:2", {"role": "mr", "site": "north"})


def desired(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "desired.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_groups_merge_per_server(tmp_path: Path) -> None:
    state = load_desired(
        desired(
            tmp_path,
            """
            inventory = "../fleet.toml"

            [groups.all.addins.storage]
            settings = { duplicates = "reject" }
            [groups.all.ae_titles.ARCHIVE]
            host = "10.0.0.5"
            port = 104

            [groups.ct]
            selector = "role=ct"
            prune_ae_titles = true
            [groups.ct.addins.storage]
            state = "enabled"
            settings = { duplicates = "reject", other = 1 }
            [groups.ct.addins.example_store]
            source = "addins/example_store.py"
            state = "disabled"
            [groups.ct.ae_titles.ARCHIVE]
            host = "10.0.0.5"
            port = 104
            """,
        )
    )
    assert state.inventory == (tmp_path / "fleet.toml").resolve()
    ct = state.for_server(CT)
    assert ct.groups == ("all", "ct")
    assert ct.prune_ae_titles is True
    storage = ct.addins["storage"]
    assert (storage.wanted, dict(storage.settings)) == (
        "enabled",
        {"duplicates": "reject", "other": 1},
    )
    example = ct.addins["example_store"]
    # Relative sources are taken from the desired file's folder.
    assert example.source == str((tmp_path / "conf" / "addins" / "example_store.py").resolve())
    assert example.wanted == "disabled"
    mr = state.for_server(MR)
    assert mr.groups == ("all",)
    assert set(mr.addins) == {"storage"} and mr.addins["storage"].state is None
    assert mr.prune_ae_titles is False
    assert state.for_server(FleetServer("x", "h:1")).groups == ("all",)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DesiredStateError, match="cannot read"):
        load_desired(tmp_path / "nope.toml")
    with pytest.raises(DesiredStateError, match="not valid TOML"):
        load_desired(desired(tmp_path, "[groups\n"))


@pytest.mark.parametrize(
    ("step", "line"),
    [
        (
            Step("ae_title", "A", "create", None, {"host": "h", "port": 1, "description": ""}),
            "+ ae_title A: h:1",
        ),
        (
            Step("ae_title", "A", "create", None, {"host": "h", "port": 1, "description": 'x "y"'}),
            '+ ae_title A: h:1 "x \\"y\\""',
        ),
        (
            Step("ae_title", "A", "update", {"port": 1, "host": "a"}, {"port": 2, "host": "b"}),
            '~ ae_title A: port 1 -> 2, host "a" -> "b"',
        ),
        (
            Step("ae_title", "A", "delete", {"host": "h", "port": 1, "description": ""}, None),
            "- ae_title A (was h:1)",
        ),
        (Step("addin", "x", "load", "ABSENT", "ENABLED"), "+ addin x: load (ABSENT -> ENABLED)"),
        (
            Step("addin", "x", "unload", "DISABLED", "AVAILABLE"),
            "- addin x: unload (DISABLED -> AVAILABLE)",
        ),
        (
            Step("addin", "x", "enable", "DISABLED", "ENABLED"),
            "~ addin x: enable (DISABLED -> ENABLED)",
        ),
        (
            Step("addin", "x", "replace", "path:/old/x.py", "/new/x.py"),
            "~ addin x: load from /new/x.py (replacing path:/old/x.py)",
        ),
        (
            Step("addin_settings", "x", "settings", None, {"n": 5}),
            "~ addin x settings: n (unknown until loaded) -> 5",
        ),
        (
            Step("addin_settings", "x", "settings", {"n": 1}, {"n": 5, "new": "v"}),
            '~ addin x settings: n 1 -> 5, new (unset) -> "v"',
        ),
    ],
)
def test_plan_lines(step: Step, line: str) -> None:
    assert step.text() == line
    assert step.to_dict()["action"] == step.action
