"""Association negotiation without re-validation (dicom/negotiation.py).

The memo must answer exactly as pynetdicom's own functions would (value, type, error,
log records), on the first call and on every later one; the offer must be the routing
table's, built with the table; the transfer syntaxes must follow the requestor's order.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from typing import Any

import pytest
from pacsd.addin import HandlerSpec, Service, sop
from pacsd.server.addins.routing import Route, RoutingTable
from pacsd.server.dicom import negotiation
from pydicom.uid import UID
from pynetdicom import pdu_items, pdu_primitives, presentation
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.presentation import PresentationContext

#: pydicom warns about the invalid values of the corpus, as it does for a peer's.
pytestmark = pytest.mark.filterwarnings("ignore:.*VR UI:UserWarning")

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PRIVATE = "1.2.826.0.1.3680043.9.7433.9.1"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"

#: Values a peer (or pacsd) may hand pynetdicom's setters: valid, padded, private,
#: empty, too long, non-conformant, not a UID at all, not text.
CORPUS: list[Any] = [
    CT,
    CT.encode(),
    UID(CT),
    sop.IMPLICIT_VR_LITTLE_ENDIAN,
    sop.EXPLICIT_VR_LITTLE_ENDIAN.encode(),
    CT + " ",
    (CT + " ").encode(),
    " " + CT,
    PRIVATE,
    PRIVATE.encode(),
    "",
    b"",
    None,
    "1." * 32 + "1",  # 65 characters
    ("1." * 32 + "1").encode(),
    "1.2.840.10008.5.1.4.1.1.02",  # non-conformant: leading zero
    "1.2.abc",
    b"1.2.\xff",
    "\u00e9",
    42,
    [CT],
]


def _outcome(fn: Callable[[], Any], caplog: pytest.LogCaptureFixture) -> tuple[Any, ...]:
    caplog.clear()
    try:
        value: Any = fn()
        result: tuple[Any, ...] = ("value", type(value), value)
    except Exception as exc:
        result = ("raised", type(exc), str(exc))
    logged = tuple((r.name, r.levelno, r.getMessage()) for r in caplog.records)
    return (*result, logged)


@pytest.fixture(autouse=True)
def _installed() -> None:
    negotiation.install()


def test_install_puts_the_memo_in_front_of_pynetdicoms_setters() -> None:
    for module in (pdu_items, pdu_primitives, presentation):
        assert module.set_uid is negotiation._set_uid  # type: ignore[attr-defined]
    assert PresentationContext.add_transfer_syntax is negotiation._add_transfer_syntax
    negotiation.install()  # a second call changes nothing
    assert pdu_items.set_uid is negotiation._set_uid  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", CORPUS, ids=repr)
@pytest.mark.parametrize(
    "args", [(True, True, True), (False, False, True), (True, True, False)], ids=str
)
def test_set_uid_answers_as_pynetdicom_does(
    value: Any, args: tuple[bool, bool, bool], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    expected = _outcome(lambda: negotiation._pynetdicom_set_uid(value, "X", *args), caplog)
    for _ in range(2):  # the second call may come from the memo
        assert _outcome(lambda: negotiation._set_uid(value, "X", *args), caplog) == expected


@pytest.mark.parametrize("value", [*CORPUS, JPEG_LOSSLESS, MR], ids=repr)
def test_add_transfer_syntax_answers_as_pynetdicom_does(
    value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def add(fn: Callable[[PresentationContext, Any], None]) -> Callable[[], list[UID]]:
        def run() -> list[UID]:
            cx = PresentationContext()
            fn(cx, sop.IMPLICIT_VR_LITTLE_ENDIAN)
            fn(cx, value)
            fn(cx, value)
            return [*cx.transfer_syntax]

        return run

    expected = _outcome(add(negotiation._pynetdicom_add_transfer_syntax), caplog)
    for _ in range(2):
        assert _outcome(add(negotiation._add_transfer_syntax), caplog) == expected


def test_a_uid_carrying_a_private_encoding_is_not_answered_from_the_memo() -> None:
    """pydicom copies a private transfer syntax's encoding onto the UID it makes: the
    memo's UID for the same value (an add-in declared it) has none."""
    assert negotiation.validated(PRIVATE) == PRIVATE  # now in the memo
    private_ts = UID(PRIVATE)
    private_ts.set_private_encoding(False, True)
    got = negotiation._set_uid(private_ts, "X")
    assert got == private_ts and got is not None and got.is_transfer_syntax


