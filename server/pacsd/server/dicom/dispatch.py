"""Turns pynetdicom's intervention events into add-in handler calls.

Each association routes with the table it was negotiated with. If the add-in behind a
route has since been reloaded, the call goes to its new instance; if it was unloaded or
disabled, the request is refused (0x0122) rather than sent to stopped code.

Nothing an add-in does reaches pynetdicom as an exception: a raise becomes 0x0110 (or
the status of a ``DimseFailure``), a handler past its time limit becomes a failure
status, and both are logged and counted against the add-in.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pacsd.addin import (
    DimseFailure,
    EchoRequest,
    FindRequest,
    GetRequest,
    MoveRequest,
    NRequest,
    Service,
    Status,
    StoreRequest,
    sop,
)
from pacsd.addin.requests import _Lazy
from pacsd.server import logcontext
from pacsd.server.addins.record import BATCH_ITEMS, HandlerTimeout, LateReturn
from pacsd.server.addins.routing import Route, RoutingTable
from pacsd.server.dicom import pdu_guard, policy, send_path
from pacsd.server.dicom.associations import association_info
from pacsd.server.dicom.spool import SpoolFile
from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import (
    PresentationContext,
    StoragePresentationContexts,
    build_context,
)

log = logging.getLogger("pacsd.core.dispatch")

#: The failure status each service answers when an add-in raises or times out.
FAILURE: dict[Service, int] = {
    Service.C_ECHO: Status.PROCESSING_FAILURE,
    Service.C_STORE: Status.PROCESSING_FAILURE,
    Service.C_FIND: Status.UNABLE_TO_PROCESS,
    Service.C_GET: Status.UNABLE_TO_PROCESS,
    Service.C_MOVE: Status.UNABLE_TO_PROCESS,
}

#: C-STORE: "Data Set does not match SOP Class" (PS3.4 Table B.2-1), the archive's answer to a
#: SOP Instance or Class UID that is not a UID (storage/archive.py).
INVALID_UID = 0xA900


class Dispatcher:
    """Holds what dispatch needs beyond the event: the current table, limits, registry."""

    def __init__(
        self,
        current_table: Callable[[], RoutingTable],
        default_time_limit: Callable[[], float | None],
        resolve_ae: Callable[[str], Any],
    ) -> None:
        self._current = current_table
        self._default_limit = default_time_limit
        self._resolve_ae = resolve_ae
        #: The AE registry lookup, shared with the access policy's admission check.
        self.resolve_ae = resolve_ae

    # -- routing ------------------------------------------------------------------------

    def _route(self, event: Event, service: Service) -> Route | None:
        sop_class = str(event.context.abstract_syntax)
        table: RoutingTable = event.assoc.pacsd_routes  # type: ignore[attr-defined]
        route = table.lookup(service, sop_class)
        if route is None or route.record.routable:
            return route
        # The add-in changed since negotiation: follow a reload, refuse an unload.
        current = self._current().lookup(service, sop_class)
        if current is not None and current.addin == route.addin:
            return current
        return None

    def _refused(self, event: Event, service: Service) -> bool:
        """True when the association's permissions do not cover ``service`` (logged)."""
        info = association_info(event.assoc)
        missing = policy.missing_permissions(service, info.permissions)
        if not missing:
            return False
        log.warning(
            "%s from %s (%s) refused with 0x0124: no %s permission",
            service,
            info.calling_ae,
            info.peer_host,
            "/".join(missing),
        )
        return True

    def _limit(self, route: Route) -> float | None:
        # Read per request: the operator may change the default at runtime.
        return route.spec.time_limit or self._default_limit()

    def _call(self, route: Route, request: Any) -> Any:
        with logcontext.association(request.association):
            return route.record.call(route.handler, request, self._limit(route))

    def _call_answered(self, route: Route, request: Any, event: Event) -> Any:
        """``_call`` for a C-STORE, run on this thread: at the time limit the watchdog
        answers the request with a failure itself (``_answer_at_limit``)."""
        limit = self._limit(route)
        serving = threading.current_thread()
        with logcontext.association(request.association):
            return route.record.call_answered(
                route.handler,
                request,
                limit,
                lambda: self._answer_at_limit(route, event, limit, serving),
            )

    def _answer_at_limit(
        self, route: Route, event: Event, limit: float | None, serving: threading.Thread
    ) -> None:
        """Answer a C-STORE whose handler is still running at its limit, then abort the
        association (on the watchdog thread).

        The association's serving thread is inside the handler, so nothing else on the
        association can be served until the add-in lets go, maybe never: the peer gets its
        answer, then an A-ABORT, and may go on with a new association. Once the answer
        is sent, the request's identity goes into the association's ``pacsd_answered``,
        so the answer pynetdicom builds when the handler returns is dropped (engine.py);
        the handler's thread cannot get that far before this ends (watchdog.Ticket).
        """
        rq: Any = event.request
        assoc: Any = event.assoc
        context_id = int(event.context.context_id)
        status = FAILURE[Service.C_STORE]
        log.error(
            "add-in %s exceeded its %gs time limit in its C-STORE handler; answered "
            "0x%04X and aborted the association (its thread is still in the handler)",
            route.addin,
            limit,
            status,
        )
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = rq.MessageID
        rsp.AffectedSOPClassUID = rq.AffectedSOPClassUID
        rsp.AffectedSOPInstanceUID = rq.AffectedSOPInstanceUID
        rsp.Status = status
        try:
            assoc.dimse.send_msg(rsp, context_id)
        finally:
            answered: set[tuple[int, int]] = assoc.__dict__.setdefault("pacsd_answered", set())
            answered.add((context_id, int(rq.MessageID)))
            _abort_held(assoc, reading_thread_held=serving is assoc.dul)

    def _failure(self, route: Route, exc: BaseException) -> int:
        service = route.spec.service
        if isinstance(exc, DimseFailure):
            return _with_comment(exc.status, exc.comment)
        if isinstance(exc, LateReturn):
            log.warning("%s", exc)
        elif isinstance(exc, HandlerTimeout):
            log.error("%s; answered %s with a failure", exc, service)
        else:
            log.error(
                "add-in %s raised in its %s handler",
                route.addin,
                service,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        return FAILURE.get(service, Status.PROCESSING_FAILURE)

    def _status(self, route: Route, value: Any) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            log.error(
                "add-in %s returned %r from its %s handler; expected a status code",
                route.addin,
                value,
                route.spec.service,
            )
            route.record.count_failure()
            return int(Status.PROCESSING_FAILURE)

    def _common(self, event: Event, dataset: Callable[[], Any]) -> dict[str, Any]:
        return {
            "association": association_info(event.assoc),
            "message_id": int(event.request.MessageID or 0),
            "sop_class_uid": str(event.context.abstract_syntax),
            "transfer_syntax": str(event.context.transfer_syntax),
            "_dataset": _Lazy(dataset),
            "_cancelled": _sticky_cancel(event),
        }

    # -- single-response services ------------------------------------------------------

    def handle_echo(self, event: Event) -> int:
        if self._refused(event, Service.C_ECHO):
            return int(Status.REFUSED_NOT_AUTHORIZED)
        route = self._route(event, Service.C_ECHO)
        if route is None:
            return int(Status.SOP_CLASS_NOT_SUPPORTED)
        request = EchoRequest(**self._common(event, lambda: None))
        try:
            return self._status(route, self._call(route, request))
        except Exception as exc:
            return self._failure(route, exc)

    def handle_store(self, event: Event) -> Any:
        rq: Any = event.request
        refused: str | None = getattr(rq, "_pacsd_refused", None)
        if refused is not None:
            # Its command set does not name a storable instance (spool.py): nothing was
            # spooled, and no add-in is asked. The archive's answer for such UIDs.
            return _refuse_store(event, INVALID_UID, refused, "invalid SOP Instance or Class UID")
        context_class = str(event.context.abstract_syntax)
        if rq.AffectedSOPClassUID != context_class:
            # A C-STORE is routed by its presentation context; one whose command names
            # another SOP class would be stored under a class it does not claim.
            why = (
                f"its SOP Class {rq.AffectedSOPClassUID} is not the one of its"
                f" presentation context ({context_class})"
            )
            comment = "SOP Class differs from its context"
            return _refuse_store(event, int(Status.SOP_CLASS_NOT_SUPPORTED), why, comment)
        route = self._route(event, Service.C_STORE)
        if route is None:
            return int(Status.SOP_CLASS_NOT_SUPPORTED)
        spooled: SpoolFile | None = getattr(rq, "_pacsd_spool", None)
        if self._refused(event, Service.C_STORE):
            if spooled is not None:
                spooled.discard()
            return int(Status.REFUSED_NOT_AUTHORIZED)
        if spooled is not None and spooled.error is not None:
            # The disk refused the data as it arrived; nothing was kept.
            log.error("C-STORE of %s answered 0xA700: %s", rq.AffectedSOPInstanceUID, spooled.error)
            return int(Status.OUT_OF_RESOURCES)
        if spooled is not None:
            encoded: Callable[[], bytes] = lambda: _read_from(spooled.path, spooled.offset)  # noqa: E731
        else:
            encoded = lambda: event.encoded_dataset(include_meta=False)  # noqa: E731
        request = StoreRequest(
            **self._common(event, lambda: event.dataset),
            sop_instance_uid=str(rq.AffectedSOPInstanceUID or ""),
            move_originator_ae=str(rq.MoveOriginatorApplicationEntityTitle or "").strip(),
            move_originator_message_id=rq.MoveOriginatorMessageID,
            _encoded=encoded,
            _file_meta=lambda: event.file_meta,
            dataset_path=spooled.path if spooled is not None else None,
            _spooled=spooled,
        )
        try:
            return self._status(route, self._call_answered(route, request, event))
        except Exception as exc:
            return self._failure(route, exc)
        finally:
            if spooled is not None:
                # An add-in that keeps the data takes the file during its call (the
                # archive renames it away); whatever is left would stay in tmp/ until
                # the next start, one file per instance.
                spooled.discard()

    def _n_service(self, event: Event, service: Service, returns_dataset: bool) -> Any:
        if self._refused(event, service):
            status = int(Status.REFUSED_NOT_AUTHORIZED)
            return (status, None) if returns_dataset else status
        route = self._route(event, service)
        if route is None:
            status = int(Status.SOP_CLASS_NOT_SUPPORTED)
            return (status, None) if returns_dataset else status
        rq: Any = event.request
        instance = getattr(rq, "RequestedSOPInstanceUID", None) or getattr(
            rq, "AffectedSOPInstanceUID", None
        )
        type_id = getattr(rq, "ActionTypeID", None)
        if type_id is None:
            type_id = getattr(rq, "EventTypeID", None)
        attrs = getattr(rq, "AttributeIdentifierList", None) or []
        if not isinstance(attrs, list):
            attrs = [attrs]
        request = NRequest(
            **self._common(event, _n_dataset(event)),
            service=service.value,
            sop_instance_uid=str(instance or ""),
            type_id=None if type_id is None else int(type_id),
            attribute_identifiers=tuple(int(t) for t in attrs),
        )
        try:
            result = self._call(route, request)
            if isinstance(result, tuple):
                status, dataset = self._status(route, result[0]), result[1]
            else:
                status, dataset = self._status(route, result), None
        except Exception as exc:
            status, dataset = self._failure(route, exc), None
        return (status, dataset) if returns_dataset else status

    def handle_n_action(self, event: Event) -> Any:
        return self._n_service(event, Service.N_ACTION, True)

    def handle_n_create(self, event: Event) -> Any:
        return self._n_service(event, Service.N_CREATE, True)

    def handle_n_set(self, event: Event) -> Any:
        return self._n_service(event, Service.N_SET, True)

    def handle_n_get(self, event: Event) -> Any:
        return self._n_service(event, Service.N_GET, True)

    def handle_n_event_report(self, event: Event) -> Any:
        return self._n_service(event, Service.N_EVENT_REPORT, True)

    def handle_n_delete(self, event: Event) -> Any:
        return self._n_service(event, Service.N_DELETE, False)

    # -- generator services: FIND, GET, MOVE ---------------------------------------------

    def handle_find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        if self._refused(event, Service.C_FIND):
            yield int(Status.REFUSED_NOT_AUTHORIZED), None
            return
        route = self._route(event, Service.C_FIND)
        if route is None:
            yield int(Status.SOP_CLASS_NOT_SUPPORTED), None
            return
        request = FindRequest(**self._common(event, lambda: event.identifier), level=_level(event))
        yield from self._pending(route, event, request, expect_count=False)

    def handle_get(self, event: Event) -> Iterator[Any]:
        if self._refused(event, Service.C_GET):
            yield from _fail_early(int(Status.REFUSED_NOT_AUTHORIZED), True)
            return
        route = self._route(event, Service.C_GET)
        if route is None:
            yield int(Status.SOP_CLASS_NOT_SUPPORTED), None
            return
        request = GetRequest(**self._common(event, lambda: event.identifier), level=_level(event))
        results = self._pending(route, event, request, expect_count=True)
        first = next(results)
        # The sub-operations reuse this association's contexts; announced pairs are moot.
        yield first[0] if isinstance(first, tuple) and isinstance(first[1], list) else first
        yield from results

    def handle_move(self, event: Event) -> Iterator[Any]:
        if self._refused(event, Service.C_MOVE):
            # pynetdicom answers a missing destination itself, before any count; the
            # engine rewrites that answer's status (PacsdDIMSE.send_msg), so nothing
            # is dialled and the peer reads 0x0124.
            _answer_with(event, int(Status.REFUSED_NOT_AUTHORIZED))
            yield None, None
            return
        route = self._route(event, Service.C_MOVE)
        if route is None:
            yield int(Status.SOP_CLASS_NOT_SUPPORTED), None
            return
        destination_ae = str(event.move_destination or "").strip()
        try:
            destination = self._resolve_ae(destination_ae)
        except Exception:  # unknown to the AE registry
            destination = None
        if destination is None:
            log.warning("C-MOVE to unknown destination %r refused (0xA801)", destination_ae)
            yield None, None
            return
        request = MoveRequest(
            **self._common(event, lambda: event.identifier),
            level=_level(event),
            destination_ae=destination_ae,
            destination=destination,
        )
        # pynetdicom wants the destination (with the contexts to propose to it) before the
        # count; the handler's first result may name the (SOP class, transfer syntax)
        # pairs its sub-operations need, so take that first and yield in pynetdicom's order.
        results = self._pending(route, event, request, expect_count=True)
        first = next(results)
        if isinstance(first, tuple) and len(first) == 2 and first[0] is not None:
            count, pairs = first
            if isinstance(pairs, list | tuple) and not isinstance(count, tuple):
                yield destination.host, destination.port, {"contexts": _move_contexts(route, pairs)}
                yield count
                yield from results
                return
        yield destination.host, destination.port, {"contexts": _move_contexts(route)}
        yield first
        yield from results

    def _pending(
        self, route: Route, event: Event, request: Any, expect_count: bool
    ) -> Iterator[Any]:
        """Drive the add-in's generator, each result under the time limit.

        Results are pulled in batches on the add-in worker thread (``call_batch``), not
        one hand-off each; a C-CANCEL is still checked before each result is answered.
        """
        cancelled = request._cancelled
        try:
            results = iter(self._call(route, request))
        except Exception as exc:
            yield from _fail_early(self._failure(route, exc), expect_count)
            return
        items = self._batched(route, request, results, cancelled, event.assoc)
        peer = _PeerBytes(event)
        first = True
        while True:
            peer.let_in(cancelled)
            if cancelled():
                _close(results)
                yield int(Status.CANCEL), None
                return
            try:
                item = next(items)
            except StopIteration:
                if cancelled():  # the handler saw the C-CANCEL and stopped
                    yield int(Status.CANCEL), None
                    return
                break
            except Exception as exc:
                _close(results)
                yield from _fail_early(self._failure(route, exc), expect_count and first)
                return
            if expect_count and first:
                first = False
                pairs: Any = None
                if isinstance(item, tuple) and len(item) == 2:  # (count, [(sop, ts), ...])
                    item, pairs = item
                try:
                    count = int(item)
                except (TypeError, ValueError):
                    log.error(
                        "add-in %s must first yield the number of sub-operations", route.addin
                    )
                    yield 0
                    return
                yield (count, list(pairs)) if pairs is not None else count
                continue
            first = False
            if isinstance(item, tuple):
                yield self._status(route, item[0]), item[1]
            else:
                yield int(Status.PENDING), item
        if expect_count and first:
            yield 0  # no matches: zero sub-operations

    def _batched(
        self,
        route: Route,
        request: Any,
        results: Iterator[Any],
        cancelled: Callable[[], bool],
        assoc: Any,
    ) -> Iterator[Any]:
        """The generator's results, batch by batch; its exception (or a
        ``HandlerTimeout``) is raised after the results produced before it. The first
        batch is a single result, so that the first match leaves without waiting for
        the ones after it. Responses held for one write (a C-FIND's, ``find_loop``)
        leave before each wait for the next batch."""
        size = 1
        while True:
            send_path.flush(assoc)
            with logcontext.association(request.association):
                batch = route.record.call_batch(results, self._limit(route), cancelled, size)
            size = BATCH_ITEMS
            yield from batch.items
            if isinstance(batch.end, StopIteration):
                return
            if batch.end is not None:
                raise batch.end


class _PeerBytes:
    """Lets the DUL thread read what the peer sent in the middle of an answer.

    A C-CANCEL is only seen once the DUL thread has read and decoded its PDU, and while
    this thread streams responses it holds the GIL: the DUL thread got it back only at
    the interpreter's 5 ms switch interval, once per blocking call, so a C-CANCEL sent
    after the first of a hundred matches arrived after the last. So, before each
    response: if the socket holds unread bytes (during an answer, nearly always a
    C-CANCEL), sleep until a cancel is seen or ``WAIT`` has passed; at most ``BUDGET``
    in all per answer (a peer that keeps sending cannot slow it down further). One
    ``poll(2)`` per response otherwise.
    """

    WAIT = 0.005
    BUDGET = 0.05

    def __init__(self, event: Event) -> None:
        self._poll: select.poll | None = None
        self._budget = self.BUDGET
        try:
            fd = event.assoc.dul.socket.socket.fileno()  # type: ignore[union-attr]
            poller = select.poll()
            poller.register(fd, select.POLLIN)
        except Exception:  # no socket (closed, or a test double): nothing to wait for
            return
        self._poll = poller

    def _unread(self) -> bool:
        assert self._poll is not None
        return any(mask & select.POLLIN for _, mask in self._poll.poll(0))

    def let_in(self, cancelled: Callable[[], bool]) -> None:
        if self._poll is None or self._budget <= 0 or not self._unread():
            return
        # Not only until the bytes are read: the DUL thread needs the GIL again after
        # each read to decode them, and would not get it back from this thread.
        started = time.monotonic()
        deadline = started + min(self.WAIT, self._budget)
        while not cancelled() and time.monotonic() < deadline:
            time.sleep(0.0002)
        self._budget -= time.monotonic() - started


def _move_contexts(
    route: Route, pairs: Iterable[tuple[str, str]] | None = None
) -> list[PresentationContext]:
    """What the sub-operation association proposes to the C-MOVE destination.

    With the (SOP class, transfer syntax) pairs the handler announced, one context per
    pair (so compressed instances go out compressed), each also offering the
    uncompressed syntaxes; otherwise the handler's (or the 120 most common) storage SOP
    classes, uncompressed. At most 128 contexts fit in an association.
    """
    uncompressed = list(sop.UNCOMPRESSED_TRANSFER_SYNTAXES)
    if pairs:
        contexts: list[PresentationContext] = []
        seen: set[tuple[str, str]] = set()
        for sop_class, syntax in pairs:
            key = (str(sop_class), str(syntax))
            if key in seen:
                continue
            seen.add(key)
            syntaxes = [key[1], *(ts for ts in uncompressed if ts != key[1])]
            contexts.append(build_context(key[0], syntaxes))
        if len(contexts) <= 128:
            return contexts
        log.warning("C-MOVE needs %d presentation contexts; proposing the first 128", len(contexts))
        return contexts[:128]
    uids = route.spec.sub_operation_sop_classes or tuple(
        str(cx.abstract_syntax) for cx in StoragePresentationContexts
    )
    return [build_context(uid, uncompressed) for uid in uids[:128]]


def _abort_held(assoc: Any, reading_thread_held: bool) -> None:
    """Abort an association whose serving thread a handler holds past its limit."""
    if not reading_thread_held:
        # The upper layer's thread still reads and writes: it sends the A-ABORT.
        assoc.acse.send_abort(0x00)
        return
    # The upper layer's own thread is the one in the handler: nothing else touches the
    # socket, so write the A-ABORT here and shut the connection. When the handler
    # returns, that thread finds the connection closed and ends the association.
    sock = assoc.dul.socket
    with contextlib.suppress(Exception):
        sock.send(pdu_guard.a_abort(0x00))
    with contextlib.suppress(Exception):
        sock.socket.shutdown(socket.SHUT_RDWR)


def _refuse_store(event: Event, status: int, why: str, comment: str) -> Any:
    """Refuse a C-STORE before any add-in sees it: one WARNING line in the
    association's log context, and ``status`` with an Error Comment for the peer."""
    info = association_info(event.assoc)
    with logcontext.association(info):
        log.warning(
            "C-STORE from %s (%s) refused with 0x%04X: %s",
            info.calling_ae,
            info.peer_host,
            status,
            why,
        )
    return _with_comment(status, comment)


def _with_comment(status: int, comment: str) -> Any:
    """A status pynetdicom sends with an Error Comment (LO: at most 64 characters)."""
    if not comment:
        return status
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment[:64]
    return answer


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read()


def _answer_with(event: Event, status: int) -> None:
    """Have the next response to this request go out with ``status``."""
    message_id = int(event.request.MessageID or 0)
    event.assoc.pacsd_status_override = (message_id, status)  # type: ignore[attr-defined]


def _sticky_cancel(event: Event) -> Callable[[], bool]:
    """pynetdicom forgets a C-CANCEL once it has been asked about; remember it."""
    seen = False

    def cancelled() -> bool:
        nonlocal seen
        seen = seen or bool(event.is_cancelled)
        return seen

    return cancelled


def _fail_early(status: int, before_count: bool) -> Iterator[Any]:
    # pynetdicom's C-GET/C-MOVE read a sub-operation count first; announce one so that
    # the failure status that follows is what the peer receives.
    if before_count:
        yield 1
    yield status, None


def _close(gen: Iterator[Any]) -> None:
    close = getattr(gen, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.exception("add-in generator failed to close")


def _level(event: Event) -> str:
    try:
        return str(event.identifier.get("QueryRetrieveLevel", "") or "")
    except Exception:
        return ""


def _n_dataset(event: Event) -> Callable[[], Any]:
    def decode() -> Any:
        for attr in (
            "attribute_list",
            "modification_list",
            "action_information",
            "event_information",
        ):
            try:
                return getattr(event, attr)
            except (AttributeError, ValueError):
                continue
        return None

    return decode
