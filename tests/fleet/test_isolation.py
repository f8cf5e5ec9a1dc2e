"""The fleet half of the SDK needs nothing but grpcio and protobuf, like the rest.

Fleet, AsyncClient, AsyncFleet, inventories, declarative apply, rollouts and the C-ECHO
health check run in a fresh interpreter where pydicom, pynetdicom, pydantic, click,
google.rpc and the server packages cannot be imported (the blocker of
tests/client/test_isolation.py), against a real server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.client.test_isolation import BLOCKED
from tests.conftest import PacsdProcess

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import importlib.abc
    import json
    import sys

    BLOCKED = tuple(sys.argv[4].split(","))


    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"blocked for this test: {name}")
            return None


    sys.meta_path.insert(0, Blocker())
    from pacsd.client import AsyncClient, AsyncFleet, Fleet, load_inventory
    from pacsd.client.desired import apply, load_desired
    from pacsd.client.dicom_echo import c_echo
    from pacsd.client.rollout import check_health, rollout

    endpoint, dicom_port, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    out = {}
    with Fleet.from_inventory(load_inventory(folder + "/fleet.toml")) as fleet:
        results = fleet.server.get()
        out["states"] = [r.value.state for r in results if r.ok]
        out["unreachable"] = [r.server.name for r in results.unreachable]
        done = apply(fleet, load_desired(folder + "/desired.toml"))
        out["applied"] = [o.applied for o in done]
        out["health"] = check_health(fleet.client("one")).ok
        out["rollout"] = rollout(fleet, "verification", batch=2).failed


    async def main():
        async with AsyncClient(endpoint) as client:
            out["aio"] = (await client.server.get()).state
        async with AsyncFleet.from_endpoints([endpoint]) as fleet:
            out["aio_fleet"] = list((await fleet.health()).values().values())


    asyncio.run(main())
    out["echo"] = c_echo("127.0.0.1", dicom_port, "PACSD").success
    out["loaded"] = sorted(
        m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)
    )
    print(json.dumps(out))
    """
)


def test_fleet_sdk_needs_only_grpcio_and_protobuf(pacsd: PacsdProcess, tmp_path: Path) -> None:
    (tmp_path / "fleet.toml").write_text(
        f'[[servers]]\nname = "one"\nendpoint = "{pacsd.endpoint}"\n'
        '[[servers]]\nname = "gone"\nendpoint = "127.0.0.1:1"\n'
    )
    (tmp_path / "desired.toml").write_text(
        '[groups.all.ae_titles.PEER]\nhost = "10.0.0.1"\nport = 104\n'
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            pacsd.endpoint,
            str(pacsd.dicom_port),
            str(tmp_path),
            ",".join(BLOCKED),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["states"] == [1]  # SERVER_STATE_RUNNING
    assert out["unreachable"] == ["gone"]
    assert out["applied"] == [1, 0]
    assert out["health"] is True
    assert out["rollout"] == ["gone"]
    assert out["aio"] == 1
    assert out["aio_fleet"] == ["SERVING"]
    assert out["echo"] is True
    assert out["loaded"] == []