def test_an_invalid_proposed_uid_still_fails_to_decode() -> None:
    """A 65-character abstract syntax in an A-ASSOCIATE-RQ is refused by the decoder,
    every time (the listener answers with an A-ABORT)."""
    rq = A_ASSOCIATE_RQ()
    rq.decode(_associate_rq([(1, CT, [sop.IMPLICIT_VR_LITTLE_ENDIAN])]))
    bad = _associate_rq([(1, "1." * 32 + "1", [sop.IMPLICIT_VR_LITTLE_ENDIAN])])
    for _ in range(2):
        with pytest.raises(ValueError, match="must not exceed 64 characters"):
            A_ASSOCIATE_RQ().decode(bad)


def _associate_rq(contexts: list[tuple[int, str, list[str]]]) -> bytes:
    from tests.reliability import wire

    return wire.associate_rq(contexts=contexts)


# --- the offer ----------------------------------------------------------------------


def _table(*specs: HandlerSpec) -> RoutingTable:
    record = types.SimpleNamespace(name="test", instance=None)
    return RoutingTable.build(
        Route(record, spec, uid, lambda _: None)  # type: ignore[arg-type]
        for spec in specs
        for uid in spec.sop_classes
    )


STORE = HandlerSpec(
    Service.C_STORE, (CT, MR), (sop.EXPLICIT_VR_LITTLE_ENDIAN, sop.IMPLICIT_VR_LITTLE_ENDIAN)
)


def test_the_offer_is_built_with_the_table() -> None:
    table = _table(STORE)
    assert negotiation._OFFER in table._derived  # before any association asked for it
    offer = negotiation.offer_for(table)
    assert offer is negotiation.offer_for(table)
    assert [(cx.abstract_syntax, cx.transfer_syntax) for cx in offer.contexts] == [
        (CT, [sop.EXPLICIT_VR_LITTLE_ENDIAN, sop.IMPLICIT_VR_LITTLE_ENDIAN]),
        (MR, [sop.EXPLICIT_VR_LITTLE_ENDIAN, sop.IMPLICIT_VR_LITTLE_ENDIAN]),
    ]
    for cx in offer.contexts:
        assert type(cx.abstract_syntax) is UID
        assert all(type(ts) is UID for ts in cx.transfer_syntax)
        assert (cx.scu_role, cx.scp_role) == (None, None)


def test_a_table_made_without_build_gets_its_offer_on_first_use() -> None:
    table = RoutingTable({})
    assert negotiation.offer_for(table).contexts == []


def test_c_get_sub_operations_add_role_selection_and_merge_syntaxes() -> None:
    get = HandlerSpec(
        Service.C_GET,
        (STUDY_GET,),
        (sop.EXPLICIT_VR_LITTLE_ENDIAN, JPEG_LOSSLESS),
        sub_operation_sop_classes=(CT, PRIVATE),
    )
    offer = negotiation.offer_for(_table(STORE, get))
    by_uid = {str(cx.abstract_syntax): cx for cx in offer.contexts}
    assert list(by_uid) == [CT, MR, STUDY_GET, PRIVATE]
    assert by_uid[CT].transfer_syntax == [
        sop.EXPLICIT_VR_LITTLE_ENDIAN,
        sop.IMPLICIT_VR_LITTLE_ENDIAN,
        JPEG_LOSSLESS,
    ]
    assert (by_uid[CT].scu_role, by_uid[CT].scp_role) == (True, True)
    assert (by_uid[PRIVATE].scu_role, by_uid[PRIVATE].scp_role) == (True, True)
    assert (by_uid[MR].scu_role, by_uid[MR].scp_role) == (None, None)
    assert (by_uid[STUDY_GET].scu_role, by_uid[STUDY_GET].scp_role) == (None, None)


