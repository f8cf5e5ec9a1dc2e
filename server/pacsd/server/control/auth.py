"""Authentication and authorisation of every control-plane call.

An interceptor rather than checks in the servicers, so that no RPC, unary or
streaming, present or future, can be reached without passing through it; the role an
RPC needs comes from ``roles.py``, which fails closed.

A caller proves who it is with a bearer token (``authorization: Bearer ...``
metadata) matched by SHA-256 against ``control_tokens``, or, when the server requires
client certificates, with the certificate gRPC verified during the handshake, whose
common name ``control_client_roles`` maps to a role. A token, when sent, decides: a
wrong one is refused even over a good certificate, since the caller meant to use it.

Without tokens and without required client certificates (loopback only; the settings
refuse anything else) nothing is checked, as before authentication existed.

Refusals are UNAUTHENTICATED (no or unknown credentials) or PERMISSION_DENIED (known
caller, insufficient role) with an ErrorInfo reason, and each one leaves an AUDIT
record. The token never reaches a message, a log record or an error.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
from pacsd.admin.v1 import errors_pb2
from pacsd.server.config import ControlToken, Settings
from pacsd.server.control import audit
from pacsd.server.control.errors import ControlError
from pacsd.server.control.method_handlers import Behaviour, wrapped
from pacsd.server.control.principal import CURRENT, Principal
from pacsd.server.control.roles import Role, required_role

log = logging.getLogger("pacsd.core.control")

_BEARER = "bearer "
#: gRPC auth-context keys of a TLS peer (the certificate was verified in the handshake).
_CN_KEY = "x509_common_name"
_SECURITY_KEY = "transport_security_type"


class Authenticator:
    """Turns a call's credentials into a ``Principal`` and checks its role."""

    def __init__(
        self,
        tokens: Sequence[ControlToken] = (),
        client_roles: Mapping[str, str] | None = None,
        *,
        client_certs: bool = False,
    ) -> None:
        self._tokens = [(bytes.fromhex(t.sha256), t.name, Role.parse(t.role)) for t in tokens]
        self._client_roles = {cn: Role.parse(r) for cn, r in (client_roles or {}).items()}
        self._client_certs = client_certs

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        return cls(
            settings.control_tokens,
            settings.control_client_roles,
            client_certs=settings.control_require_client_cert,
        )

    @property
    def enabled(self) -> bool:
        return bool(self._tokens) or self._client_certs

    def authenticate(
        self, metadata: Iterable[tuple[str, Any]] | None, auth_context: Mapping[str, Any]
    ) -> Principal:
        """The caller, or ControlError UNAUTHENTICATED / PERMISSION_DENIED."""
        header = _authorization(metadata)
        if header is not None:
            return self._by_token(header)
        common_name = _common_name(auth_context) if self._client_certs else None
        if common_name is not None:
            role = self._client_roles.get(common_name)
            if role is None:
                raise ControlError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    errors_pb2.PERMISSION_DENIED,
                    f"client certificate CN={common_name} has no role on this server "
                    "(control_client_roles); send a token instead",
                    {"role": "", "principal": f"certificate:{common_name}"},
                )
            return Principal(common_name, role, "certificate")
        raise ControlError(
            grpc.StatusCode.UNAUTHENTICATED,
            errors_pb2.UNAUTHENTICATED,
            "this control plane requires credentials: a bearer token (pacsctl --token or "
            "PACSCTL_TOKEN)" + (" or a client certificate" if self._client_certs else ""),
        )

    def _by_token(self, header: str) -> Principal:
        if not header.lower().startswith(_BEARER) or not header[len(_BEARER) :].strip():
            raise ControlError(
                grpc.StatusCode.UNAUTHENTICATED,
                errors_pb2.TOKEN_INVALID,
                "the authorization metadata must read 'Bearer <token>'",
            )
        digest = hashlib.sha256(header[len(_BEARER) :].strip().encode("utf-8")).digest()
        found: Principal | None = None
        # Every stored digest is compared, in constant time, whatever matched earlier.
        for stored, name, role in self._tokens:
            if hmac.compare_digest(stored, digest):
                found = Principal(name, role, "token")
        if found is None:
            raise ControlError(
                grpc.StatusCode.UNAUTHENTICATED,
                errors_pb2.TOKEN_INVALID,
                "the bearer token is not valid on this server",
            )
        return found

    @staticmethod
    def authorize(principal: Principal, method: str, required: Role) -> None:
        if principal.role >= required:
            return
        rpc_name = method.removeprefix("/").rsplit(".", 1)[-1].replace("/", ".")
        raise ControlError(
            grpc.StatusCode.PERMISSION_DENIED,
            errors_pb2.PERMISSION_DENIED,
            f"{principal} has role {principal.role.label}; {rpc_name} needs {required.label}",
            {
                "required_role": required.label,
                "role": principal.role.label,
                "principal": str(principal),
            },
        )


def _authorization(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def _common_name(auth_context: Mapping[str, Any]) -> str | None:
    if b"ssl" not in auth_context.get(_SECURITY_KEY, ()):
        return None
    names = auth_context.get(_CN_KEY) or ()
    return names[0].decode("utf-8", errors="replace") if names else None


class AuthInterceptor(grpc.ServerInterceptor):
    """Admits a call only with credentials whose role covers the method."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or not self.authenticator.enabled:
            return handler
        method = str(handler_call_details.method)
        required = required_role(method)
        if required is None:
            return handler
        return wrapped(handler, lambda inner: self._guard(method, required, inner))

    def _guard(self, method: str, required: Role, inner: Behaviour) -> Behaviour:
        """``inner`` behind the credentials check.

        A streaming response is returned as the inner iterator, which gRPC then drains:
        the check has run by the time the first message is produced.
        """
        authenticator = self.authenticator

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            principal: Principal | None = None
            try:
                principal = authenticator.authenticate(
                    context.invocation_metadata(), context.auth_context()
                )
                authenticator.authorize(principal, method, required)
            except ControlError as exc:
                denied = CURRENT.set(principal)  # the audit record names a known caller
                try:
                    _deny(method, request, context, started, exc)
                finally:
                    CURRENT.reset(denied)
            token = CURRENT.set(principal)
            try:
                return inner(request, context)
            finally:
                CURRENT.reset(token)

        return behaviour


def _deny(
    method: str, request: Any, context: grpc.ServicerContext, started: float, exc: ControlError
) -> None:
    """Answer the refusal and leave an AUDIT record of it (abort raises)."""
    try:
        context.abort_with_status(exc.to_status())
    finally:
        try:
            audit.record(method, request, context, started, raised=True)
        except Exception:  # the audit must never change the call's outcome
            log.exception("cannot write the audit record of %s", method)
