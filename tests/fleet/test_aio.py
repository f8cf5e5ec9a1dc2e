"""AsyncClient and AsyncFleet (grpc.aio): same surface as Client and Fleet."""

from __future__ import annotations

import asyncio
import inspect
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from pacsd.admin.v1 import associations_pb2
from pacsd.client import (
    AlreadyExists,
    AssociationsAPI,
    AsyncClient,
    AsyncFleet,
    Client,
    FailedPrecondition,
    Fleet,
    InvalidArgument,
    LogsAPI,
    NotFound,
    PacsdError,
    ServerUnavailable,
)
from pacsd.client.aio import AsyncAssociationsAPI, AsyncLogsAPI, AsyncSecurityAPI, AsyncStream
from pacsd.client.inventory import FleetServer
from pacsd.client.security import SecurityAPI
from pynetdicom import AE

from tests.conftest import PacsdProcess
from tests.fleet.conftest import stop, write_inventory
from tests.security.dicom_tls_peers import make_pki, rotate_server_certificate, tls_config

VERIFICATION = "1.2.840.10008.1.1"
ACCEPTED = associations_pb2.ASSOCIATION_EVENT_TYPE_ACCEPTED
ABORTED = associations_pb2.ASSOCIATION_EVENT_TYPE_ABORTED

#: Functions that stay plain on the async side: constructors and lookups.
PLAIN = {"client", "broadcast", "from_endpoints", "from_inventory"}


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def namespaces(client: object) -> dict[str, type]:
    """The API namespaces an instance carries (set in ``__init__``, so only an instance
    shows them): its public attributes that are bound to the client."""
    return {
        name: type(value)
        for name, value in vars(client).items()
        if not name.startswith("_") and getattr(value, "_client", None) is client
    }


def broadcasts(cls: type) -> set[str]:
    return {name for name, member in inspect.getmembers(cls) if isinstance(member, property)}


def _annotation(annotation: object) -> str:
    """An annotation with the async side's own types mapped to the sync ones:
    ``fn: Callable[[AsyncClient], Awaitable[T]]`` is ``Run``'s ``Callable[[Client], T]``."""
    text = re.sub(r"Awaitable\[(.*)\]\]$", r"\1]", str(annotation))
    return text.replace("AsyncClient", "Client")


def surface_problems(sync: type, async_: type) -> list[str]:
    """Every way ``async_``'s public methods differ from ``sync``'s: a method missing
    or extra, a parameter differing in name, kind, default or annotation, or a method
    that is not awaitable (or not an async iterator / AsyncStream where sync streams)."""
    problems: list[str] = []
    sync_methods = public_methods(sync)
    async_methods = public_methods(async_)
    for name in sorted(sync_methods.keys() ^ async_methods.keys()):
        where = async_.__name__ if name in async_methods else sync.__name__
        problems.append(f"{name} only on {where}")
    for name in sorted(sync_methods.keys() & async_methods.keys()):
        ours, theirs = sync_methods[name], async_methods[name]
        params = [
            (p.name, p.kind, p.default, _annotation(p.annotation)) for p in ours.parameters.values()
        ]
        if params != [
            (p.name, p.kind, p.default, _annotation(p.annotation))
            for p in theirs.parameters.values()
        ]:
            problems.append(f"{async_.__name__}.{name}{theirs} != {sync.__name__}.{name}{ours}")
        member = getattr(async_, name)
        returns = str(ours.return_annotation)
        if name in PLAIN:
            ok = not inspect.iscoroutinefunction(member)
        elif returns.startswith("Stream["):
            ok = str(theirs.return_annotation).startswith("AsyncStream[") and not (
                inspect.iscoroutinefunction(member)
            )
        elif returns.startswith("Iterator["):
            ok = inspect.isasyncgenfunction(member)
        else:
            ok = inspect.iscoroutinefunction(member)
        if not ok:
            problems.append(f"{async_.__name__}.{name} has the wrong kind for {returns}")
    return problems


def test_async_surface_matches_the_sync_one() -> None:
    sync = Client("127.0.0.1:1")  # channels connect lazily: nothing is contacted

    async def make() -> AsyncClient:
        client = AsyncClient("127.0.0.1:1")
        await client.close()
        return client

    try:
        async_ = asyncio.run(make())
    finally:
        sync.close()
    sync_spaces, async_spaces = namespaces(sync), namespaces(async_)
    assert set(sync_spaces) == {
        "server",
        "addins",
        "aetitles",
        "storage",
        "logs",
        "associations",
        "security",
    }
    assert set(async_spaces) == set(sync_spaces)
    problems = surface_problems(Client, AsyncClient) + surface_problems(Fleet, AsyncFleet)
    for name, cls in sync_spaces.items():
        problems += surface_problems(cls, async_spaces[name])
    assert problems == []
    # Every namespace is broadcast by both fleets.
    assert broadcasts(Fleet) == broadcasts(AsyncFleet) == set(sync_spaces)


