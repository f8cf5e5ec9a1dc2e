"""The routing table: which add-in method answers which (service, SOP class).

A table is immutable. The manager builds a new one whenever the set of add-ins changes
and swaps it in with one assignment; each association takes the table current when it
is requested and keeps it, so it is offered the same presentation contexts throughout.
Observer hooks are published the same way, in a ``HookTable``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pacsd.addin import HandlerSpec, Hook, Service

if TYPE_CHECKING:
    from pacsd.server.addins.record import AddinRecord


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
        return cls(table, {uid: tuple(r) for uid, r in by_sop.items()})

    def lookup(self, service: Service, sop_class: str) -> Route | None:
        return self.routes.get((service, sop_class))

    def abstract_syntaxes(self) -> dict[str, tuple[str, ...]]:
        """SOP class -> transfer syntaxes to offer (union over the services claiming it)."""
        offered: dict[str, list[str]] = {}
        for (_, sop_class), route in self.routes.items():
            syntaxes = offered.setdefault(sop_class, [])
            syntaxes.extend(ts for ts in route.spec.transfer_syntaxes if ts not in syntaxes)
        return {uid: tuple(ts) for uid, ts in offered.items()}

    def sub_operation_syntaxes(self) -> dict[str, tuple[str, ...]]:
        """Storage SOP classes C-GET handlers send back -> transfer syntaxes (role reversal)."""
        offered: dict[str, list[str]] = {}
        for route in self.routes.values():
            if route.spec.service is not Service.C_GET:
                continue  # C-MOVE sub-operations go to another AE, not back to this peer
            for uid in route.spec.sub_operation_sop_classes:
                syntaxes = offered.setdefault(uid, [])
                syntaxes.extend(ts for ts in route.spec.transfer_syntaxes if ts not in syntaxes)
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
