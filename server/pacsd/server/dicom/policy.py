"""The DICOM access policy: who may associate, and what each association may ask for.

Admission runs once per association, before pynetdicom negotiates anything, in this
order: the called AE title (``check_called_ae``), the calling AE title and the peer's
address (the AE registry, ``require_known_calling_ae``), then User Identity
(``dicom_users``, ``require_user_identity``). The first failure is the A-ASSOCIATE-RJ the
peer gets, with the diagnostic PS3.8 defines for it, so the peer's own tools say why
(DCMTK prints "Calling AE Title Not Recognized"). An admitted association carries the
permissions of its calling AE (``AssociationInfo.permissions``); dispatch refuses every
request those do not cover with 0x0124.

The registry is looked up through the ``aetitles`` base service on every association,
since an add-in may replace it while the server runs.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pacsd.addin import Service
from pacsd.addin.services import AETitleEntry, Permission
from pacsd.server.config import Settings
from pacsd.server.dicom.engine import Rejection
from pacsd.server.passcodes import InvalidPasscodeHash, hash_passcode, verify_passcode
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import UserIdentityNegotiation

log = logging.getLogger("pacsd.core.policy")


class PolicyRejection(Rejection):
    """A rejection decided by the access policy (counted apart from add-in rejections)."""


# A-ASSOCIATE-RJ parameters (PS3.8 9.3.4): result 1 permanent, source 1 service user.
_PERMANENT, _SERVICE_USER = 0x01, 0x01
_NO_REASON, _CALLING_AE, _CALLED_AE = 0x01, 0x03, 0x07
_TRANSIENT = 0x02

#: The permissions each DIMSE service needs.
REQUIRED: dict[Service, tuple[Permission, ...]] = {
    Service.C_ECHO: (Permission.ECHO,),
    Service.C_STORE: (Permission.STORE,),
    Service.C_FIND: (Permission.FIND,),
    Service.C_GET: (Permission.GET,),
    Service.C_MOVE: (Permission.MOVE,),
    Service.N_ACTION: (Permission.N_SERVICES,),
    Service.N_CREATE: (Permission.N_SERVICES,),
    Service.N_SET: (Permission.N_SERVICES,),
    Service.N_GET: (Permission.N_SERVICES,),
    Service.N_EVENT_REPORT: (Permission.N_SERVICES,),
    Service.N_DELETE: (Permission.N_SERVICES, Permission.DELETE),
}

#: Looks up an AE title in the registry; raises KeyError (UnknownAETitle) when unknown.
Lookup = Callable[[str], AETitleEntry | None]


def missing_permissions(service: Service, granted: frozenset[Permission]) -> list[Permission]:
    """The permissions ``service`` needs that ``granted`` lacks (empty: allowed)."""
    return [p for p in REQUIRED.get(service, ()) if p not in granted]


@dataclass(frozen=True, slots=True)
class Admission:
    """The policy's verdict: a rejection, or the permissions the association gets."""

    rejection: Rejection | None
    permissions: frozenset[Permission] = frozenset()


def admit(assoc: Association, settings: Settings, lookup: Lookup) -> Rejection | None:
    """Decide on ``assoc`` and record the outcome on it; returns the rejection, if any.

    An admitted association gets ``pacsd_permissions`` (read by ``AssociationInfo``) and,
    when the peer asked for one, a positive User Identity response.
    """
    primitive: Any = assoc.requestor.primitive
    calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
    called = str(getattr(primitive, "called_ae_title", "") or "").strip()
    identity: Any = assoc.requestor.user_identity
    verdict = decide(settings, lookup, calling, called, str(assoc.requestor.address), identity)
    if verdict.rejection is None:
        assoc.pacsd_permissions = verdict.permissions  # type: ignore[attr-defined]
        if _wants_positive_response(identity, settings):
            # Types 1 and 2 answer with an empty server response (PS3.7 D.3.3.7.2).
            response = UserIdentityNegotiation()
            response.server_response = b""
            assoc.acceptor.add_negotiation_item(response)
    return verdict.rejection


