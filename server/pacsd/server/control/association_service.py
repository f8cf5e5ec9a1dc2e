"""``pacsd.admin.v1.AssociationService``: thin mapping from RPCs to the tracker and listener."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from pacsd.admin.v1 import associations_pb2, associations_pb2_grpc, errors_pb2
from pacsd.server.control.errors import ControlError, rpc
from pacsd.server.control.paging import every_page, page
from pacsd.server.control.streams import StreamSlots, pump
from pacsd.server.dicom.associations import association_info
from pacsd.server.dicom.events import AssocEvent, EventFilter, EventType
from pacsd.server.dicom.tracking import LiveAssociation
from pydicom.uid import UID

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime

T = TypeVar("T")

#: Event types as the wire numbers them (workers/relay.py reads them back).
EVENT_TYPE_NUMBERS = {
    EventType.ACCEPTED: associations_pb2.ASSOCIATION_EVENT_TYPE_ACCEPTED,
    EventType.REJECTED: associations_pb2.ASSOCIATION_EVENT_TYPE_REJECTED,
    EventType.RELEASED: associations_pb2.ASSOCIATION_EVENT_TYPE_RELEASED,
    EventType.ABORTED: associations_pb2.ASSOCIATION_EVENT_TYPE_ABORTED,
    EventType.CLOSED: associations_pb2.ASSOCIATION_EVENT_TYPE_CLOSED,
    EventType.MESSAGE_RECEIVED: associations_pb2.ASSOCIATION_EVENT_TYPE_MESSAGE_RECEIVED,
    EventType.MESSAGE_SENT: associations_pb2.ASSOCIATION_EVENT_TYPE_MESSAGE_SENT,
}


def _uid_name(uid: str) -> str:
    name = UID(uid).name
    return "" if name == uid else name


def _is_tls(assoc: Any) -> bool:
    return isinstance(getattr(assoc.dul.socket, "socket", None), ssl.SSLSocket)


def association_message(item: LiveAssociation, worker: int = 0) -> associations_pb2.Association:
    assoc = item.assoc
    info = association_info(assoc)
    msg = associations_pb2.Association(
        id=item.id,
        peer_host=info.peer_host,
        peer_port=info.peer_port,
        calling_ae=info.calling_ae,
        called_ae=info.called_ae,
        messages_received=item.messages_received,
        messages_sent=item.messages_sent,
        bytes_received=item.bytes_received,
        bytes_sent=item.bytes_sent,
        tls=_is_tls(assoc),
        tls_peer_subject=info.tls_peer_subject,
        worker=worker,
    )
    msg.start_time.FromDatetime(item.started)
    for cx in sorted(assoc.accepted_contexts, key=lambda c: c.context_id or 0):
        abstract = str(cx.abstract_syntax)
        msg.accepted_contexts.add(
            id=int(cx.context_id or 0),
            abstract_syntax=abstract,
            abstract_syntax_name=_uid_name(abstract),
            transfer_syntax=str(cx.transfer_syntax[0]) if cx.transfer_syntax else "",
            scu_role=bool(cx.as_scu),
            scp_role=bool(cx.as_scp),
        )
    return msg


def event_message(event: AssocEvent) -> associations_pb2.WatchEventsResponse:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(event.time * 1_000_000_000))
    msg = associations_pb2.AssociationEvent(
        time=stamp,
        type=EVENT_TYPE_NUMBERS[event.type],
        association_id=event.assoc_id,
        calling_ae=event.calling_ae,
        called_ae=event.called_ae,
        peer=event.peer,
        reason=event.reason,
    )
    m = event.message
    if m is not None:
        summary = msg.message
        summary.service = m.service
        summary.response = m.response
        summary.message_id = m.message_id
        if m.status is not None:
            summary.status = m.status
        summary.sop_class_uid = m.sop_class_uid
        summary.sop_instance_uid = m.sop_instance_uid
        summary.has_dataset = m.has_dataset
    return associations_pb2.WatchEventsResponse(event=msg)


def _not_found(assoc_id: str) -> ControlError:
    return ControlError(
        grpc.StatusCode.NOT_FOUND,
        errors_pb2.ASSOCIATION_NOT_FOUND,
        f"no live association {assoc_id!r}",
        {"id": assoc_id},
    )


def _forwarded(call: Callable[[], T], assoc_id: str) -> T:
    """A call answered by the worker that serves the association. A worker that no
    longer has it, or is down (its associations went with it), means not found."""
    try:
        return call()
    except grpc.RpcError as exc:
        code = exc.code()
        if code in (
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ):
            raise _not_found(assoc_id) from exc
        raise ControlError(
            grpc.StatusCode.INTERNAL,
            errors_pb2.INTERNAL_ERROR,
            f"the worker serving {assoc_id} failed: {exc.details()}",
        ) from exc


def _need_id(assoc_id: str) -> str:
    assoc_id = assoc_id.strip()
    if not assoc_id:
        raise ControlError(
            grpc.StatusCode.INVALID_ARGUMENT,
            errors_pb2.INVALID_ARGUMENT,
            "id is required",
            {"field": "id"},
        )
    return assoc_id


def _order(msg: associations_pb2.Association) -> tuple[int, int, int]:
    digits = msg.id.rpartition(".")[2].lstrip("a")
    return msg.start_time.ToNanoseconds(), msg.worker, int(digits) if digits.isdigit() else 0


class AssociationServicer(associations_pb2_grpc.AssociationServiceServicer):
    def __init__(self, runtime: Runtime, slots: StreamSlots) -> None:
        self._rt = runtime
        self._slots = slots

    @property
    def _tracker(self):  # type: ignore[no-untyped-def]
        return self._rt.listener.tracker

    @property
    def _index(self) -> int:
        """This process's worker number (0 for the first)."""
        return self._rt.role.index if self._rt.role is not None else 0

    def _worker_stub(self, assoc_id: str) -> associations_pb2_grpc.AssociationServiceStub | None:
        """The control stub of the worker serving ``assoc_id``, if another process does."""
        supervisor = self._rt.supervisor
        worker = supervisor.find(assoc_id) if supervisor is not None else None
        if worker is None or worker.channel is None:
            return None
        return associations_pb2_grpc.AssociationServiceStub(worker.channel)

    @rpc
    def ListAssociations(
        self, request: associations_pb2.ListAssociationsRequest, context: grpc.ServicerContext
    ) -> associations_pb2.ListAssociationsResponse:
        live = [association_message(item, self._index) for item in self._tracker.live()]
        supervisor = self._rt.supervisor
        if supervisor is not None:
            for _worker, theirs in supervisor.each(
                lambda w: every_page(
                    associations_pb2_grpc.AssociationServiceStub(w.channel).ListAssociations,
                    associations_pb2.ListAssociationsRequest,
                    "associations",
                )
            ):
                live.extend(theirs)
        live.sort(key=_order)
        items, token = page(live, request.page_size, request.page_token)
        return associations_pb2.ListAssociationsResponse(
            associations=list(items), next_page_token=token
        )

    @rpc
    def GetAssociation(
        self, request: associations_pb2.GetAssociationRequest, context: grpc.ServicerContext
    ) -> associations_pb2.GetAssociationResponse:
        assoc_id = _need_id(request.id)
        stub = self._worker_stub(assoc_id)
        if stub is not None:
            return _forwarded(lambda: stub.GetAssociation(request, timeout=10), assoc_id)
        item = self._tracker.find(assoc_id)
        if item is None:
            raise _not_found(assoc_id)
        return associations_pb2.GetAssociationResponse(
            association=association_message(item, self._index)
        )

    @rpc
    def AbortAssociation(
        self, request: associations_pb2.AbortAssociationRequest, context: grpc.ServicerContext
    ) -> associations_pb2.AbortAssociationResponse:
        assoc_id = _need_id(request.id)
        stub = self._worker_stub(assoc_id)
        if stub is not None:
            return _forwarded(lambda: stub.AbortAssociation(request, timeout=30), assoc_id)
        item = self._tracker.find(assoc_id)
        if item is None:
            raise _not_found(assoc_id)
        before = association_message(item, self._index)
        if self._rt.listener.abort(assoc_id) is None:  # it closed meanwhile
            raise _not_found(assoc_id)
        return associations_pb2.AbortAssociationResponse(association=before)

    @rpc
    def WatchEvents(
        self, request: associations_pb2.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[associations_pb2.WatchEventsResponse]:
        accept = EventFilter(
            assoc_id=request.association_id.strip(),
            ae_title=request.ae_title.strip(),
            lifecycle_only=request.lifecycle_only,
        )
        release = self._slots.claim(context)
        events = self._tracker.events
        sub = events.subscribe(self._rt.settings.log_stream_queue_size, accept)

        def done() -> None:  # idempotent: runs when the stream ends, however it ends
            events.unsubscribe(sub)
            release()

        if not context.add_callback(done):
            done()
        return pump(
            context,
            sub,
            event_message,
            lambda count, total: associations_pb2.WatchEventsResponse(
                dropped=associations_pb2.EventsDropped(count=count, total=total)
            ),
            done,
        )
