"""The routing table: which add-in method answers which (service, SOP class).

A table is immutable. The manager builds a new one whenever the set of add-ins changes
and swaps it in with one assignment; each association takes the table current when it
is requested and keeps it, so it is offered the same presentation contexts throughout.
Observer hooks are published the same way, in a ``HookTable``.

What the DICOM side derives from a table (its presentation contexts) is built with the
table, through ``derive_on_build``, so that no association pays for it: this module
stays free of pynetdicom.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pacsd.addin import HandlerSpec, Hook, Service

if TYPE_CHECKING:
    from pacsd.server.addins.record import AddinRecord

log = logging.getLogger("pacsd.core.addins")

#: name -> builder of data derived from a table, run on every table ``build`` returns.
_DERIVATIONS: dict[str, Callable[[RoutingTable], Any]] = {}


def derive_on_build(name: str, builder: Callable[[RoutingTable], Any]) -> None:
    """Build ``builder(table)`` along with every table from now on; read it with
    ``table.derived(name, builder)``. A builder must not depend on anything but the
    table (the result is kept for the table's lifetime)."""
    _DERIVATIONS[name] = builder


class RouteConflictError(Exception):
    """Two add-ins claim the same (service, SOP class)."""

    def __init__(self, first: str, second: str, service: str, sop_class: str) -> None:
        self.addins = (first, second)
        self.service, self.sop_class = service, sop_class
        super().__init__(
            f"add-ins {first!r} and {second!r} both handle {service} for SOP class {sop_class}"
        )


@dataclass(frozen=True, slots=True)
class Route:
    record: AddinRecord
    spec: HandlerSpec
    sop_class: str
    handler: Callable[[Any], Any]

    @property
    def addin(self) -> str:
        return self.record.name


@dataclass(frozen=True)
class RoutingTable:
    routes: dict[tuple[Service, str], Route]
    #: SOP class -> the add-in records routed for it (for per-association accepts()).
    by_sop_class: dict[str, tuple[AddinRecord, ...]] = field(default_factory=dict)
    #: Every add-in record routed, once each (so that a check over them all costs a
    #: few calls per association, not one per SOP class).
    records: tuple[AddinRecord, ...] = ()
    #: name -> data derived from this table (``derive_on_build``).
    _derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, routes: Iterable[Route]) -> RoutingTable:
        table: dict[tuple[Service, str], Route] = {}
        by_sop: dict[str, list[AddinRecord]] = {}
        for route in routes:
            key = (route.spec.service, route.sop_class)
            other = table.get(key)
            if other is not None and other.record is not route.record:
                raise RouteConflictError(
                    other.addin, route.addin, route.spec.service, route.sop_class
                )
            table[key] = route
            owners = by_sop.setdefault(route.sop_class, [])
            if route.record not in owners:
                owners.append(route.record)
        records: list[AddinRecord] = []
        for owners in by_sop.values():
            for record in owners:
                if record not in records:
                    records.append(record)
        built = cls(table, {uid: tuple(r) for uid, r in by_sop.items()}, tuple(records))
        for name, builder in list(_DERIVATIONS.items()):
            try:
                built._derived[name] = builder(built)
            except Exception:  # built again, and raised, by its first reader
                log.exception("building %s for a new routing table failed", name)
        return built

    def derived(self, name: str, builder: Callable[[RoutingTable], Any]) -> Any:
        """What ``builder`` derives from this table, built once (normally by ``build``;
        for a table made otherwise, by its first reader)."""
        try:
            return self._derived[name]
        except KeyError:
            value = self._derived[name] = builder(self)
            return value

    def lookup(self, service: Service, sop_class: str) -> Route | None:
        return self.routes.get((service, sop_class))

    def abstract_syntaxes(self) -> dict[str, tuple[str, ...]]:
        """SOP class -> transfer syntaxes to offer (union over the services claiming it)."""
        # Dicts as ordered sets: first declaration first, each syntax once.
        offered: dict[str, dict[str, None]] = {}
        for (_, sop_class), route in self.routes.items():
            offered.setdefault(sop_class, {}).update(dict.fromkeys(route.spec.transfer_syntaxes))
        return {uid: tuple(ts) for uid, ts in offered.items()}

    def sub_operation_syntaxes(self) -> dict[str, tuple[str, ...]]:
        """Storage SOP classes C-GET handlers send back -> transfer syntaxes (role reversal)."""
        offered: dict[str, dict[str, None]] = {}
        for route in self.routes.values():
            if route.spec.service is not Service.C_GET:
                continue  # C-MOVE sub-operations go to another AE, not back to this peer
            syntaxes = dict.fromkeys(route.spec.transfer_syntaxes)
            for uid in route.spec.sub_operation_sop_classes:
                offered.setdefault(uid, {}).update(syntaxes)
        return {uid: tuple(ts) for uid, ts in offered.items()}


@dataclass(frozen=True)
class HookTable:
    hooks: dict[Hook, tuple[tuple[AddinRecord, Callable[..., Any]], ...]]

    @classmethod
    def build(cls, records: Iterable[AddinRecord]) -> HookTable:
        table: dict[Hook, list[tuple[AddinRecord, Callable[..., Any]]]] = {}
        for record in records:
            for name, fn in record.hooks:
                table.setdefault(Hook(name), []).append((record, fn))
        return cls({h: tuple(v) for h, v in table.items()})

    def get(self, hook: Hook) -> tuple[tuple[AddinRecord, Callable[..., Any]], ...]:
        return self.hooks.get(hook, ())


EMPTY_TABLE = RoutingTable({})
EMPTY_HOOKS = HookTable({})
