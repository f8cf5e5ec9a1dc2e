"""``pacsd.admin.v1.AETitleService``: thin mapping from RPCs to the AE registry and client.

The registry validates and persists; this module only translates messages and maps the
registry's exceptions to the control plane's error model (``docs/errors.md``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import grpc
from pacsd.addin.services import (
    UNSET,
    AETitleConflict,
    AETitleEntry,
    AETitles,
    DicomClient,
    InvalidAETitleEntry,
    Permission,
    UnknownAETitle,
    Unset,
)
from pacsd.admin.v1 import aetitles_pb2, aetitles_pb2_grpc, errors_pb2
from pacsd.server.aetitles import normalize_ae_title
from pacsd.server.control.errors import ControlError, rpc

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: Longest C-ECHO wait a caller may ask for; longer is a typo, not a wish.
MAX_ECHO_TIMEOUT = 300.0
_UPDATABLE = ("host", "port", "description", "allowed_addresses", "permissions")
_TOKEN_PREFIX = "ae:"
#: Permission <-> its proto enum value ("n-services" <-> PERMISSION_N_SERVICES).
_TO_PROTO: dict[Permission, aetitles_pb2.Permission] = {
    p: cast(aetitles_pb2.Permission, aetitles_pb2.Permission.Value("PERMISSION_" + p.name))
    for p in Permission
}
_FROM_PROTO = {number: p for p, number in _TO_PROTO.items()}


def ae_title_message(entry: AETitleEntry) -> aetitles_pb2.AETitle:
    msg = aetitles_pb2.AETitle(
        ae_title=entry.ae_title,
        host=entry.host,
        port=entry.port,
        description=entry.description,
        allowed_addresses=list(entry.allowed_addresses),
    )
    if entry.permissions is not None:
        msg.permissions.SetInParent()  # set, even when empty: "no permission" is not "all"
        msg.permissions.values.extend(sorted(_TO_PROTO[p] for p in entry.permissions))
    return msg


def permissions_from_message(msg: aetitles_pb2.AETitle) -> frozenset[Permission] | None:
    """The permission set an AETitle carries; None (all) when the field is unset."""
    if not msg.HasField("permissions"):
        return None
    granted = set()
    for value in msg.permissions.values:
        permission = _FROM_PROTO.get(value)
        if permission is None:
            raise _invalid(
                "ae_title.permissions", f"permissions: {value} is not a known Permission value"
            )
        granted.add(permission)
    return frozenset(granted)


def _invalid(field: str, message: str) -> ControlError:
    return ControlError(
        grpc.StatusCode.INVALID_ARGUMENT, errors_pb2.INVALID_ARGUMENT, message, {"field": field}
    )


def _not_found(exc: UnknownAETitle) -> ControlError:
    return ControlError(
        grpc.StatusCode.NOT_FOUND,
        errors_pb2.AE_TITLE_NOT_FOUND,
        str(exc),
        {"ae_title": exc.ae_title},
    )


@contextmanager
def _registry_errors(prefix: str = "") -> Iterator[None]:
    """Map registry exceptions; ``prefix`` turns "host" into "ae_title.host" for RPCs
    whose request nests the entry."""
    try:
        yield
    except UnknownAETitle as exc:
        raise _not_found(exc) from exc
    except AETitleConflict as exc:
        raise ControlError(
            grpc.StatusCode.ALREADY_EXISTS,
            errors_pb2.AE_TITLE_EXISTS,
            str(exc),
            {
                "ae_title": exc.existing.ae_title,
                "host": exc.existing.host,
                "port": str(exc.existing.port),
            },
        ) from exc
    except InvalidAETitleEntry as exc:
        raise _invalid(prefix + exc.field, str(exc)) from exc


def _encode_token(last_ae_title: str) -> str:
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{last_ae_title}".encode()).decode()


def _decode_token(token: str) -> str:
    """The AE title the previous page ended with.

    Keyset tokens rather than offsets: the registry changes under operators' scripts,
    and an offset would skip or repeat entries when one is added or removed between
    pages; "after X" never does.
    """
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        if not text.startswith(_TOKEN_PREFIX):
            raise ValueError(token)
        after = normalize_ae_title(text.removeprefix(_TOKEN_PREFIX))
        # base64 decoding is lenient (it ignores trailing junk); only the exact token
        # this server issued is accepted.
        if _encode_token(after) != token:
            raise ValueError(token)
        return after
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise ControlError(
            grpc.StatusCode.INVALID_ARGUMENT,
            errors_pb2.INVALID_PAGE_TOKEN,
            "page_token was not issued by this server",
            {"field": "page_token"},
        ) from exc


class AETitleServicer(aetitles_pb2_grpc.AETitleServiceServicer):
    def __init__(self, aetitles: AETitles, dicom_client: DicomClient) -> None:
        self._aetitles = aetitles
        self._client = dicom_client

    def _key(self, value: str, field: str = "ae_title") -> str:
        if not value:
            raise _invalid(field, f"{field} is required")
        try:
            return normalize_ae_title(value, field)
        except InvalidAETitleEntry as exc:
            raise _invalid(field, str(exc)) from exc

    @rpc
    def ListAETitles(
        self, request: aetitles_pb2.ListAETitlesRequest, context: grpc.ServicerContext
    ) -> aetitles_pb2.ListAETitlesResponse:
        if request.page_size < 0:
            raise _invalid("page_size", "page_size must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(request.page_token) if request.page_token else None
        entries = [e for e in self._aetitles.list() if after is None or e.ae_title > after]
        entries.sort(key=lambda e: e.ae_title)
        chunk = entries[:size]
        token = _encode_token(chunk[-1].ae_title) if len(entries) > size else ""
        return aetitles_pb2.ListAETitlesResponse(
            ae_titles=[ae_title_message(e) for e in chunk], next_page_token=token
        )

    @rpc
    def GetAETitle(
        self, request: aetitles_pb2.GetAETitleRequest, context: grpc.ServicerContext
    ) -> aetitles_pb2.GetAETitleResponse:
        key = self._key(request.ae_title)
        with _registry_errors():
            entry = self._aetitles.get(key)
        return aetitles_pb2.GetAETitleResponse(ae_title=ae_title_message(entry))

    @rpc
    def CreateAETitle(
        self, request: aetitles_pb2.CreateAETitleRequest, context: grpc.ServicerContext
    ) -> aetitles_pb2.CreateAETitleResponse:
        if not request.HasField("ae_title"):
            raise _invalid("ae_title", "ae_title is required")
        msg = request.ae_title
        entry = AETitleEntry(
            ae_title=self._key(msg.ae_title, "ae_title.ae_title"),
            host=msg.host,
            port=msg.port,
            description=msg.description,
            allowed_addresses=tuple(msg.allowed_addresses),
            permissions=permissions_from_message(msg),
        )
        with _registry_errors("ae_title."):
            changed = self._aetitles.create(entry)
            stored = self._aetitles.get(entry.ae_title)
        return aetitles_pb2.CreateAETitleResponse(
            ae_title=ae_title_message(stored), changed=changed
        )

    @rpc
    def UpdateAETitle(
        self, request: aetitles_pb2.UpdateAETitleRequest, context: grpc.ServicerContext
    ) -> aetitles_pb2.UpdateAETitleResponse:
        if not request.HasField("ae_title"):
            raise _invalid("ae_title", "ae_title is required")
        msg = request.ae_title
        key = self._key(msg.ae_title, "ae_title.ae_title")
        paths = list(request.update_mask.paths) or list(_UPDATABLE)
        for path in paths:
            if path not in _UPDATABLE:
                raise _invalid(
                    "update_mask",
                    f"cannot update {path!r}; updatable fields: {', '.join(_UPDATABLE)}",
                )
        permissions: frozenset[Permission] | Unset | None = UNSET
        if "permissions" in paths:
            permissions = permissions_from_message(msg)
        with _registry_errors("ae_title."):
            entry, changed = self._aetitles.update(
                key,
                host=msg.host if "host" in paths else None,
                port=msg.port if "port" in paths else None,
                description=msg.description if "description" in paths else None,
                allowed_addresses=(
                    tuple(msg.allowed_addresses) if "allowed_addresses" in paths else None
                ),
                permissions=permissions,
            )
        return aetitles_pb2.UpdateAETitleResponse(ae_title=ae_title_message(entry), changed=changed)

    @rpc
    def DeleteAETitle(
        self, request: aetitles_pb2.DeleteAETitleRequest, context: grpc.ServicerContext
    ) -> aetitles_pb2.DeleteAETitleResponse:
        key = self._key(request.ae_title)
        with _registry_errors():
            changed = self._aetitles.delete(key)
        return aetitles_pb2.DeleteAETitleResponse(changed=changed)

    @rpc
    def EchoAETitle(
        self, request: aetitles_pb2.EchoAETitleRequest, context: grpc.ServicerContext
    ) -> aetitles_pb2.EchoAETitleResponse:
        key = self._key(request.ae_title)
        timeout = request.timeout
        if timeout < 0 or timeout > MAX_ECHO_TIMEOUT or timeout != timeout:  # NaN too
            raise _invalid("timeout", f"timeout must be between 0 and {MAX_ECHO_TIMEOUT:g} s")
        remaining = context.time_remaining()
        if not timeout and remaining is not None:
            # Answer before the caller's deadline rather than leaving it with
            # DEADLINE_EXCEEDED and no idea what the peer did.
            timeout = max(min(remaining - 0.5, 30.0), 0.5)
        with _registry_errors():
            result = self._client.echo(key, timeout=timeout or None)
        return aetitles_pb2.EchoAETitleResponse(
            success=result.success,
            status=result.status if result.status is not None else 0,
            error=result.error,
            round_trip_ms=result.round_trip_ms,
        )