def test_an_invalid_declared_uid_is_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    too_long = "1." * 32 + "1"
    spec = HandlerSpec(Service.C_STORE, (CT, too_long), (sop.IMPLICIT_VR_LITTLE_ENDIAN, "x" * 65))
    with caplog.at_level(logging.ERROR, logger="pacsd.core.dicom"):
        offer = negotiation.offer_for(_table(spec))
    assert [(cx.abstract_syntax, cx.transfer_syntax) for cx in offer.contexts] == [
        (CT, [sop.IMPLICIT_VR_LITTLE_ENDIAN])
    ]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert too_long in messages and "x" * 65 in messages


def test_a_non_conformant_declared_uid_is_offered_but_never_memoised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pynetdicom accepts it with a warning: so does the offer, and a peer that
    proposes it still gets pynetdicom's warning, every time."""
    odd = "1.2.826.0.1.3680043.9.7433.09"
    offer = negotiation.offer_for(
        _table(HandlerSpec(Service.C_STORE, (odd,), (sop.IMPLICIT_VR_LITTLE_ENDIAN,)))
    )
    assert [cx.abstract_syntax for cx in offer.contexts] == [odd]
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        caplog.clear()
        assert negotiation._set_uid(odd.encode(), "Abstract Syntax Name") == odd
        assert any("Non-conformant" in r.getMessage() for r in caplog.records)


# --- the requestor's order ------------------------------------------------------------


def _requested(*contexts: tuple[int, str, list[str]]) -> list[PresentationContext]:
    rq = A_ASSOCIATE_RQ()
    rq.decode(_associate_rq(list(contexts)))
    return rq.to_primitive().presentation_context_definition_list


def test_the_requestors_transfer_syntax_order_wins() -> None:
    offer = negotiation.offer_for(_table(STORE))
    supported = list(offer.contexts)
    requested = _requested(
        (1, CT, [sop.IMPLICIT_VR_LITTLE_ENDIAN, JPEG_LOSSLESS]),
        (3, CT, [sop.EXPLICIT_VR_LITTLE_ENDIAN]),
        (5, MR, [sop.EXPLICIT_VR_LITTLE_ENDIAN, sop.IMPLICIT_VR_LITTLE_ENDIAN]),
    )
    ranked = negotiation.prefer_requestor_syntaxes(offer, requested, supported)
    assert [cx.abstract_syntax for cx in ranked] == [CT, MR]
    # CT: the peer's order across its contexts (implicit first); MR: already ours.
    assert ranked[0].transfer_syntax == [
        sop.IMPLICIT_VR_LITTLE_ENDIAN,
        sop.EXPLICIT_VR_LITTLE_ENDIAN,
    ]
    assert ranked[1] is offer.contexts[1]
    # Nothing shared was changed.
    assert supported == offer.contexts
    assert offer.contexts[0].transfer_syntax == [
        sop.EXPLICIT_VR_LITTLE_ENDIAN,
        sop.IMPLICIT_VR_LITTLE_ENDIAN,
    ]


def test_contexts_an_addin_refused_stay_out() -> None:
    offer = negotiation.offer_for(_table(STORE))
    kept = [offer.contexts[1]]  # accepts() dropped CT
    requested = _requested((1, CT, [sop.IMPLICIT_VR_LITTLE_ENDIAN]))
    assert negotiation.prefer_requestor_syntaxes(offer, requested, kept) == kept


def test_role_selection_survives_re_ranking() -> None:
    get = HandlerSpec(
        Service.C_GET,
        (STUDY_GET,),
        (sop.EXPLICIT_VR_LITTLE_ENDIAN, sop.IMPLICIT_VR_LITTLE_ENDIAN),
        sub_operation_sop_classes=(CT,),
    )
    offer = negotiation.offer_for(_table(get))
    requested = _requested((1, CT, [sop.IMPLICIT_VR_LITTLE_ENDIAN]))
    ranked = negotiation.prefer_requestor_syntaxes(offer, requested, list(offer.contexts))
    ct = next(cx for cx in ranked if cx.abstract_syntax == CT)
    assert ct.transfer_syntax[0] == sop.IMPLICIT_VR_LITTLE_ENDIAN
    assert (ct.scu_role, ct.scp_role) == (True, True)
