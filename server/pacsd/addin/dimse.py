"""Decorators that mark an add-in method as the handler of one DIMSE service.

A decorated method is a *handler*: for each (service, SOP class) exactly one add-in on a
server owns the message and its answer is the response. The decorator only records a
``HandlerSpec`` on the function; the server's routing table reads it when the add-in loads,
so declaring a handler costs nothing at call time.
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
    #: Seconds the handler may run before the server answers with a failure for it.
    time_limit: float | None = None


def _handler(
    service: Service,
    sop_classes: Iterable[str],
    transfer_syntaxes: Iterable[str],
    time_limit: float | None,
) -> Callable[[F], F]:
    spec = HandlerSpec(service, tuple(sop_classes), tuple(transfer_syntaxes), time_limit)
    if not spec.sop_classes:
        raise ValueError(f"{service} handler declares no SOP classes")
    if not spec.transfer_syntaxes:
        raise ValueError(f"{service} handler declares no transfer syntaxes")

    def mark(fn: F) -> F:
        setattr(fn, HANDLER_ATTR, spec)
        return fn

    return mark


def c_echo(
    *,
    sop_classes: Iterable[str] = (sop.VERIFICATION,),
    transfer_syntaxes: Iterable[str] = sop.UNCOMPRESSED_TRANSFER_SYNTAXES,
    time_limit: float | None = None,
) -> Callable[[F], F]:
    """Handle C-ECHO-RQ. The method takes an ``EchoRequest`` and returns a status."""
    return _handler(Service.C_ECHO, sop_classes, transfer_syntaxes, time_limit)
