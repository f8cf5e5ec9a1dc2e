"""``client.aetitles``: the SDK side of ``pacsd.admin.v1.AETitleService``.

The AE title registry holds the DICOM peers a server knows (AE title, host, port,
description); add-ins reach peers through it by AE title (C-MOVE destinations,
forwarding). Changes are idempotent, like the server and add-in changes: creating an
identical entry or deleting a missing one succeeds with ``changed=False``, so a
configuration script can apply its desired state again and again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from google.protobuf import field_mask_pb2
from pacsd.admin.v1 import aetitles_pb2, aetitles_pb2_grpc
from pacsd.client._paging import PageTokens
from pacsd.client.errors import InvalidArgument

if TYPE_CHECKING:
    from pacsd.client.client import Client

__all__ = ["PERMISSIONS", "AETitleChange", "AETitlesAPI", "permission_names"]

#: Permission names, as the server, the settings file and pacsctl spell them.
PERMISSIONS = ("echo", "store", "find", "move", "get", "n-services", "overwrite", "delete")
#: ``permissions=ALL`` grants every permission (the proto field left unset).
PermissionsArg = Iterable[str] | Literal["all"] | None

#: Extra time the call's deadline allows beyond the C-ECHO's own wait: association
#: setup and release around it, so the server's answer (and its reason) arrives.
_ECHO_SLACK = 5.0
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class AETitleChange:
    """Result of ``create`` or ``update``: the entry as stored after the call, and
    whether the call changed anything."""

    ae_title: aetitles_pb2.AETitle
    changed: bool


class AETitlesAPI:
    """``pacsd.admin.v1.AETitleService``: the known peers of one server.

    Errors carry the server's reason: ``NotFound``/AE_TITLE_NOT_FOUND for an unknown AE
    title, ``AlreadyExists``/AE_TITLE_EXISTS when ``create`` meets an entry with other
    values (metadata holds the existing ``host`` and ``port``), and
    ``InvalidArgument``/INVALID_ARGUMENT with metadata "field" (``ae_title.host``,
    ``ae_title.port``, ...) for values the server refuses.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = aetitles_pb2_grpc.AETitleServiceStub(client._channel)

    # -- reading -----------------------------------------------------------------------

    def list(self, *, page_size: int = 0, timeout: float | None = None) -> _AETitleList:
        """Every entry, sorted by AE title.

        Follows ``next_page_token`` to the last page, so the result is complete;
        ``page_size`` (0: the server's default) only sets how many come per call and
        ``timeout`` applies to each call.
        """
        entries: _AETitleList = []
        token = ""
        tokens = PageTokens("ListAETitles", self._client.endpoint)
        while True:
            request = aetitles_pb2.ListAETitlesRequest(page_size=page_size, page_token=token)
            response = self._client._call(self._stub.ListAETitles, request, timeout)
            entries.extend(response.ae_titles)
            token = response.next_page_token
            if not tokens.follow(token):
                return entries

    def get(self, ae_title: str, *, timeout: float | None = None) -> aetitles_pb2.AETitle:
        response = self._client._call(
            self._stub.GetAETitle, aetitles_pb2.GetAETitleRequest(ae_title=ae_title), timeout
        )
        return response.ae_title

    # -- changes -----------------------------------------------------------------------

    def create(
        self,
        ae_title: str,
        host: str,
        port: int,
        description: str = "",
        *,
        allowed_addresses: Iterable[str] = (),
        permissions: PermissionsArg = None,
        timeout: float | None = None,
    ) -> AETitleChange:
        """Register a peer; ``changed`` is False when the identical entry existed.

        ``allowed_addresses`` (IPs, CIDR networks, host names; empty: any) limits where
        associations calling as this AE title may come from; ``permissions`` (names from
        ``PERMISSIONS``; None or "all": every one) what they may ask for. An entry with
        the same AE title but other values is not overwritten: that raises
        ``AlreadyExists`` (use ``update``).
        """
        entry = create_message(ae_title, host, port, description, allowed_addresses, permissions)
        response = self._client._call(
            self._stub.CreateAETitle, aetitles_pb2.CreateAETitleRequest(ae_title=entry), timeout
        )
        return AETitleChange(response.ae_title, response.changed)

    def update(
        self,
        ae_title: str,
        *,
        host: str | None = None,
        port: int | None = None,
        description: str | None = None,
        allowed_addresses: Iterable[str] | None = None,
        permissions: PermissionsArg = None,
        timeout: float | None = None,
    ) -> AETitleChange:
        """Change the fields given; the others keep their values.

        ``allowed_addresses=[]`` allows every address again and ``permissions="all"``
        grants every permission again; None leaves either as it is. ``changed`` is False
        when every given value was already stored. Giving no field at all is refused
        (``InvalidArgument``), because an empty update mask means "replace every field"
        to the server.
        """
        request = update_request(ae_title, host, port, description, allowed_addresses, permissions)
        response = self._client._call(self._stub.UpdateAETitle, request, timeout)
        return AETitleChange(response.ae_title, response.changed)

    def delete(self, ae_title: str, *, timeout: float | None = None) -> bool:
        """Remove the entry; returns ``changed`` (False when there was none)."""
        response = self._client._call(
            self._stub.DeleteAETitle,
            aetitles_pb2.DeleteAETitleRequest(ae_title=ae_title),
            timeout,
        )
        return bool(response.changed)

    # -- DICOM -------------------------------------------------------------------------

    def echo(
        self,
        ae_title: str,
        *,
        peer_timeout: float | None = None,
        timeout: float | None = None,
    ) -> aetitles_pb2.EchoAETitleResponse:
        """Have the *server* send a C-ECHO to the registered peer, and report how it went.

        An unreachable or refusing peer is not an exception: the response says
        ``success=False`` and ``error`` says why; only an unknown AE title raises
        (``NotFound``). ``peer_timeout`` is how long the server waits for the peer
        (None: what fits in the call's deadline); the call's own deadline is then
        stretched to cover it.
        """
        request = aetitles_pb2.EchoAETitleRequest(ae_title=ae_title)
        if peer_timeout is not None:
            if not (math.isfinite(peer_timeout) and peer_timeout > 0):
                raise InvalidArgument(
                    f"peer_timeout must be a positive number of seconds, not {peer_timeout!r}",
                    reason="INVALID_ARGUMENT",
                    metadata={"field": "timeout"},
                )
            request.timeout = peer_timeout
            deadline = self._client.timeout if timeout is None else timeout
            timeout = max(deadline, peer_timeout + _ECHO_SLACK)
        return self._client._call(self._stub.EchoAETitle, request, timeout)


