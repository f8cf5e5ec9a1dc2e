"""Turns pynetdicom's intervention events into add-in handler calls.

The association's own routing snapshot decides which add-in answers. A handler that
raises is answered with a failure status and logged with its traceback; it never
reaches pynetdicom, so one faulty add-in cannot break the association or the server.
"""

from __future__ import annotations

import logging
from typing import Any

from pacsd.addin import AssociationInfo, EchoRequest, Service, Status
from pacsd.server.addins.routing import Route, RoutingTable
from pynetdicom.events import Event

log = logging.getLogger("pacsd.core.dispatch")


def association_info(event: Event) -> AssociationInfo:
    assoc = event.assoc
    return AssociationInfo(
        id=getattr(assoc, "pacsd_id", ""),
        calling_ae=assoc.requestor.ae_title,
        called_ae=assoc.acceptor.ae_title,
        peer_host=assoc.requestor.address,
        peer_port=assoc.requestor.port,
    )


def _route(event: Event, service: Service, sop_class: str) -> Route | None:
    table: RoutingTable = event.assoc.pacsd_routes  # type: ignore[attr-defined]
    return table.lookup(service, sop_class)


def _call(route: Route, request: Any) -> int:
    try:
        status = route.handler(request)
    except Exception:
        log.exception("add-in %s raised in its %s handler", route.addin, route.spec.service)
        return int(Status.PROCESSING_FAILURE)
    try:
        return int(status)
    except (TypeError, ValueError):
        log.error(
            "add-in %s returned %r from its %s handler; expected a status code",
            route.addin,
            status,
            route.spec.service,
        )
        return int(Status.PROCESSING_FAILURE)


def handle_echo(event: Event) -> int:
    sop_class = str(event.request.AffectedSOPClassUID)
    route = _route(event, Service.C_ECHO, sop_class)
    if route is None:
        # Only reachable if a context was accepted without a route; answer honestly.
        return int(Status.SOP_CLASS_NOT_SUPPORTED)
    request = EchoRequest(
        association=association_info(event),
        message_id=int(event.request.MessageID or 0),
        sop_class_uid=sop_class,
    )
    return _call(route, request)
