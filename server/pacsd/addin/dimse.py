"""Decorators that mark an add-in method as the handler of one DIMSE service.

A decorated method is a *handler*: for each (service, SOP class) exactly one add-in on a
server owns the message, and its answer is the response. The decorator only records a
``HandlerSpec`` on the function; the server's routing table reads it when the add-in
loads, so declaring a handler costs nothing at call time.

What each handler receives and returns:

=================  =====================  ==============================================
decorator          request                returns
=================  =====================  ==============================================
``c_echo``         ``EchoRequest``        a status
``c_store``        ``StoreRequest``       a status
``c_find``         ``FindRequest``        yields identifiers (each a pending response)
``c_get``          ``GetRequest``         yields the number of sub-operations, then
                                          the datasets to send
``c_move``         ``MoveRequest``        same as ``c_get``; pacsd opens the association
                                          to the destination from the AE registry. The
                                          count may be yielded as ``(count, pairs)``
                                          with the (SOP class, transfer syntax) pairs
                                          the datasets use, so each is proposed
``n_*``            ``NRequest``           a status, or ``(status, dataset)``
=================  =====================  ==============================================

Raising ``DimseFailure(status)`` answers with that status; any other exception answers
``0x0110`` (processing failure) and is logged with its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from pacsd.addin import sop

F = TypeVar("F", bound=Callable[..., Any])

HANDLER_ATTR = "__pacsd_handler__"


class Service(StrEnum):
    """DIMSE services, named as in PS3.7."""

    C_ECHO = "C-ECHO"
    C_STORE = "C-STORE"
    C_FIND = "C-FIND"
    C_MOVE = "C-MOVE"
    C_GET = "C-GET"
    N_ACTION = "N-ACTION"
    N_CREATE = "N-CREATE"
    N_SET = "N-SET"
    N_GET = "N-GET"
    N_EVENT_REPORT = "N-EVENT-REPORT"
    N_DELETE = "N-DELETE"


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """What a handler claims: a service, its SOP classes, the transfer syntaxes it accepts."""

    service: Service
    sop_classes: tuple[str, ...]
    transfer_syntaxes: tuple[str, ...]
    #: Seconds the handler may run (per yielded result for FIND/GET/MOVE) before pacsd
    #: answers with a failure for it and reports the add-in unhealthy. None: the server's
    #: ``handler_time_limit`` setting.
    time_limit: float | None = None
    #: C-GET only: Storage SOP classes the handler may send back on the same association
    #: (offered with SCP/SCU role selection).
    sub_operation_sop_classes: tuple[str, ...] = ()


def _handler(
    service: Service,
    sop_classes: Iterable[str],
    transfer_syntaxes: Iterable[str],
    time_limit: float | None,
    sub_operation_sop_classes: Iterable[str] = (),
) -> Callable[[F], F]:
    spec = HandlerSpec(
        service,
        tuple(sop_classes),
        tuple(transfer_syntaxes),
        time_limit,
        tuple(sub_operation_sop_classes),
    )
    if not spec.sop_classes:
        raise ValueError(f"{service} handler declares no SOP classes")
    if not spec.transfer_syntaxes:
        raise ValueError(f"{service} handler declares no transfer syntaxes")
    if time_limit is not None and time_limit <= 0:
        raise ValueError(f"{service} handler time_limit must be positive")

    def mark(fn: F) -> F:
        setattr(fn, HANDLER_ATTR, spec)
        return fn

    return mark


def _decorator(service: Service, default_sop_classes: tuple[str, ...] = ()) -> Callable[..., Any]:
    def decorator(
        *,
        sop_classes: Iterable[str] = default_sop_classes,
        transfer_syntaxes: Iterable[str] = sop.UNCOMPRESSED_TRANSFER_SYNTAXES,
        time_limit: float | None = None,
    ) -> Callable[[F], F]:
        return _handler(service, sop_classes, transfer_syntaxes, time_limit)

    decorator.__name__ = service.name.lower()
    decorator.__doc__ = f"Handle {service} requests for the given SOP classes."
    return decorator


c_echo = _decorator(Service.C_ECHO, (sop.VERIFICATION,))
c_store = _decorator(Service.C_STORE)
c_find = _decorator(Service.C_FIND)


def c_get(
    *,
    sop_classes: Iterable[str] = (),
    transfer_syntaxes: Iterable[str] = sop.UNCOMPRESSED_TRANSFER_SYNTAXES,
    time_limit: float | None = None,
    storage_sop_classes: Iterable[str] = sop.ALL_STORAGE,
) -> Callable[[F], F]:
    """Handle C-GET requests; ``storage_sop_classes`` are what it may send back."""
    return _handler(Service.C_GET, sop_classes, transfer_syntaxes, time_limit, storage_sop_classes)


def c_move(
    *,
    sop_classes: Iterable[str] = (),
    transfer_syntaxes: Iterable[str] = sop.UNCOMPRESSED_TRANSFER_SYNTAXES,
    time_limit: float | None = None,
    storage_sop_classes: Iterable[str] = (),
) -> Callable[[F], F]:
    """Handle C-MOVE requests; ``storage_sop_classes`` (at most 128) are proposed to the
    destination for the sub-operations. Default: the 120 most common Storage classes."""
    classes = tuple(storage_sop_classes)
    if len(classes) > 128:
        raise ValueError("an association carries at most 128 presentation contexts")
    return _handler(Service.C_MOVE, sop_classes, transfer_syntaxes, time_limit, classes)


n_action = _decorator(Service.N_ACTION)
n_create = _decorator(Service.N_CREATE)
n_set = _decorator(Service.N_SET)
n_get = _decorator(Service.N_GET)
n_event_report = _decorator(Service.N_EVENT_REPORT)
n_delete = _decorator(Service.N_DELETE)