def test_the_surface_check_notices_a_missing_or_changed_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The comparison above must be able to fail: take methods away and change one."""
    assert surface_problems(LogsAPI, AsyncLogsAPI) == []
    monkeypatch.delattr(AsyncSecurityAPI, "reload")
    assert surface_problems(SecurityAPI, AsyncSecurityAPI) == ["reload only on SecurityAPI"]

    async def tail(self: Any, count: int = 10, **filters: object) -> list[Any]:
        return []

    monkeypatch.setattr(AsyncLogsAPI, "tail", tail)
    assert [p.split("(")[0] for p in surface_problems(LogsAPI, AsyncLogsAPI)] == [
        "AsyncLogsAPI.tail"
    ]

    def watch(self: Any) -> Any:
        return None

    monkeypatch.setattr(AsyncAssociationsAPI, "watch", watch)
    assert len(surface_problems(AssociationsAPI, AsyncAssociationsAPI)) == 2


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


# -- logs, associations, security on asyncio -----------------------------------------------


class Collector:
    """Reads an AsyncStream in a task of its own, so the test can act meanwhile."""

    def __init__(self, stream: AsyncStream[Any]) -> None:
        self.stream = stream
        self.items: list[Any] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for item in self.stream:
            self.items.append(item)

    async def until(
        self, predicate: Callable[[list[Any]], bool], timeout: float, poke: Callable[[], Any]
    ) -> None:
        """``await poke()`` until ``predicate(items)`` holds (a stream is opened by the
        server a little after the call starts, so one poke may precede it)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.items):
            assert time.monotonic() < deadline, self.items
            await poke()
            for _ in range(25):
                if predicate(self.items) or self.task.done():
                    break
                await asyncio.sleep(0.02)
            if self.task.done():
                self.task.result()  # a failed stream fails the test with its error

    async def stop(self) -> None:
        self.stream.cancel()
        await asyncio.wait_for(self.task, 5)  # ends quietly: no CancelledError, no error


def test_async_logs(pacsd: PacsdProcess) -> None:
    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with AsyncClient(pacsd.endpoint, timeout=10) as client:
            out["levels"] = await client.logs.levels()
            out["set"] = (await client.logs.set_level("DEBUG", "message_log")).changed
            again = await client.logs.set_level("debug", "message_log")
            out["again"] = (again.changed, again.levels.sources.get("message_log"))
            with pytest.raises(NotFound) as missing:
                await client.logs.set_level("DEBUG", "no_such_source")
            out["missing"] = missing.value.reason
            with pytest.raises(InvalidArgument):
                client.logs.stream(tail=-1)
            audit = await client.logs.tail(50, sources=["control"])
            out["audited"] = [r.message for r in audit]

            follower = Collector(client.logs.stream(follow=True, sources=["control"]))
            paused = [False]

            async def toggle() -> None:
                paused[0] = not paused[0]
                await (client.server.pause() if paused[0] else client.server.resume())

            await follower.until(lambda rs: any("PauseServer" in r.message for r in rs), 10, toggle)
            await follower.stop()
            out["followed"] = follower.items
        return out

    out = asyncio.run(scenario())
    assert out["levels"].default == "INFO"
    assert out["set"] is True and out["again"] == (False, "DEBUG")
    assert out["missing"] == "LOG_SOURCE_NOT_FOUND"
    assert any("SetLogLevel" in message for message in out["audited"])
    assert all(r.source == "control" for r in out["followed"])
    assert any("PauseServer" in r.message for r in out["followed"])


def test_async_stream_errors_are_pacsd_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{s.getsockname()[1]}"

    async def scenario() -> tuple[ServerUnavailable, ServerUnavailable]:
        async with AsyncClient(endpoint, timeout=5) as client:
            with pytest.raises(ServerUnavailable) as logs:
                async for _ in client.logs.stream(follow=True):
                    pass
            with pytest.raises(ServerUnavailable) as events:
                await client.associations.watch().__anext__()
            return logs.value, events.value

    for error in asyncio.run(scenario()):
        assert error.unreachable and error.endpoint == endpoint


