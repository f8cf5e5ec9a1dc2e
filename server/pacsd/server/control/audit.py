"""The control plane's audit trail: one AUDIT record per state-changing call.

A gRPC server interceptor rather than code in each servicer, so that no RPC added
later can forget it: every ``pacsd.admin.v1`` unary method is audited unless its name
says it only reads (Get*, List*, Watch*, Stream*, or EchoAETitle, which sends a
C-ECHO but changes nothing). Each record (logger ``pacsd.control.audit``, source
"control", level AUDIT) says who (the authenticated principal -- a token's name or a
client certificate's CN, never the token -- and the caller's address and user agent),
what (method and request, secrets masked), when (the record's time), the result
(status code, error reason) and how long it took. Calls refused by authentication
(control/auth.py) are recorded too, whatever the method.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from pacsd.server.control import principal
from pacsd.server.control.method_handlers import Behaviour, wrapped
from pacsd.server.logbus import AUDIT, AUDIT_LOGGER

audit_log = logging.getLogger(AUDIT_LOGGER)

_PACKAGE = "/pacsd.admin.v1."
_READ_ONLY_PREFIXES = ("Get", "List", "Watch", "Stream")
_READ_ONLY = frozenset({"EchoAETitle"})
#: Request fields whose values never reach the log (any key containing one of these).
_SECRET_KEYS = ("password", "passwd", "secret", "token", "credential", "api_key", "apikey")
#: ``scheme://user:password@host`` -> ``scheme://user:***@host``.
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]+:)[^@/\s]+@")
_MAX_REQUEST_TEXT = 1000
_DETAILS_KEY = "grpc-status-details-bin"


def audited(method: str) -> bool:
    """Whether a full gRPC method name ("/pacsd.admin.v1.X/Y") changes state."""
    if not method.startswith(_PACKAGE):
        return False
    name = method.rsplit("/", 1)[-1]
    return not (name.startswith(_READ_ONLY_PREFIXES) or name in _READ_ONLY)


def redact(value: Any) -> Any:
    """``value`` with secret-looking fields and URL passwords masked."""
    if isinstance(value, dict):
        return {
            k: "***" if any(s in k.lower() for s in _SECRET_KEYS) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value


def request_text(request: Any) -> str:
    if not isinstance(request, Message):
        return ""
    document = redact(json_format.MessageToDict(request, preserving_proto_field_name=True))
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    if len(text) > _MAX_REQUEST_TEXT:
        text = text[:_MAX_REQUEST_TEXT] + "..."
    return text


def _reason(context: grpc.ServicerContext) -> str:
    """The ErrorInfo reason the servicer attached to a failed call, if any."""
    try:
        trailers = context.trailing_metadata() or ()
    except Exception:
        return ""
    for key, value in trailers:
        if key != _DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return str(info.reason)
    return ""


def _details(context: grpc.ServicerContext) -> str:
    try:
        details = context.details()
    except Exception:
        return ""
    if isinstance(details, bytes):
        return details.decode("utf-8", errors="replace")
    return str(details or "")


def _user_agent(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "user-agent":
            return str(value)
    return ""


def record(
    method: str,
    request: Any,
    context: grpc.ServicerContext,
    started: float,
    raised: bool,
) -> None:
    """Write the audit record of one finished call."""
    code = context.code()
    if code is None:
        code = grpc.StatusCode.UNKNOWN if raised else grpc.StatusCode.OK
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    reason = _reason(context) if name != "OK" else ""
    duration_ms = (time.perf_counter() - started) * 1000
    rpc_name = method.removeprefix("/").removeprefix(_PACKAGE[1:])
    client = context.peer()
    caller = principal.current()
    who = client if caller is None else f"{caller} ({client})"
    request_json = request_text(request)
    outcome = name if not reason else f"{name}/{reason}"
    if name != "OK" and (details := _details(context)):
        outcome += f" ({details})"
    audit_log.log(
        AUDIT,
        "%s by %s: %s in %.0f ms %s",
        rpc_name.replace("/", "."),
        who,
        outcome,
        duration_ms,
        request_json,
        extra={
            "rpc": method.removeprefix("/"),
            "client": client,
            "principal": "" if caller is None else str(caller),
            "user_agent": _user_agent(context),
            "code": name,
            "reason": reason,
            "duration_ms": round(duration_ms, 3),
            "request": request_json,
        },
    )


class AuditInterceptor(grpc.ServerInterceptor):
    """Wraps every state-changing unary method so its outcome is recorded."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or handler.unary_unary is None or not audited(method):
            return handler

        def audit(inner: Behaviour) -> Behaviour:
            def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
                started = time.perf_counter()
                raised = True
                try:
                    response = inner(request, context)
                    raised = False
                    return response
                finally:
                    try:
                        record(method, request, context, started, raised)
                    except Exception:  # the audit must never change the call's outcome
                        logging.getLogger("pacsd.core.control").exception(
                            "cannot write the audit record of %s", method
                        )

            return behaviour

        return wrapped(handler, audit)
