"""Typed errors for everything the SDK can fail with.

Callers should be able to react to a failure without parsing strings: the class says
what kind of failure it was (one per gRPC status family) and ``reason`` carries the
server's ``pacsd.admin.v1.ErrorReason`` name from google.rpc.ErrorInfo, which is stable
across releases whereas messages are not.

googleapis-common-protos (``google.rpc``) is optional. Without it the rich details in
the ``grpc-status-details-bin`` trailer cannot be decoded, so ``reason`` is "" and
``metadata`` is empty, but the class (status code) and message are still right.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "PacsdError",
    "PermissionDenied",
    "ServerUnavailable",
    "Unauthenticated",
    "Unimplemented",
    "from_rpc_error",
]

#: The ErrorInfo domain pacsd stamps on its errors; other domains' reasons are not ours.
DOMAIN = "pacsd"

_DETAILS_KEY = "grpc-status-details-bin"


class PacsdError(Exception):
    """Base of every error a pacsd client call raises.

    ``unreachable`` is True when the call never got an answer from a pacsd process
    (nothing listening, or the deadline passed while still connecting); tools use it to
    tell "the server said no" apart from "there is no server".
    """

    #: The status code a subclass stands for; the base class is used for the rest.
    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        endpoint: str = "",
        unreachable: bool = False,
    ) -> None:
        super().__init__(message)
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.reason: str = reason
        self.message: str = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.endpoint: str = endpoint
        self.unreachable: bool = unreachable

    def __str__(self) -> str:
        tag = f"{self.code.name}/{self.reason}" if self.reason else self.code.name
        return f"{self.message} ({tag})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, code={self.code.name}, "
            f"reason={self.reason!r}, metadata={self.metadata!r}, endpoint={self.endpoint!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape pacsctl prints, kept here so every tool reports errors alike."""
        return {
            "code": self.code.name,
            "reason": self.reason,
            "message": self.message,
            "metadata": dict(self.metadata),
        }


class ServerUnavailable(PacsdError):
    """UNAVAILABLE: nothing answers at the endpoint, or the server refused for now
    (then ``reason`` says why, e.g. DICOM_PORT_IN_USE)."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(PacsdError):
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class InvalidArgument(PacsdError):
    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(PacsdError):
    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(PacsdError):
    default_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(PacsdError):
    """The server is in the wrong state for the request (e.g. SERVER_STOPPED)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(PacsdError):
    default_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(PacsdError):
    default_code = grpc.StatusCode.UNAUTHENTICATED


class Unimplemented(PacsdError):
    """The server does not know the call: usually an older pacsd than this client."""

    default_code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(PacsdError):
    """A bug or data loss inside the server (INTERNAL, UNKNOWN, DATA_LOSS)."""

    default_code = grpc.StatusCode.INTERNAL


_CLASSES: dict[grpc.StatusCode, type[PacsdError]] = {
    grpc.StatusCode.UNAVAILABLE: ServerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
}


def _error_info(raw: bytes) -> tuple[str, str, dict[str, str]] | None:
    """(message, reason, metadata) from a google.rpc.Status trailer, or None when
    google.rpc is not installed or the trailer is unreadable."""
    try:
        from google.rpc import error_details_pb2, status_pb2
    except ImportError:
        return None
    try:
        status = status_pb2.Status.FromString(raw)
    except Exception:  # a malformed trailer must not hide the real error
        return None
    for detail in status.details:
        if not detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            continue
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == DOMAIN:
            return status.message, info.reason, dict(info.metadata)
    return status.message, "", {}


def from_rpc_error(
    error: grpc.RpcError, endpoint: str = "", *, connected: bool | None = None
) -> PacsdError:
    """Turn a ``grpc.RpcError`` into the matching ``PacsdError`` subclass.

    ``connected`` is whether the channel had a working connection when the call failed;
    it decides whether a DEADLINE_EXCEEDED means "could not connect" (unreachable).
    None means unknown and is treated as connected, so only proven cases count as
    unreachable.
    """
    code_fn = getattr(error, "code", None)
    code = code_fn() if callable(code_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details_fn = getattr(error, "details", None)
    message = (details_fn() if callable(details_fn) else None) or code.name.lower()

    raw: bytes | None = None
    trailers_fn = getattr(error, "trailing_metadata", None)
    for key, value in (trailers_fn() if callable(trailers_fn) else None) or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            raw = value
    reason, metadata = "", {}
    if raw is not None:
        decoded = _error_info(raw)
        if decoded is not None:
            message = decoded[0] or message
            reason, metadata = decoded[1], decoded[2]

    # A status-details trailer is only ever written by a server handler, so its
    # presence proves an answer came back even when google.rpc cannot decode it.
    answered = raw is not None or bool(reason)
    unreachable = not answered and (
        code is grpc.StatusCode.UNAVAILABLE
        or (code is grpc.StatusCode.DEADLINE_EXCEEDED and connected is False)
    )
    cls = _CLASSES.get(code, PacsdError)
    return cls(
        message,
        code=code,
        reason=reason,
        metadata=metadata,
        endpoint=endpoint,
        unreachable=unreachable,
    )
