"""``AssociationInfo`` for a pynetdicom association, built once and kept on it."""

from __future__ import annotations

import ssl
from typing import Any

from pacsd.addin import AssociationInfo, UserIdentity
from pacsd.addin.services import ALL_PERMISSIONS
from pynetdicom.association import Association


def association_info(assoc: Association) -> AssociationInfo:
    info: AssociationInfo | None = getattr(assoc, "pacsd_info", None)
    if info is None:
        info = _build(assoc)
        if assoc.requestor.primitive is not None:
            assoc.pacsd_info = info  # type: ignore[attr-defined]
    return info


def _build(assoc: Association) -> AssociationInfo:
    requestor = assoc.requestor
    primitive = requestor.primitive
    calling = str(getattr(primitive, "calling_ae_title", "") or requestor.ae_title or "")
    called = str(getattr(primitive, "called_ae_title", "") or assoc.acceptor.ae_title or "")
    identity = None
    item = requestor.user_identity if primitive is not None else None
    if item is not None:
        identity = UserIdentity(
            type=int(item.user_identity_type or 0),
            primary=_text(item.primary_field),
            has_secondary=bool(item.secondary_field),
        )
    return AssociationInfo(
        id=getattr(assoc, "pacsd_id", ""),
        calling_ae=calling.strip(),
        called_ae=called.strip(),
        peer_host=str(requestor.address),
        peer_port=int(requestor.port or 0),
        user_identity=identity,
        tls_peer_subject=_tls_subject(assoc),
        # Decided by the access policy at admission (dicom/policy.py), before this is built.
        permissions=getattr(assoc, "pacsd_permissions", ALL_PERMISSIONS),
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value or "")


def _tls_subject(assoc: Association) -> str:
    sock = getattr(assoc.dul.socket, "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        return ""
    cert = sock.getpeercert()
    if not cert:
        return ""
    subject: Any = cert.get("subject", ())
    parts = [f"{k}={v}" for rdn in subject for k, v in rdn]
    return ",".join(parts)
