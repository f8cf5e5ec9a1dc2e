"""``client.associations``: the SDK side of ``pacsd.admin.v1.AssociationService``.

The DICOM associations a server is serving right now, aborting one, and a live feed
of what happens on them::

    for a in client.associations.list():
        print(a.id, a.calling_ae, a.messages_received, a.bytes_received)
    client.associations.abort("a17")            # the peer gets an A-ABORT
    with client.associations.watch(lifecycle_only=True) as events:
        for event in events: ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pacsd.admin.v1 import associations_pb2, associations_pb2_grpc
from pacsd.client._paging import PageTokens
from pacsd.client._stream import DropCallback, Stream, open_stream

if TYPE_CHECKING:
    from pacsd.client.client import Client

__all__ = ["AssociationsAPI", "event_type_name"]

_TYPE_PREFIX = "ASSOCIATION_EVENT_TYPE_"


def event_type_name(value: int) -> str:
    """AssociationEventType number -> "ACCEPTED", "MESSAGE_RECEIVED", ..."""
    try:
        return associations_pb2.AssociationEventType.Name(value).removeprefix(_TYPE_PREFIX)
    except ValueError:
        return str(value)


def _split(
    response: associations_pb2.WatchEventsResponse,
) -> tuple[associations_pb2.AssociationEvent | None, associations_pb2.EventsDropped | None]:
    kind = response.WhichOneof("item")
    if kind == "event":
        return response.event, None
    if kind == "dropped":
        return None, response.dropped
    return None, None


class AssociationsAPI:
    """``pacsd.admin.v1.AssociationService``: live associations of one server.

    IDs are the server's ("a17"), the same the logs show. ``get`` and ``abort`` of an
    association that is not live (never was, or closed meanwhile) raise ``NotFound``
    with reason ASSOCIATION_NOT_FOUND.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = associations_pb2_grpc.AssociationServiceStub(client._channel)

    def list(self, *, page_size: int = 0, timeout: float | None = None) -> _AssociationList:
        """Every live association, oldest first (all pages)."""
        out: _AssociationList = []
        token = ""
        tokens = PageTokens("ListAssociations", self._client.endpoint)
        while True:
            request = associations_pb2.ListAssociationsRequest(
                page_size=page_size, page_token=token
            )
            response = self._client._call(self._stub.ListAssociations, request, timeout)
            out.extend(response.associations)
            token = response.next_page_token
            if not tokens.follow(token):
                return out

    def get(
        self, association_id: str, *, timeout: float | None = None
    ) -> associations_pb2.Association:
        response = self._client._call(
            self._stub.GetAssociation,
            associations_pb2.GetAssociationRequest(id=association_id),
            timeout,
        )
        return response.association

    def abort(
        self, association_id: str, *, timeout: float | None = None
    ) -> associations_pb2.Association:
        """Send the peer an A-ABORT and free the association; returns it as it was.
        The server answers once the connection is closed."""
        response = self._client._call(
            self._stub.AbortAssociation,
            associations_pb2.AbortAssociationRequest(id=association_id),
            timeout,
        )
        return response.association

    def watch(
        self,
        *,
        association_id: str = "",
        ae_title: str = "",
        lifecycle_only: bool = False,
        on_dropped: DropCallback | None = None,
        timeout: float | None = None,
    ) -> Stream[associations_pb2.AssociationEvent]:
        """Lifecycle events (accepted, rejected, released, aborted, closed) and, unless
        ``lifecycle_only``, a summary of every DIMSE message, until ``cancel()``."""
        request = associations_pb2.WatchEventsRequest(
            association_id=association_id, ae_title=ae_title, lifecycle_only=lifecycle_only
        )
        call = open_stream(self._client, self._stub.WatchEvents, request, timeout)
        return Stream(self._client, call, _split, on_dropped)


#: ``AssociationsAPI.list`` shadows the builtin inside the class body.
_AssociationList = list[associations_pb2.Association]