def decide(
    settings: Settings,
    lookup: Lookup,
    calling: str,
    called: str,
    peer_address: str,
    identity: Any = None,
) -> Admission:
    """The verdict for one association request, without touching pynetdicom."""
    if settings.check_called_ae and called != settings.ae_title:
        return _reject(_CALLED_AE, f"called AE title {called!r} is not {settings.ae_title!r}")
    try:
        entry = _find(lookup, calling)
    except Exception:
        log.exception("AE registry lookup of %r failed; association refused", calling)
        return Admission(
            PolicyRejection(_TRANSIENT, _SERVICE_USER, _NO_REASON, "AE registry unavailable")
        )
    if entry is None:
        if settings.require_known_calling_ae:
            return _reject(_CALLING_AE, f"calling AE title {calling!r} is not in the AE registry")
        permissions = settings.unknown_ae_permissions
    else:
        if entry.allowed_addresses and not address_allowed(peer_address, entry.allowed_addresses):
            return _reject(
                _CALLING_AE,
                f"calling AE title {calling!r} may not connect from {peer_address} "
                f"(allowed: {', '.join(entry.allowed_addresses)})",
            )
        permissions = entry.granted()
    why = check_user_identity(identity, settings.dicom_users, settings.require_user_identity)
    if why:
        return _reject(_NO_REASON, why)
    return Admission(None, frozenset(permissions))


def _reject(diagnostic: int, why: str) -> Admission:
    return Admission(PolicyRejection(_PERMANENT, _SERVICE_USER, diagnostic, why))


def _find(lookup: Lookup, calling: str) -> AETitleEntry | None:
    if not calling:
        return None
    try:
        return lookup(calling)
    except (KeyError, ValueError):  # unknown, or not even a valid AE title
        return None


# -- addresses ---------------------------------------------------------------------------


def address_allowed(peer: str, allowed: Iterable[str]) -> bool:
    """True when ``peer`` matches an allowed IP, CIDR network or host name."""
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    for item in allowed:
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            if ip in _RESOLVER.resolve(item):
                return True
            continue
        if ip.version == network.version and ip in network:
            return True
    return False


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostCache:
    """Host names resolved at check time, kept briefly so a busy peer does not cost a
    DNS query per association, yet a renumbered host is followed within a minute."""

    def __init__(self, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, frozenset[IPAddress]]] = {}

    def resolve(self, name: str) -> frozenset[IPAddress]:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(name.lower())
        if hit is not None and hit[0] > now:
            return hit[1]
        addresses = _lookup_host(name)
        with self._lock:
            self._cache[name.lower()] = (now + self._ttl, addresses)
        return addresses


def _lookup_host(name: str) -> frozenset[IPAddress]:
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        # Cached like a success: an unresolvable name matches nobody until it resolves.
        log.warning("allowed address %r does not resolve: %s", name, exc)
        return frozenset()
    found: set[IPAddress] = set()
    for info in infos:
        try:
            found.add(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except ValueError:
            continue
    return frozenset(found)


_RESOLVER = HostCache()


# -- User Identity (PS3.7 D.3.3.7) ----------------------------------------------------------

_USERNAME, _USERNAME_PASSCODE = 1, 2
_dummy_hash: str | None = None


def check_user_identity(identity: Any, users: dict[str, str], required: bool) -> str:
    """Why the User Identity is refused, "" when it is accepted.

    Only username (type 1) and username + passcode (type 2) are verified. With no
    ``dicom_users`` and nothing required, the server does not take part in User
    Identity negotiation and ignores what a peer sends. The reason names the user,
    never the passcode.
    """
    if not (users or required):
        return ""
    if identity is None:
        return "no user identity given (require_user_identity)" if required else ""
    kind = int(identity.user_identity_type or 0)
    if kind not in (_USERNAME, _USERNAME_PASSCODE):
        return f"user identity type {kind} is not supported" if required else ""
    user = _text(identity.primary_field)
    stored = users.get(user)
    if kind == _USERNAME:
        if stored == "":
            return ""
        return f"user {user!r} unknown or needs a passcode"
    passcode = identity.secondary_field or b""
    if stored is None:
        _spend_like_a_check(passcode)  # unknown users take as long as known ones
        return f"user {user!r} unknown"
    if stored == "":
        return ""
    try:
        if verify_passcode(passcode, stored):
            return ""
    except InvalidPasscodeHash:  # settings validation makes this unreachable
        log.error("dicom_users entry for %r is not a valid hash", user)
    return f"wrong passcode for user {user!r}"


def _wants_positive_response(identity: Any, settings: Settings) -> bool:
    if identity is None or not (settings.dicom_users or settings.require_user_identity):
        return False
    kind = int(identity.user_identity_type or 0)
    return kind in (_USERNAME, _USERNAME_PASSCODE) and bool(identity.positive_response_requested)


def _spend_like_a_check(passcode: bytes) -> None:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_passcode("pacsd-dummy")
    verify_passcode(passcode, _dummy_hash)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value or "")