#: ``AETitlesAPI.list`` shadows the builtin inside the class body, so annotate through this.
_AETitleList = list[aetitles_pb2.AETitle]


def create_message(
    ae_title: str,
    host: str,
    port: int,
    description: str,
    allowed_addresses: Iterable[str],
    permissions: PermissionsArg,
) -> aetitles_pb2.AETitle:
    """The AETitle a create sends (shared by the sync and async clients)."""
    entry = aetitles_pb2.AETitle(
        ae_title=ae_title,
        host=host,
        port=_port(port),
        description=description,
        allowed_addresses=_addresses(allowed_addresses),
    )
    _set_permissions(entry, permissions)
    return entry


def update_request(
    ae_title: str,
    host: str | None,
    port: int | None,
    description: str | None,
    allowed_addresses: Iterable[str] | None,
    permissions: PermissionsArg,
) -> aetitles_pb2.UpdateAETitleRequest:
    """The UpdateAETitleRequest for the fields given; refuses an update of nothing."""
    paths = []
    entry = aetitles_pb2.AETitle(ae_title=ae_title)
    if host is not None:
        entry.host = host
        paths.append("host")
    if port is not None:
        entry.port = _port(port)
        paths.append("port")
    if description is not None:
        entry.description = description
        paths.append("description")
    if allowed_addresses is not None:
        entry.allowed_addresses.extend(_addresses(allowed_addresses))
        paths.append("allowed_addresses")
    if permissions is not None:
        _set_permissions(entry, permissions)
        paths.append("permissions")
    if not paths:
        raise InvalidArgument(
            "give at least one of host, port, description, allowed_addresses, permissions "
            "to update",
            reason="INVALID_ARGUMENT",
            metadata={"field": "update_mask"},
        )
    return aetitles_pb2.UpdateAETitleRequest(
        ae_title=entry, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )


def permission_names(entry: aetitles_pb2.AETitle) -> list[str] | None:
    """The entry's permissions by name, in ``PERMISSIONS`` order; None means all."""
    if not entry.HasField("permissions"):
        return None
    granted = {_name(v) for v in entry.permissions.values}
    return [p for p in PERMISSIONS if p in granted] + sorted(granted - set(PERMISSIONS))


def _name(value: int) -> str:
    try:
        enum_name = aetitles_pb2.Permission.Name(value)
    except ValueError:  # a newer server's permission
        return str(value)
    return enum_name.removeprefix("PERMISSION_").lower().replace("_", "-")


def _addresses(values: Iterable[str]) -> list[str]:
    if isinstance(values, str):  # one address given bare would become its characters
        values = [values]
    return [str(v) for v in values]


def _set_permissions(entry: aetitles_pb2.AETitle, permissions: PermissionsArg) -> None:
    if permissions is None or permissions == "all":
        return  # unset: every permission
    if isinstance(permissions, str):
        permissions = [p for p in permissions.split(",") if p.strip()]
    entry.permissions.SetInParent()
    for name in permissions:
        key = "PERMISSION_" + name.strip().upper().replace("-", "_")
        if name.strip().lower() not in PERMISSIONS:
            raise InvalidArgument(
                f"{name!r} is not a permission; use {', '.join(PERMISSIONS)} or 'all'",
                reason="INVALID_ARGUMENT",
                metadata={"field": "ae_title.permissions"},
            )
        entry.permissions.values.append(
            cast(aetitles_pb2.Permission, aetitles_pb2.Permission.Value(key))
        )


def _port(port: int) -> int:
    # Range checks are the server's (it names the field); a value protobuf cannot even
    # carry in an int32 would otherwise escape as a ValueError/TypeError from protobuf.
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _INT32_MAX:
        raise InvalidArgument(
            f"port must be an integer between 1 and 65535, not {port!r}",
            reason="INVALID_ARGUMENT",
            metadata={"field": "ae_title.port"},
        )
    return port
