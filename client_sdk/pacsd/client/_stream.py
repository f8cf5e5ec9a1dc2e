"""Server-streaming calls (``client.logs.stream``, ``client.associations.watch``).

A ``Stream`` is an iterator over the items the server sends, with the SDK's
guarantees: every gRPC failure arrives as a ``PacsdError``, ``cancel()`` (or leaving
a ``with`` block) ends it quietly, and the server's "dropped N" notices (sent when
this reader fell behind and the server discarded items rather than slow down) are
counted in ``dropped`` and handed to ``on_dropped`` instead of being mixed with the
items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import grpc
from pacsd.client.errors import from_rpc_error

if TYPE_CHECKING:
    from pacsd.client.client import Client

__all__ = ["DropCallback", "Stream"]

T = TypeVar("T")

#: Called with (dropped since the previous notice, dropped since the stream began).
DropCallback = Callable[[int, int], None]


class StreamItems(Generic[T]):
    """What a stream, sync or async, makes of each response: an item, or a "dropped N"
    notice counted in ``dropped`` and handed to ``on_dropped``."""

    def __init__(
        self, split: Callable[[Any], tuple[T | None, Any]], on_dropped: DropCallback | None
    ) -> None:
        self._split = split
        self._on_dropped = on_dropped
        #: Items the server dropped for this stream so far (its latest total).
        self.dropped = 0

    def _item(self, response: Any) -> T | None:
        """The response's item; None for a notice (or a response without an item)."""
        item, dropped = self._split(response)
        if dropped is not None:
            self.dropped = int(dropped.total)
            if self._on_dropped is not None:
                self._on_dropped(int(dropped.count), int(dropped.total))
            return None
        return item


class Stream(StreamItems[T]):
    """The items of one server stream, in order; see the module docstring."""

    def __init__(
        self,
        client: Client,
        call: Any,
        split: Callable[[Any], tuple[T | None, Any]],
        on_dropped: DropCallback | None = None,
    ) -> None:
        super().__init__(split, on_dropped)
        self._client = client
        self._call = call
        self._cancelled = threading.Event()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while True:
            try:
                response = next(self._call)
            except StopIteration:
                raise
            except grpc.RpcError as exc:
                if self._cancelled.is_set() and exc.code() is grpc.StatusCode.CANCELLED:
                    raise StopIteration from None
                with self._client._state_lock:
                    connected = self._client._ready
                raise from_rpc_error(exc, self._client.endpoint, connected=connected) from exc
            item = self._item(response)
            if item is not None:
                return item

    def cancel(self) -> None:
        """End the stream; iteration stops without an error. Safe to call twice and
        from another thread (e.g. a signal handler)."""
        self._cancelled.set()
        self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


def open_stream(client: Client, method: Any, request: Any, timeout: float | None) -> Any:
    """Start a server-streaming call with the client's call metadata (credentials)."""
    if client._closed:
        raise ValueError("this Client is closed")
    metadata = getattr(client, "_metadata", None)
    if metadata is None:
        return method(request, timeout=timeout)
    return method(request, timeout=timeout, metadata=metadata)
