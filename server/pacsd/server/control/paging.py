"""Offset pagination for list RPCs with opaque, validated page tokens."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
from pacsd.admin.v1 import errors_pb2
from pacsd.server.control.errors import ControlError

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_PREFIX = "o:"


def page(items: Sequence[T], page_size: int, page_token: str) -> tuple[Sequence[T], str]:
    """The slice of ``items`` the token points at, and the token for the next slice."""
    if page_size < 0:
        raise ControlError(
            grpc.StatusCode.INVALID_ARGUMENT,
            errors_pb2.INVALID_ARGUMENT,
            "page_size must not be negative",
            {"field": "page_size"},
        )
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    start = _decode(page_token) if page_token else 0
    end = start + size
    token = _encode(end) if end < len(items) else ""
    return items[start:end], token


def every_page(list_call: Callable[..., Any], request_type: type, field: str) -> list[Any]:
    """Every item a list RPC of another process (a worker) returns, following its
    page tokens: ``list_call`` a stub method, ``request_type`` its request message,
    ``field`` the response's repeated field."""
    found: list[Any] = []
    token = ""
    while True:
        reply = list_call(request_type(page_size=MAX_PAGE_SIZE, page_token=token), timeout=5)
        found.extend(getattr(reply, field))
        token = reply.next_page_token
        if not token:
            return found


def _encode(offset: int) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{offset}".encode()).decode()


def _decode(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith(_PREFIX):
            raise ValueError(token)
        offset = int(text.removeprefix(_PREFIX))
        if offset < 0:
            raise ValueError(token)
        return offset
    except ValueError as exc:
        raise ControlError(
            grpc.StatusCode.INVALID_ARGUMENT,
            errors_pb2.INVALID_PAGE_TOKEN,
            "page_token was not issued by this server",
            {"field": "page_token"},
        ) from exc
