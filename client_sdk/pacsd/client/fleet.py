"""Many pacsd servers at once: ``Fleet`` runs a client call on every server.

People who run pacsd run many nodes (a site, a modality group, a tenant each) and drive
them from scripts. A fleet call must therefore behave like a survey, not like a
transaction: every server gets the call, concurrently (bounded, so a fleet of hundreds
does not open hundreds of calls at once) and each under its own deadline, and the
answer is one result *or one error per server*. One dead server never raises and never
delays the others beyond its own deadline.

    from pacsd.client import Fleet

    with Fleet.from_inventory("fleet.toml", selector="site=north") as fleet:
        for r in fleet.run(lambda c: c.server.get()):
            print(r.server.name, r.value.state if r.ok else r.error)
        fleet.addins.reload("example_store")      # the same, as a broadcast

``AsyncFleet`` (``pacsd.client.aio``) is the same on grpc.aio.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

from pacsd.client.client import DEFAULT_TIMEOUT, Client
from pacsd.client.credentials import Credentials, CredentialsError, PathArg, resolve
from pacsd.client.errors import PacsdError
from pacsd.client.inventory import (
    DEFAULT_PARALLELISM,
    FleetServer,
    Inventory,
    InventoryError,
    Selector,
    check_credentials,
    load_inventory,
    parse_endpoints,
)

__all__ = ["Fleet", "FleetResults", "ServerResult", "error_to_dict"]

T = TypeVar("T")

#: Threads that close channels at once (they only wait, see Fleet.close).
_CLOSE_THREADS = 128


def error_to_dict(error: BaseException) -> dict[str, Any]:
    """The JSON shape of any per-server error: PacsdError's own, or UNKNOWN for an
    exception raised by the caller's function (a bug there is still one server's
    result, not the fleet's)."""
    if isinstance(error, PacsdError):
        return error.to_dict()
    return {
        "code": "UNKNOWN",
        "reason": "",
        "message": f"{type(error).__name__}: {error}",
        "metadata": {},
    }


@dataclass(frozen=True)
class ServerResult(Generic[T]):
    """What one server gave: ``value`` when the call succeeded, else ``error``.

    ``seconds`` is the wall time of that server's call, useful to spot the slow node.
    """

    server: FleetServer
    value: T | None = None
    error: Exception | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def unreachable(self) -> bool:
        """True when no pacsd answered at the server's endpoint."""
        return isinstance(self.error, PacsdError) and self.error.unreachable

    def unwrap(self) -> T:
        """The value, or the error raised (for code that wants exceptions back)."""
        if self.error is not None:
            raise self.error
        return cast(T, self.value)

    def to_dict(self, value: Callable[[T], Any] | None = None) -> dict[str, Any]:
        """``{"server", "endpoint", "ok", "result", "error"}``; ``value`` turns the
        result into JSON-ready data (default: as it is)."""
        result: Any = None
        if self.error is None:
            result = value(cast(T, self.value)) if value is not None else self.value
        return {
            "server": self.server.name,
            "endpoint": self.server.endpoint,
            "ok": self.ok,
            "result": result,
            "error": error_to_dict(self.error) if self.error is not None else None,
        }


class FleetResults(list[ServerResult[T]]):
    """One ``ServerResult`` per server, in fleet (inventory) order, whatever order
    the answers came in."""

    @property
    def ok(self) -> bool:
        """Every server succeeded (True for an empty fleet)."""
        return all(r.ok for r in self)

    @property
    def succeeded(self) -> list[ServerResult[T]]:
        return [r for r in self if r.ok]

    @property
    def failed(self) -> list[ServerResult[T]]:
        return [r for r in self if not r.ok]

    @property
    def unreachable(self) -> list[ServerResult[T]]:
        return [r for r in self if r.unreachable]

    def values(self) -> dict[str, T]:
        """Server name -> value, for the servers that succeeded."""
        return {r.server.name: cast(T, r.value) for r in self if r.ok}

    def errors(self) -> dict[str, Exception]:
        """Server name -> error, for the servers that failed."""
        return {r.server.name: r.error for r in self if r.error is not None}


