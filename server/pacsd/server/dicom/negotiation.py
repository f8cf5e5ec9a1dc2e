"""Association negotiation without re-validating the same UIDs over and over.

pynetdicom validates a UID with pydicom's regular expressions every time one passes
through a setter: decoding each item of an A-ASSOCIATE-RQ, converting the items to
presentation contexts, negotiating each context, building the A-ASSOCIATE-AC. For DCMTK
``storescu`` proposing every storage class (128 contexts) that was ~10 ms of CPU per
association; building pacsd's own offer (every storage SOP class x every transfer
syntax, ~6800 UIDs) through the same setters cost ~95 ms, paid by each engine process on
its first association.

Two things here:

* a memo of UIDs known to be valid and conformant (pydicom's dictionary, and what the
  loaded add-ins declare, each validated once by pynetdicom's own function), which
  pynetdicom's setters consult first (``install``). Anything not in it (a private UID a
  peer sends, a malformed one, an empty one, a non-conformant one) takes pynetdicom's
  unchanged path, so what a peer sends is checked, rejected and logged as before;
* the presentation contexts offered for a routing table (``offer_for``), built from
  validated UIDs when the table is built (``routing.derive_on_build``), not by the
  first association that uses it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pacsd.server.addins import routing
from pacsd.server.addins.routing import RoutingTable
from pydicom.uid import UID, UID_dictionary
from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    _config,
    _validators,
    pdu_items,
    pdu_primitives,
    presentation,
    utils,
)
from pynetdicom.presentation import PresentationContext

log = logging.getLogger("pacsd.core.dicom")

#: pynetdicom's own functions, called for every value the memo does not hold.
_pynetdicom_set_uid = utils.set_uid
_pynetdicom_add_transfer_syntax = PresentationContext.add_transfer_syntax
_DEFAULT_UI_VALIDATOR = _validators.validate_ui

#: value (str or its ASCII bytes) -> the UID pynetdicom's ``set_uid`` returns for it,
#: for values it accepts without a warning. Grows only with pydicom's dictionary and
#: with what add-ins declare (never with what peers send), so it stays small. Writers
#: hold ``_lock`` and add their entries in one ``update``; readers never lock.
_valid: dict[str | bytes, UID] = {}
#: The subset that ``PresentationContext.add_transfer_syntax`` takes without a
#: warning: registered (not private) transfer syntaxes.
_transfer_syntaxes: dict[str, UID] = {}
_lock = threading.Lock()
_installed = False


def install() -> None:
    """Make pynetdicom consult the memo before validating a UID (idempotent).

    Every call of the memoised functions returns what pynetdicom's would: a hit is a
    value pynetdicom already accepted, unchanged and without a warning, and the UIDs
    returned are immutable strings. The memo is bypassed if someone replaces
    pynetdicom's UI validator (``_config.VALIDATORS``).
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    _remember([*UID_dictionary, PYNETDICOM_IMPLEMENTATION_UID])
    for module in (pdu_items, pdu_primitives, presentation):
        module.set_uid = _set_uid  # type: ignore[attr-defined]
    PresentationContext.add_transfer_syntax = _add_transfer_syntax  # type: ignore[method-assign]


def _set_uid(
    value: Any,
    name: str,
    allow_empty: bool = True,
    allow_none: bool = True,
    validate: bool = True,
) -> UID | None:
    """pynetdicom's ``utils.set_uid``, answered from the memo when it can be."""
    if _memoisable(value):
        uid = _valid.get(value)
        if uid is not None:
            return uid
    return _pynetdicom_set_uid(value, name, allow_empty, allow_none, validate)


def _add_transfer_syntax(self: PresentationContext, syntax: Any) -> None:
    """pynetdicom's ``PresentationContext.add_transfer_syntax``, without re-validating
    a registered transfer syntax it has accepted before."""
    uid = _transfer_syntaxes.get(syntax) if _memoisable(syntax) else None
    if uid is None:
        _pynetdicom_add_transfer_syntax(self, syntax)
    elif uid not in self._transfer_syntax:
        self._transfer_syntax.append(uid)


def _memoisable(value: Any) -> bool:
    """Whether pynetdicom's answer for ``value`` depends on its content alone: a
    ``str`` or ``bytes``, or a ``UID`` without a private transfer syntax's encoding
    (pydicom copies that onto the UID it makes), with pynetdicom's own UI validator
    in force."""
    kind = type(value)
    if kind is UID:
        if value.__dict__:
            return False
    elif kind is not str and kind is not bytes:
        return False
    return _config.VALIDATORS["UI"] is _DEFAULT_UI_VALIDATOR


def _remember(values: Iterable[str]) -> None:
    """Validate each value once with pynetdicom's ``set_uid`` and keep those it
    accepts without a warning (valid and conformant)."""
    valid: dict[str | bytes, UID] = {}
    syntaxes: dict[str, UID] = {}
    for value in values:
        if value in _valid or value in valid:
            continue
        try:
            uid = _pynetdicom_set_uid(value, "UID", False, False, True)
        except (TypeError, ValueError):
            continue
        if uid is None or not uid.is_valid or uid != value:
            continue
        valid[value] = uid
        if value.isascii():
            valid[value.encode("ascii")] = uid
        if not uid.is_private and uid.is_transfer_syntax:
            syntaxes[value] = uid
    with _lock:
        _valid.update(valid)
        _transfer_syntaxes.update(syntaxes)


