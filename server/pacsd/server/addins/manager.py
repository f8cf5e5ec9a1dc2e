"""Loads add-ins, tracks their state, and publishes the routing table built from them.

This first version loads at startup only; runtime load/unload/reload extends the same
``LoadedAddin`` records and ``_publish`` swap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from pacsd.addin import Addin, AddinContext
from pacsd.server.addins.registry import AddinLoadError, AddinSource, discover
from pacsd.server.addins.routing import EMPTY_TABLE, Route, RouteConflictError, RoutingTable
from pacsd.server.config import Settings

log = logging.getLogger("pacsd.core.addins")


class AddinState(StrEnum):
    LOADED = "loaded"
    DISABLED = "disabled"
    FAILED = "failed"


@dataclass
class LoadedAddin:
    name: str
    origin: str
    state: AddinState
    instance: Addin | None = None
    version: str = ""
    description: str = ""
    error: str = ""
    routes: list[Route] = field(default_factory=list)


class StartupAddinError(Exception):
    """A required add-in failed to load."""


class AddinManager:
    def __init__(
        self, settings: Settings, sources: Callable[[], dict[str, AddinSource]] = discover
    ):
        self._settings = settings
        self._sources = sources
        self._lock = threading.RLock()
        self._addins: dict[str, LoadedAddin] = {}
        self._table: RoutingTable = EMPTY_TABLE
        self._listeners: list[Callable[[RoutingTable], None]] = []

    @property
    def table(self) -> RoutingTable:
        """The current routing table (read without locking: the swap is one assignment)."""
        return self._table

    def addins(self) -> list[LoadedAddin]:
        with self._lock:
            return list(self._addins.values())

    def load_startup(self) -> None:
        """Load every discovered add-in the settings leave enabled.

        A failing add-in stays listed as FAILED and the rest serve, unless it is in
        ``required_addins``, which makes startup fail.
        """
        sources = self._sources()
        required = set(self._settings.required_addins)
        missing = sorted(required - sources.keys())
        if missing:
            raise StartupAddinError(f"required add-in(s) not installed: {', '.join(missing)}")
        unknown = sorted(set(self._settings.addins) - sources.keys())
        for name in unknown:
            log.warning("settings configure add-in %r, which is not installed", name)
        with self._lock:
            for name, source in sorted(sources.items()):
                config = self._settings.addins.get(name)
                if config is not None and not config.enabled:
                    if name in required:
                        raise StartupAddinError(f"required add-in {name!r} is disabled")
                    self._addins[name] = LoadedAddin(name, source.origin, AddinState.DISABLED)
                    continue
                record = self._load(source)
                self._addins[name] = record
                if record.state is AddinState.FAILED and name in required:
                    raise StartupAddinError(f"required add-in {name!r} failed: {record.error}")
            self._publish()

    def _load(self, source: AddinSource) -> LoadedAddin:
        record = LoadedAddin(source.name, source.origin, AddinState.FAILED)
        try:
            cls = source.load_class()
            record.version, record.description = cls.version, cls.description
            instance = cls()
            config = self._settings.addins.get(source.name)
            ctx = AddinContext(
                name=source.name,
                log=logging.getLogger(f"pacsd.addin.{source.name}"),
                settings=dict(config.settings) if config else {},
            )
            instance.start(ctx)
            routes = [
                Route(source.name, spec, sop_class, getattr(instance, attr))
                for attr, spec in cls.handler_specs()
                for sop_class in spec.sop_classes
            ]
            # Check the new routes against those already published before accepting them.
            RoutingTable.build([*self._all_routes(), *routes])
        except (AddinLoadError, RouteConflictError) as exc:
            record.error = str(exc)
        except Exception as exc:  # an add-in's own start() failing
            record.error = f"start failed: {exc!r}"
            log.exception("add-in %s failed to start", source.name)
        else:
            record.state, record.instance, record.routes = AddinState.LOADED, instance, routes
            log.info("add-in %s %s loaded from %s", source.name, record.version, source.origin)
            return record
        log.error("add-in %s not loaded: %s", source.name, record.error)
        return record

    def _all_routes(self) -> list[Route]:
        return [r for a in self._addins.values() for r in a.routes]

    def _publish(self) -> None:
        self._table = RoutingTable.build(self._all_routes())

    def stop_all(self) -> None:
        with self._lock:
            for record in self._addins.values():
                if record.instance is None:
                    continue
                try:
                    record.instance.stop()
                except Exception:
                    log.exception("add-in %s failed to stop", record.name)
                record.instance, record.routes = None, []
            self._table = EMPTY_TABLE
