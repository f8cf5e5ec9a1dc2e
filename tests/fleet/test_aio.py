"""AsyncClient and AsyncFleet (grpc.aio): same surface as Client and Fleet."""

from __future__ import annotations

import asyncio
import inspect
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from pacsd.client import (
    AddinsAPI,
    AlreadyExists,
    AsyncClient,
    AsyncFleet,
    Client,
    FailedPrecondition,
    Fleet,
    NotFound,
    ServerAPI,
    ServerUnavailable,
    StorageAPI,
)
from pacsd.client.aetitles import AETitlesAPI
from pacsd.client.aio import AsyncAddinsAPI, AsyncAETitlesAPI, AsyncServerAPI, AsyncStorageAPI

from tests.conftest import PacsdProcess
from tests.fleet.conftest import stop, write_inventory

PAIRS = [
    (Client, AsyncClient),
    (ServerAPI, AsyncServerAPI),
    (AddinsAPI, AsyncAddinsAPI),
    (AETitlesAPI, AsyncAETitlesAPI),
    (StorageAPI, AsyncStorageAPI),
    (Fleet, AsyncFleet),
]


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize(("sync", "async_"), PAIRS, ids=lambda c: c.__name__)
def test_async_surface_matches_the_sync_one(sync: type, async_: type) -> None:
    sync_methods = public_methods(sync)
    async_methods = public_methods(async_)
    assert sorted(sync_methods) == sorted(async_methods)
    for name, signature in sync_methods.items():
        theirs = async_methods[name]
        assert [(p.name, p.kind, p.default) for p in signature.parameters.values()] == [
            (p.name, p.kind, p.default) for p in theirs.parameters.values()
        ], name
        member = getattr(async_, name)
        if name in ("client", "broadcast", "from_endpoints", "from_inventory"):
            continue  # constructors and lookups stay plain functions
        if name == "iter_studies":
            assert inspect.isasyncgenfunction(member)
        else:
            assert inspect.iscoroutinefunction(member), name
    for namespace in ("server", "addins", "aetitles", "storage"):
        assert hasattr(async_, namespace) == hasattr(sync, namespace)


def test_async_client_drives_one_server(pacsd: PacsdProcess) -> None:
    async def scenario() -> dict[str, Any]:
        async with AsyncClient(pacsd.endpoint, timeout=10) as client:
            out: dict[str, Any] = {}
            out["state"] = (await client.server.get()).state
            out["pause"] = (await client.server.pause()).changed
            out["pause_again"] = (await client.server.pause()).changed
            out["dicom"] = await client.health("pacsd.dicom")
            out["unknown"] = await client.health("no.such.service")
            await client.server.stop(grace_period=0)
            with pytest.raises(FailedPrecondition) as info:
                await client.server.resume()
            out["reason"] = info.value.reason
            await client.server.start()
            names = [a.name for a in await client.addins.list()]
            out["addins"] = names
            out["settings"] = await client.addins.get_settings("storage")
            change = await client.aetitles.create("ARCHIVE", "10.0.0.5", 104)
            out["created"] = change.changed
            with pytest.raises(AlreadyExists) as exists:
                await client.aetitles.create("ARCHIVE", "10.0.0.6", 104)
            out["exists"] = (exists.value.reason, exists.value.metadata.get("host"))
            out["updated"] = (await client.aetitles.update("ARCHIVE", port=11112)).changed
            out["listed"] = [(e.ae_title, e.port) for e in await client.aetitles.list()]
            with pytest.raises(NotFound) as missing:
                await client.addins.get("nope")
            out["missing"] = missing.value.reason
            out["stats"] = (await client.storage.stats()).instances
            out["studies"] = len(await client.storage.studies())
            out["iterated"] = [s async for s in client.storage.iter_studies(limit=5)]
            out["deleted"] = (await client.storage.delete_study("1.2.3")).changed
            return out

    out = asyncio.run(scenario())
    assert out["state"] == 1  # SERVER_STATE_RUNNING
    assert (out["pause"], out["pause_again"]) == (True, False)
    assert out["dicom"] == "NOT_SERVING"
    assert out["unknown"] == "SERVICE_UNKNOWN"
    assert out["reason"] == "SERVER_STOPPED"
    assert {"storage", "verification", "query_retrieve"} <= set(out["addins"])
    assert out["settings"] == {"duplicates": "overwrite"}
    assert out["created"] is True
    assert out["exists"] == ("AE_TITLE_EXISTS", "10.0.0.5")
    assert out["updated"] is True
    assert out["listed"] == [("ARCHIVE", 11112)]
    assert out["missing"] == "ADDIN_NOT_FOUND"
    assert (out["stats"], out["studies"], out["iterated"], out["deleted"]) == (0, 0, [], False)


def test_async_client_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{s.getsockname()[1]}"

    async def scenario() -> ServerUnavailable:
        async with AsyncClient(endpoint, timeout=5) as client:
            with pytest.raises(ServerUnavailable) as info:
                await client.server.get()
            return info.value

    error = asyncio.run(scenario())
    assert error.unreachable and error.endpoint == endpoint


def test_async_fleet_on_five_servers_with_one_dead(
    five: list[PacsdProcess], tmp_path: Path
) -> None:
    stop(five[4], signal.SIGKILL)
    inventory = write_inventory(tmp_path / "fleet.toml", five)

    async def scenario() -> tuple[Any, Any, Any, Any]:
        async with AsyncFleet.from_inventory(inventory, timeout=10, parallelism=2) as fleet:
            servers = await fleet.server.get()
            ct = await fleet.run(lambda c: c.health("pacsd.dicom"), selector="role=ct")
            created = await fleet.aetitles.create("PEER", "10.0.0.9", 104)
            pids = await fleet.each(
                lambda server, c: _pid_and_site(server.labels["site"], c), names=["pacs4"]
            )
            return servers, ct, created, pids

    servers, ct, created, pids = asyncio.run(scenario())
    assert [r.server.name for r in servers] == ["pacs1", "pacs2", "pacs3", "pacs4", "pacs5"]
    assert [r.ok for r in servers] == [True, True, True, True, False]
    assert servers[4].unreachable
    assert [r.unwrap().pid for r in servers[:4]] == [s.proc.pid for s in five[:4]]
    assert ct.values() == {"pacs1": "SERVING", "pacs2": "SERVING", "pacs4": "SERVING"}
    assert len(created.succeeded) == 4 and all(r.value.changed for r in created.succeeded)
    assert pids.values() == {"pacs4": (five[3].proc.pid, "south")}


async def _pid_and_site(site: str, client: AsyncClient) -> tuple[int, str]:
    return (await client.server.get()).pid, site