def test_async_associations(pacsd: PacsdProcess) -> None:
    port = pacsd.dicom_port

    def associate(calling: str) -> Any:
        ae = AE(ae_title=calling)
        ae.add_requested_context(VERIFICATION)
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
        assert assoc.is_established
        return assoc

    async def warm_up() -> None:
        (await asyncio.to_thread(associate, "WARMUP")).release()

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with AsyncClient(pacsd.endpoint, timeout=10) as client:
            events = Collector(client.associations.watch(lifecycle_only=True))
            await events.until(lambda es: any(e.calling_ae == "WARMUP" for e in es), 10, warm_up)
            assoc = await asyncio.to_thread(associate, "ASYNC_SCU")
            listed = [a for a in await client.associations.list() if a.calling_ae == "ASYNC_SCU"]
            out["listed"] = [(a.calling_ae, a.peer_port) for a in listed]
            ident = listed[0].id
            out["got"] = (await client.associations.get(ident)).id == ident
            out["aborted"] = (await client.associations.abort(ident)).id
            with pytest.raises(NotFound) as gone:
                await client.associations.get(ident)
            out["gone"] = gone.value.reason

            def aborted(es: list[Any]) -> bool:
                return any(e.association_id == ident and e.type == ABORTED for e in es)

            await events.until(aborted, 10, _noop)
            await events.stop()
            out["events"] = [(e.calling_ae, e.type) for e in events.items]
            out["peer_aborted"] = await asyncio.to_thread(_wait_aborted, assoc)
            out["port"] = assoc.local["port"]
        return out

    out = asyncio.run(scenario())
    assert out["listed"] == [("ASYNC_SCU", out["port"])]
    assert out["got"] is True
    assert out["gone"] == "ASSOCIATION_NOT_FOUND"
    assert ("ASYNC_SCU", ACCEPTED) in out["events"] and ("ASYNC_SCU", ABORTED) in out["events"]
    assert out["peer_aborted"] is True


async def _noop() -> None:
    return None


def _wait_aborted(assoc: Any) -> bool:
    deadline = time.monotonic() + 10
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(assoc.is_aborted)


def test_async_security_reads_and_reloads_tls_certificates(
    start_pacsd: Any, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    server = start_pacsd(["--config", str(tls_config(tmp_path, pki))])

    async def scenario() -> tuple[Any, Any, Any, str]:
        async with AsyncClient(server.endpoint, timeout=10) as client:
            before = await client.security.certificates()
            rotate_server_certificate(pki, "pacsd-async")
            reloaded = await client.security.reload()
            after = await client.security.certificates()
            pki.server.key.write_bytes(b"not a key\n")
            with pytest.raises(FailedPrecondition) as bad:
                await client.security.reload()
            return before, reloaded, after, bad.value.reason

    before, reloaded, after, reason = asyncio.run(scenario())
    assert before.enabled and before.listening
    assert (before.certificates[0].role, before.certificates[0].subject) == ("server", "CN=pacsd-a")
    assert reloaded.certificates[0].subject == "CN=pacsd-async"
    assert reloaded.port == before.port
    assert after.certificates[0].sha256_fingerprint == reloaded.certificates[0].sha256_fingerprint
    assert after.certificates[0].sha256_fingerprint != before.certificates[0].sha256_fingerprint
    assert reason == "CERTIFICATE_INVALID"


# -- AsyncFleet: bounded parallelism, per-call deadline --------------------------------------


def test_async_fleet_runs_at_most_parallelism_calls_at_once(pacsd: PacsdProcess) -> None:
    """Eight entries for one live server, parallelism 3. Each call holds its slot until
    three calls are in flight (or every call has started), so an unbounded fleet
    would show all eight at once and a bound of 3 shows exactly 3."""
    servers = [FleetServer(f"pacs{i}", pacsd.endpoint) for i in range(8)]
    seen: dict[str, int] = {"active": 0, "peak": 0, "started": 0}

    async def scenario() -> Any:
        full = asyncio.Event()

        async def call(client: AsyncClient) -> int:
            seen["active"] += 1
            seen["started"] += 1
            seen["peak"] = max(seen["peak"], seen["active"])
            try:
                pid = (await client.server.get()).pid
                if seen["active"] >= 3 or seen["started"] == len(servers):
                    full.set()
                await asyncio.wait_for(full.wait(), 10)
                return pid
            finally:
                seen["active"] -= 1

        async with AsyncFleet(servers, timeout=10, parallelism=3) as fleet:
            return await fleet.run(call)

    results = asyncio.run(scenario())
    assert results.ok, results.errors()
    assert set(results.values().values()) == {pacsd.proc.pid}
    assert (seen["started"], seen["peak"]) == (8, 3)


def test_async_fleet_call_ends_at_its_deadline_on_a_silent_server(pacsd: PacsdProcess) -> None:
    """A listener that accepts TCP connections and never says a word costs its own
    deadline, no more, and only its own result fails."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        quiet = f"127.0.0.1:{silent.getsockname()[1]}"

        async def scenario() -> Any:
            async with AsyncFleet([pacsd.endpoint, quiet], timeout=0.8) as fleet:
                start = time.monotonic()
                results = await fleet.server.get()
                return results, time.monotonic() - start

        results, seconds = asyncio.run(scenario())
    live, dead = results
    assert live.ok and live.unwrap().pid == pacsd.proc.pid
    assert not dead.ok and dead.server.endpoint == quiet
    assert isinstance(dead.error, PacsdError)
    assert dead.error.code is grpc.StatusCode.DEADLINE_EXCEEDED and dead.unreachable
    assert 0.8 <= dead.seconds < 3.0, dead.seconds
    assert seconds < 3.0, seconds
