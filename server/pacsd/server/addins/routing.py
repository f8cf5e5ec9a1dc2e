"""The routing table: which add-in method answers which (service, SOP class).

A table is immutable. The manager builds a new one whenever the set of add-ins changes
and swaps it in with one assignment; each association takes the table current when it
is requested and keeps it, so running associations finish with the handlers they
started with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pacsd.addin import HandlerSpec, Service


class RouteConflictError(Exception):
    """Two add-ins claim the same (service, SOP class)."""


@dataclass(frozen=True, slots=True)
class Route:
    addin: str
    spec: HandlerSpec
    sop_class: str
    handler: Callable[[Any], Any]


@dataclass(frozen=True)
class RoutingTable:
    routes: dict[tuple[Service, str], Route]

    @classmethod
    def build(cls, routes: Iterable[Route]) -> RoutingTable:
        table: dict[tuple[Service, str], Route] = {}
        for route in routes:
            key = (route.spec.service, route.sop_class)
            other = table.get(key)
            if other is not None and other.addin != route.addin:
                raise RouteConflictError(
                    f"add-ins {other.addin!r} and {route.addin!r} both handle "
                    f"{route.spec.service} for SOP class {route.sop_class}"
                )
            table[key] = route
        return cls(table)

    def lookup(self, service: Service, sop_class: str) -> Route | None:
        return self.routes.get((service, sop_class))

    def abstract_syntaxes(self) -> dict[str, tuple[str, ...]]:
        """SOP class -> transfer syntaxes to offer (union over the services claiming it)."""
        offered: dict[str, list[str]] = {}
        for (_, sop_class), route in self.routes.items():
            syntaxes = offered.setdefault(sop_class, [])
            syntaxes.extend(ts for ts in route.spec.transfer_syntaxes if ts not in syntaxes)
        return {uid: tuple(ts) for uid, ts in offered.items()}


EMPTY_TABLE = RoutingTable({})