class FleetBase:
    """What ``Fleet`` and ``AsyncFleet`` share: the servers, their validation and the
    choice of targets. Not used directly.

    ``credentials`` (or ``token``, ``cacert``, ``cert``, ``key`` given directly, as for
    ``Client``) are used for every server whose entry names no credentials profile of
    its own.
    """

    def __init__(
        self,
        servers: Iterable[FleetServer | str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        parallelism: int = DEFAULT_PARALLELISM,
        credentials: Credentials | None = None,
        token: str | None = None,
        cacert: PathArg = None,
        cert: PathArg = None,
        key: PathArg = None,
    ) -> None:
        try:
            default = resolve(credentials, token=token, cacert=cacert, cert=cert, key=key)
        except CredentialsError as exc:
            raise InventoryError(str(exc)) from exc
        chosen: list[FleetServer] = []
        for item in servers:
            chosen.extend(parse_endpoints([item]) if isinstance(item, str) else [item])
        if default is not None:
            chosen = [
                s if s.credentials is not None else dataclasses.replace(s, credentials=default)
                for s in chosen
            ]
        names = [s.name for s in chosen]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InventoryError(f"server name(s) used twice: {', '.join(duplicates)}")
        if not (isinstance(timeout, int | float) and timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
            raise ValueError(f"parallelism must be an integer of 1 or more, not {parallelism!r}")
        # Misconfigured credentials are the operator's mistake, not one server failing:
        # they are reported now, before any call, rather than as per-server errors.
        check_credentials(chosen)
        self.servers: tuple[FleetServer, ...] = tuple(chosen)
        self.timeout = float(timeout)
        self.parallelism = parallelism
        self._by_name = {s.name: s for s in chosen}

    @classmethod
    def from_endpoints(
        cls,
        endpoints: str | Iterable[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        parallelism: int = DEFAULT_PARALLELISM,
        credentials: Credentials | None = None,
        token: str | None = None,
        cacert: PathArg = None,
        cert: PathArg = None,
        key: PathArg = None,
    ) -> Self:
        """A fleet from ``"host:port,host:port"`` or a list; servers are named after
        their endpoints and have no labels; all use the credentials given."""
        return cls(
            parse_endpoints(endpoints),
            timeout=timeout,
            parallelism=parallelism,
            credentials=credentials,
            token=token,
            cacert=cacert,
            cert=cert,
            key=key,
        )

    @classmethod
    def from_inventory(
        cls,
        inventory: str | Path | Inventory,
        *,
        selector: str | Selector | None = None,
        timeout: float | None = None,
        parallelism: int | None = None,
        credentials: Credentials | None = None,
        token: str | None = None,
        cacert: PathArg = None,
        cert: PathArg = None,
        key: PathArg = None,
    ) -> Self:
        """The servers of an inventory (``fleet.toml``) that ``selector`` matches.

        ``timeout`` and ``parallelism`` default to the inventory's ``[defaults]``, then
        to the SDK's. A selector that matches nothing gives an empty fleet, whose calls
        return no results. The credentials given apply to servers for which the
        inventory names none.
        """
        inv = inventory if isinstance(inventory, Inventory) else load_inventory(inventory)
        return cls(
            inv.select(selector),
            timeout=timeout or inv.timeout or DEFAULT_TIMEOUT,
            parallelism=parallelism or inv.parallelism or DEFAULT_PARALLELISM,
            credentials=credentials,
            token=token,
            cacert=cacert,
            cert=cert,
            key=key,
        )

    def __len__(self) -> int:
        return len(self.servers)

    def __iter__(self) -> Iterator[FleetServer]:
        return iter(self.servers)

    def __getitem__(self, name: str) -> FleetServer:
        """The inventory entry of the server called ``name``."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no server named {name!r} in this fleet") from None

    def _targets(
        self, selector: str | Selector | None, names: Iterable[str] | None
    ) -> list[FleetServer]:
        chosen = Selector.parse(selector)
        wanted = None if names is None else set(names)
        if wanted is not None:
            unknown = sorted(wanted - self._by_name.keys())
            if unknown:
                raise KeyError(f"no server named {', '.join(unknown)} in this fleet")
        return [
            s for s in self.servers if chosen.matches(s) and (wanted is None or s.name in wanted)
        ]


class Fleet(FleetBase):
    """Many servers, driven through one ``Client`` per server (opened on first use).

    ``run(fn)`` calls ``fn(client)`` for every server, at most ``parallelism`` at once,
    and returns ``FleetResults``: never raises because a server failed, whatever ``fn``
    raised (each call's deadline is ``timeout``, as for ``Client``). ``fleet.server``,
    ``fleet.addins``, ``fleet.aetitles``, ``fleet.storage``, ``fleet.logs``,
    ``fleet.associations`` and ``fleet.security`` broadcast any unary method of the
    matching ``Client`` namespace: ``fleet.addins.list()`` is
    ``fleet.run(lambda c: c.addins.list())``. (Streams are read per server; merging
    them is the caller's choice, as ``pacsctl logs -f`` on a fleet does.)
    """

    def __init__(
        self,
        servers: Iterable[FleetServer | str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        parallelism: int = DEFAULT_PARALLELISM,
        credentials: Credentials | None = None,
        token: str | None = None,
        cacert: PathArg = None,
        cert: PathArg = None,
        key: PathArg = None,
    ) -> None:
        super().__init__(
            servers,
            timeout=timeout,
            parallelism=parallelism,
            credentials=credentials,
            token=token,
            cacert=cacert,
            cert=cert,
            key=key,
        )
        self._clients: dict[str, Client] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- connections -------------------------------------------------------------------

    def client(self, name: str) -> Client:
        """The client of one server (shared by every call to it)."""
        server = self[name]
        with self._lock:
            if self._closed:
                raise ValueError("this Fleet is closed")
            client = self._clients.get(name)
            if client is None:
                client = Client(
                    server.endpoint, timeout=self.timeout, credentials=server.credentials
                )
                self._clients[name] = client
            return client

    def close(self) -> None:
        """Close every connection; safe to call more than once."""
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        if len(clients) <= 1:
            for client in clients:
                client.close()
            return
        # Closing a channel waits for its connectivity watcher's current poll (up to
        # 0.2 s in grpcio); one after the other that is seconds for a large fleet, all
        # at once it is one poll.
        with ThreadPoolExecutor(
            max_workers=min(len(clients), _CLOSE_THREADS), thread_name_prefix="pacsd-close"
        ) as pool:
            list(pool.map(Client.close, clients))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Fleet({[s.name for s in self.servers]!r}, timeout={self.timeout!r})"

    # -- running calls -----------------------------------------------------------------

    def run(
        self,
        fn: Callable[[Client], T],
        *,
        selector: str | Selector | None = None,
        names: Iterable[str] | None = None,
    ) -> FleetResults[T]:
        """``fn(client)`` on every server (or those ``selector`` matches, or those
        named), concurrently; one result or error per server, in fleet order."""
        return self.each(lambda _server, client: fn(client), selector=selector, names=names)

    def each(
        self,
        fn: Callable[[FleetServer, Client], T],
        *,
        selector: str | Selector | None = None,
        names: Iterable[str] | None = None,
    ) -> FleetResults[T]:
        """Like ``run``, for functions that also need the server's inventory entry
        (its name or labels): ``fn(server, client)``."""
        return self.map_servers(
            lambda server: fn(server, self.client(server.name)), selector=selector, names=names
        )

    def map_servers(
        self,
        fn: Callable[[FleetServer], T],
        *,
        selector: str | Selector | None = None,
        names: Iterable[str] | None = None,
    ) -> FleetResults[T]:
        """``fn(server)`` on every target, concurrently, without opening its client
        first: for work that may not need one (``fleet.client(server.name)`` opens it).

        pacsctl uses it so that a command refusing its arguments never opens a channel:
        grpcio may hang at interpreter exit on a channel whose connectivity thread was
        still starting when the process ended.
        """
        targets = self._targets(selector, names)

        def one(server: FleetServer) -> ServerResult[T]:
            start = time.monotonic()
            try:
                value = fn(server)
            except Exception as exc:  # one server's failure is its result, never ours
                return ServerResult(server, error=exc, seconds=time.monotonic() - start)
            return ServerResult(server, value, seconds=time.monotonic() - start)

        workers = min(self.parallelism, len(targets))
        if workers <= 1:
            return FleetResults(one(s) for s in targets)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pacsd-fleet") as pool:
            futures = [pool.submit(one, s) for s in targets]
            return FleetResults(f.result() for f in futures)

    def health(self, service: str = "", *, timeout: float | None = None) -> FleetResults[str]:
        """``Client.health`` on every server."""
        return self.run(lambda c: c.health(service, timeout=timeout))

    def shutdown(
        self, grace_period: float | None = None, *, timeout: float | None = None
    ) -> FleetResults[None]:
        """``Client.shutdown`` on every server."""
        return self.run(lambda c: c.shutdown(grace_period, timeout=timeout))

    @property
    def server(self) -> Broadcast:
        return Broadcast(self, ("server",))

    @property
    def addins(self) -> Broadcast:
        return Broadcast(self, ("addins",))

    @property
    def aetitles(self) -> Broadcast:
        return Broadcast(self, ("aetitles",))

    @property
    def storage(self) -> Broadcast:
        return Broadcast(self, ("storage",))

    @property
    def logs(self) -> Broadcast:
        return Broadcast(self, ("logs",))

    @property
    def associations(self) -> Broadcast:
        return Broadcast(self, ("associations",))

    @property
    def security(self) -> Broadcast:
        return Broadcast(self, ("security",))

    def broadcast(self, *path: str) -> Broadcast:
        """A broadcast of any client attribute path, e.g. a namespace added later:
        ``fleet.broadcast("logs").set_level("DEBUG")``."""
        return Broadcast(self, path)


class Broadcast:
    """``fleet.addins.reload("x")``: the method at ``path`` of every server's client,
    run through ``Fleet.run``. Attribute access extends the path; calling runs it."""

    def __init__(self, fleet: Fleet, path: tuple[str, ...]) -> None:
        self._fleet = fleet
        self._path = path

    def __getattr__(self, name: str) -> Broadcast:
        if name.startswith("_"):
            raise AttributeError(name)
        return Broadcast(self._fleet, (*self._path, name))

    def __call__(self, *args: Any, **kwargs: Any) -> FleetResults[Any]:
        path = self._path

        def call(client: Client) -> Any:
            target: Any = client
            for part in path:
                target = getattr(target, part)
            return target(*args, **kwargs)

        return self._fleet.run(call)

    def __repr__(self) -> str:
        return f"<broadcast of client.{'.'.join(self._path)} to {len(self._fleet)} servers>"
