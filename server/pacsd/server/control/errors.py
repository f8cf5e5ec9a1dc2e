"""The control plane's error model: gRPC status + google.rpc.ErrorInfo (domain "pacsd").

Servicers raise ``ControlError``; the ``rpc`` decorator turns it into the status the
client sees. Anything else a servicer raises is a bug: it is logged with its traceback
and answered INTERNAL, so a client never sees a Python exception text.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from pacsd.admin.v1 import errors_pb2

log = logging.getLogger("pacsd.core.control")

DOMAIN = "pacsd"

F = TypeVar("F", bound=Callable[..., Any])


class ControlError(Exception):
    def __init__(
        self,
        code: grpc.StatusCode,
        reason: int,
        message: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = errors_pb2.ErrorReason.Name(reason)
        self.message = message
        self.metadata = dict(metadata or {})

    def to_status(self) -> grpc.Status:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=DOMAIN, metadata=self.metadata
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        status = status_pb2.Status(
            code=getattr(code_pb2, self.code.name),
            message=self.message,
            details=[detail],
        )
        return rpc_status.to_status(status)


def rpc(method: F) -> F:
    """Map exceptions raised by a servicer method to gRPC statuses with ErrorInfo."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except ControlError as exc:
            context.abort_with_status(exc.to_status())
        except Exception:
            log.exception("control call %s failed", method.__name__)
            err = ControlError(
                grpc.StatusCode.INTERNAL,
                errors_pb2.INTERNAL_ERROR,
                f"{method.__name__} failed inside the server; see the server log",
            )
            context.abort_with_status(err.to_status())

    return wrapper  # type: ignore[return-value]