def validated(value: str) -> UID | None:
    """The UID for a value pacsd offers (from an add-in's declaration), validated by
    pynetdicom once; None, with the reason logged, if pynetdicom refuses it."""
    uid = _valid.get(value)
    if uid is not None:
        return uid
    try:
        checked = _pynetdicom_set_uid(value, "UID", False, False, True)
    except (TypeError, ValueError) as exc:
        log.error("not offering UID %r declared by an add-in: %s", value, exc)
        return None
    _remember([value])
    return checked


@dataclass(frozen=True)
class Offer:
    """The presentation contexts offered for one routing table."""

    contexts: list[PresentationContext]
    #: abstract syntax -> its context in ``contexts``
    by_abstract_syntax: dict[str, PresentationContext]
    #: abstract syntax -> {transfer syntax: our validated UID for it}
    syntaxes: dict[str, dict[str, UID]]


def offer_for(table: RoutingTable) -> Offer:
    """The presentation contexts for ``table``: built once, when the table is built
    (or, for a table built before this module was imported, on first use)."""
    return table.derived(_OFFER, _build_offer)


def _build_offer(table: RoutingTable) -> Offer:
    wanted: dict[UID, list[UID]] = {}
    roles: set[UID] = set()
    # Most SOP classes share one list of transfer syntaxes: check each list once.
    checked: dict[tuple[str, ...], list[UID]] = {}
    sources = [(table.abstract_syntaxes(), False), (table.sub_operation_syntaxes(), True)]
    for declared, role_selection in sources:
        for abstract, syntaxes in declared.items():
            uid = validated(abstract)
            if uid is None:
                continue
            ts_uids = checked.get(syntaxes)
            if ts_uids is None:
                valid = (validated(ts) for ts in syntaxes)
                ts_uids = checked[syntaxes] = list(dict.fromkeys(u for u in valid if u))
            accepted = wanted.get(uid)
            if accepted is None:
                wanted[uid] = list(ts_uids)
            else:
                accepted.extend(ts for ts in ts_uids if ts not in accepted)
            if role_selection:
                # C-GET sends instances back on the same association: accept the peer's
                # proposal to be the Storage SCP for them (SCP/SCU role selection,
                # PS3.7 D.3.3.4).
                roles.add(uid)
    contexts: list[PresentationContext] = []
    for abstract_uid, ts_uids in wanted.items():
        if not ts_uids:
            continue
        # The UIDs were validated above: set them without the validating setters.
        cx = PresentationContext()
        cx._abstract_syntax = abstract_uid
        cx._transfer_syntax = ts_uids
        if abstract_uid in roles:
            cx.scu_role, cx.scp_role = True, True
        contexts.append(cx)
    return Offer(
        contexts,
        {str(cx.abstract_syntax): cx for cx in contexts},
        {str(cx.abstract_syntax): {str(ts): ts for ts in cx.transfer_syntax} for cx in contexts},
    )


_OFFER = "dicom.presentation_contexts"
routing.derive_on_build(_OFFER, _build_offer)


def prefer_requestor_syntaxes(
    offer: Offer,
    requested: Sequence[PresentationContext],
    supported: list[PresentationContext],
) -> list[PresentationContext]:
    """``supported`` with each requested abstract syntax's transfer syntaxes in the
    requestor's order.

    pynetdicom picks the first of the acceptor's syntaxes the requestor proposed; an
    archive should keep what the sender has (no transcoding), so the syntaxes of each
    requested abstract syntax are put in the requestor's order (first seen across all
    its contexts for that abstract syntax). Contexts that change are copies made of our
    validated UIDs; ``supported`` and the offer are not touched.
    """
    order: dict[str, list[str]] = {}
    for rq in requested:
        abstract = rq.abstract_syntax
        if abstract is None:
            continue  # pynetdicom's negotiation refuses it
        seen = order.setdefault(abstract, [])
        seen.extend(ts for ts in rq.transfer_syntax if ts not in seen)
    copies: dict[str, PresentationContext] = {}
    for sop_class, preferred in order.items():
        ours = offer.syntaxes.get(sop_class)
        if not ours:
            continue
        front = [ours[ts] for ts in preferred if ts in ours]
        cx = offer.by_abstract_syntax[sop_class]
        current = cx.transfer_syntax
        if not front or front == current[: len(front)]:
            continue
        # Ours that the peer did not propose could never be chosen: leave them out.
        copy = PresentationContext()
        copy._abstract_syntax = cx.abstract_syntax
        copy._transfer_syntax = front
        copy._scu_role, copy._scp_role = cx.scu_role, cx.scp_role
        copies[sop_class] = copy
    if not copies:
        return supported
    # ``supported`` holds the offer's own contexts (those accepts() kept): swap in the
    # re-ranked copies.
    return [copies.get(cx._abstract_syntax or "", cx) for cx in supported]
