"""Loads, unloads, reloads, enables and disables add-ins at runtime.

Every change builds a new routing table and hook table from the enabled add-ins and
swaps them in with one assignment each (``_publish``), so the DICOM listener never
stops: associations already negotiated keep the table they started with, and new ones
are offered the new set of presentation contexts. Changes are serialised by one lock;
reading the tables takes no lock at all.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pacsd.addin import Addin, AddinContext
from pacsd.server.addins.record import AddinRecord, AddinState
from pacsd.server.addins.registry import AddinLoadError, AddinSource, discover, path_source
from pacsd.server.addins.routing import (
    EMPTY_HOOKS,
    EMPTY_TABLE,
    HookTable,
    Route,
    RouteConflictError,
    RoutingTable,
)
from pacsd.server.config import Settings
from pacsd.server.services import ServiceRegistry
from pydantic import ValidationError

log = logging.getLogger("pacsd.core.addins")


class AddinNotFound(Exception):
    pass


class AddinNotLoaded(Exception):
    pass


class SettingsInvalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class CommandNotFound(Exception):
    pass


class CommandFailed(Exception):
    pass


class StartupAddinError(Exception):
    """A required add-in failed to load."""


#: Builds the base services for an add-in's context (logger, AE registry, client...).
ContextFactory = Callable[[str, Any], AddinContext]


def default_context(name: str, settings: Any) -> AddinContext:
    return AddinContext(name=name, log=logging.getLogger(f"pacsd.addin.{name}"), settings=settings)


class AddinManager:
    def __init__(
        self,
        settings: Settings,
        context_factory: ContextFactory = default_context,
        sources: Callable[[], dict[str, AddinSource]] | None = None,
        services: ServiceRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._services = services
        self._context_factory = context_factory
        self._sources = sources or (lambda: discover(settings.addin_paths))
        self._lock = threading.RLock()
        self._records: dict[str, AddinRecord] = {}
        self._table: RoutingTable = EMPTY_TABLE
        self._hooks: HookTable = EMPTY_HOOKS

    # -- reading (lock-free) ----------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        return self._table

    @property
    def hooks(self) -> HookTable:
        return self._hooks

    def list(self) -> list[AddinRecord]:
        """Every known add-in: discovered ones not loaded appear as AVAILABLE."""
        with self._lock:
            for name, source in self._sources().items():
                self._records.setdefault(name, AddinRecord(name, source))
            return sorted(self._records.values(), key=lambda r: r.name)

    def records(self) -> builtins.list[AddinRecord]:
        """The add-ins known so far, without discovering again (cheap: for metrics)."""
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.name)

    def get(self, name: str) -> AddinRecord:
        with self._lock:
            record = self._records.get(name)
            if record is None:
                source = self._sources().get(name)
                if source is None:
                    raise AddinNotFound(f"no add-in named {name!r}")
                record = self._records[name] = AddinRecord(name, source)
            return record

    # -- startup and shutdown ---------------------------------------------------------

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
        for name in sorted(set(self._settings.addins) - sources.keys()):
            log.warning("settings configure add-in %r, which is not installed", name)
        with self._lock:
            for name, source in sorted(sources.items()):
                record = self._records.setdefault(name, AddinRecord(name, source))
                config = self._settings.addins.get(name)
                if config is not None and not config.enabled:
                    if name in required:
                        raise StartupAddinError(f"required add-in {name!r} is disabled")
                    continue
                try:
                    self._load(record)
                except (AddinLoadError, RouteConflictError) as exc:
                    if name in required:
                        raise StartupAddinError(f"required add-in {name!r} failed: {exc}") from exc

    def stop_all(self) -> None:
        with self._lock:
            for record in self._records.values():
                if record.instance is not None:
                    record.state = AddinState.AVAILABLE
            self._publish()
            for record in self._records.values():
                self._stop_instance(record)

    # -- runtime operations (each returns the record and whether anything changed) ---

    def load(self, name_or_path: str) -> tuple[AddinRecord, bool]:
        with self._lock:
            record = self._resolve(name_or_path)
            if record.instance is not None:
                return record, False
            self._load(record)
            return record, True

    def unload(self, name: str, grace_period: float) -> tuple[AddinRecord, bool]:
        with self._lock:
            record = self.get(name)
            if record.instance is None:
                changed = record.state is AddinState.FAILED
                record.state, record.error = AddinState.AVAILABLE, ""
                return record, changed
            record.state = AddinState.AVAILABLE
            self._publish()
        self._drain(record, grace_period)
        with self._lock:
            self._stop_instance(record)
            log.info("add-in %s unloaded", name)
            return record, True

    def reload(self, name: str, grace_period: float) -> AddinRecord:
        """Import the code afresh and swap instances; if the new one fails, the old stays."""
        with self._lock:
            old = self.get(name)
            if old.instance is None:
                self._load(old, fresh=True)
                return old
            new = AddinRecord(name, old.source, raw_settings=dict(old.raw_settings))
            self._load(new, fresh=True, replacing=old, enabled=old.state is AddinState.ENABLED)
            self._records[name] = new
            old.state = AddinState.AVAILABLE
            self._publish()
        self._drain(old, grace_period)
        with self._lock:
            self._stop_instance(old)
        log.info("add-in %s reloaded (%s)", name, new.version)
        return new

    def enable(self, name: str) -> tuple[AddinRecord, bool]:
        with self._lock:
            record = self._loaded(name)
            if record.state is AddinState.ENABLED:
                return record, False
            self._check_conflicts(record)
            record.state = AddinState.ENABLED
            self._publish()
            return record, True

    def disable(self, name: str) -> tuple[AddinRecord, bool]:
        with self._lock:
            record = self._loaded(name)
            if record.state is AddinState.DISABLED:
                return record, False
            record.state = AddinState.DISABLED
            self._publish()
            return record, True

    def get_settings(self, name: str) -> dict[str, Any]:
        record = self.get(name)
        if record.context is None:
            return dict(record.raw_settings)
        return _dump(record.context.settings)

    def update_settings(self, name: str, changes: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        with self._lock:
            record = self._loaded(name)
            assert record.instance is not None and record.context is not None
            before = _dump(record.context.settings)
            merged = {**before, **changes}
            validated = _validate(type(record.instance), merged)
            after = _dump(validated)
            if after == before:
                return after, False
            record.context.settings = validated
            record.raw_settings = merged
            try:
                record.instance.settings_changed(validated)
            except Exception:
                log.exception("add-in %s failed to apply new settings", name)
            if self._services is not None:
                # A provider's settings may move what the server built on the service
                # (the DICOM TLS port follows the "security" settings).
                self._services.changed(self._services.provided_by(name))
            return after, True

    def invoke(self, name: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
        record = self._loaded(name)
        method = record.commands.get(command)
        if method is None:
            known = ", ".join(sorted(record.commands)) or "none"
            raise CommandNotFound(f"add-in {name!r} has no command {command!r} (has: {known})")
        try:
            result = getattr(record.instance, method)(args)
        except Exception as exc:
            log.exception("command %s of add-in %s failed", command, name)
            raise CommandFailed(f"command {command!r} of add-in {name!r} failed: {exc!r}") from exc
        return result if isinstance(result, dict) else {"result": result}

    # -- internals --------------------------------------------------------------------

    def _resolve(self, name_or_path: str) -> AddinRecord:
        if name_or_path in self._records or name_or_path in self._sources():
            return self.get(name_or_path)
        if "/" in name_or_path or name_or_path.endswith(".py"):
            path = Path(name_or_path)
            if not path.exists():
                raise AddinNotFound(f"no add-in file or folder at {name_or_path}")
            source = path_source(path)
            record = self._records.get(source.name)
            if record is None or record.source.path != source.path:
                if record is not None and record.instance is not None:
                    raise AddinLoadError(
                        f"an add-in named {source.name!r} is already loaded from "
                        f"{record.source.origin}"
                    )
                record = self._records[source.name] = AddinRecord(source.name, source)
            return record
        raise AddinNotFound(f"no add-in named {name_or_path!r}")

    def _loaded(self, name: str) -> AddinRecord:
        record = self.get(name)
        if record.instance is None:
            raise AddinNotLoaded(f"add-in {name!r} is not loaded")
        return record

    def _load(
        self,
        record: AddinRecord,
        fresh: bool = False,
        replacing: AddinRecord | None = None,
        enabled: bool = True,
    ) -> None:
        """Import, validate settings, start and route; on failure the record is FAILED."""
        name = record.name
        try:
            cls = record.source.load_class(fresh=fresh)
            record.version, record.description = cls.version, cls.description
            config = self._settings.addins.get(name)
            if not record.raw_settings and config is not None:
                record.raw_settings = dict(config.settings)
            try:
                settings = _validate(cls, record.raw_settings)
            except SettingsInvalid as exc:
                raise AddinLoadError(f"invalid settings: {exc}") from exc
            instance = cls()
            record.routes = [
                Route(record, spec, sop_class, getattr(instance, attr))
                for attr, spec in cls.handler_specs()
                for sop_class in spec.sop_classes
            ]
            self._check_conflicts(record, ignore=replacing)
            ctx = self._context_factory(name, settings)
            try:
                instance.start(ctx)
            except Exception as exc:
                log.exception("add-in %s failed to start", name)
                raise AddinLoadError(f"start failed: {exc!r}") from exc
            try:
                self._install_services(name, instance, replacing)
            except Exception as exc:
                _stop_quietly(instance, name)
                raise AddinLoadError(str(exc)) from exc
        except (AddinLoadError, RouteConflictError) as exc:
            record.state, record.error, record.routes = AddinState.FAILED, str(exc), []
            log.error("add-in %s not loaded: %s", name, exc)
            raise
        record.instance, record.context = instance, ctx
        record.hooks = [(h.value, getattr(instance, attr)) for attr, h in cls.hook_methods()]
        record.commands = cls.command_methods()
        record.error, record.healthy = "", True
        record.state = AddinState.ENABLED if enabled else AddinState.DISABLED
        if replacing is None:
            self._publish()
        log.info("add-in %s %s loaded from %s", name, record.version, record.source.origin)

    def _install_services(self, name: str, instance: Addin, replacing: AddinRecord | None) -> None:
        if self._services is None or not instance.provides:
            return
        released = self._services.release(name, notify=False) if replacing is not None else []
        for service in instance.provides:
            self._services.override(service, name, instance.provide(service))
            log.info("add-in %s provides the %s service", name, service)
        # Services the old version provided and this one does not are back to default.
        self._services.changed(s for s in released if s not in instance.provides)

    def _check_conflicts(self, record: AddinRecord, ignore: AddinRecord | None = None) -> None:
        others = [
            r
            for other in self._records.values()
            if other is not record and other is not ignore and other.routable
            for r in other.routes
        ]
        RoutingTable.build([*others, *record.routes])

    def _publish(self) -> None:
        enabled = [r for r in self._records.values() if r.routable]
        self._table = RoutingTable.build(route for r in enabled for route in r.routes)
        self._hooks = HookTable.build(enabled)

    def _drain(self, record: AddinRecord, grace_period: float) -> None:
        if not record.wait_idle(grace_period):
            log.warning(
                "add-in %s still has calls in flight after %.1fs; stopping it anyway",
                record.name,
                grace_period,
            )

    def _stop_instance(self, record: AddinRecord) -> None:
        instance, record.instance = record.instance, None
        record.routes, record.hooks, record.commands = [], [], {}
        if instance is None:
            return
        current = self._records.get(record.name)
        if self._services is not None and (current is None or current.instance is None):
            self._services.release(record.name)
        _stop_quietly(instance, record.name)


def _stop_quietly(instance: Addin, name: str) -> None:
    try:
        instance.stop()
    except Exception:
        log.exception("add-in %s failed to stop", name)


def _validate(cls: type[Addin], raw: dict[str, Any]) -> Any:
    model = cls.settings_model
    if model is None:
        return dict(raw)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        message = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        raise SettingsInvalid(field, message) from exc


def _dump(settings: Any) -> dict[str, Any]:
    if hasattr(settings, "model_dump"):
        return settings.model_dump(mode="json")
    return dict(settings)
