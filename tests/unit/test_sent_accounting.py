"""A response counted by type and Status (send_path's way) counts as the message would.

``AssociationTracker.response_sent`` is what the listener's handler calls for the
responses pacsd encodes, instead of ``dimse_sent`` with a pynetdicom message object.
Both are fed the same responses here, on two trackers, and every counter, the
association's own counts and the event stream's summaries must come out the same; the
message object is built only while a watcher listens.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from pacsd.server.dicom.dimse_encode import encode_command_set
from pacsd.server.dicom.events import kind_of, message_kind
from pacsd.server.dicom.send_path import sent_message
from pacsd.server.dicom.tracking import AssociationTracker
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.transport import AddressInformation

FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _association() -> Association:
    assoc = Association(AE(), "acceptor")
    assoc.requestor.address_info = AddressInformation("127.0.0.1", 11112)
    assoc.requestor.ae_title = "UNIT"
    return assoc


def _responses() -> list[Any]:
    """(encoded command, identifier) of a C-FIND answer, a C-STORE and a C-ECHO."""
    out = []
    for status, identifier in [
        (0xFF00, b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "),
        (0xFF01, b""),
        (0xB000, None),
        (0x0000, None),
    ]:
        rsp = C_FIND()
        rsp.MessageIDBeingRespondedTo = 7
        rsp.AffectedSOPClassUID = FIND
        rsp.Status = status
        rsp.Identifier = BytesIO(identifier) if identifier is not None else None
        out.append(rsp)
    store = C_STORE()
    store.MessageIDBeingRespondedTo = 8
    store.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    store.AffectedSOPInstanceUID = "1.2.3.4"
    store.Status = 0xA700
    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo = 9
    echo.Status = 0x0000
    out += [store, echo]
    encoded = [(encode_command_set(p), getattr(p, "Identifier", None)) for p in out]
    assert all(e is not None for e, _ in encoded)
    return encoded


def _feed(by_status: bool) -> tuple[AssociationTracker, Association, list[Any], int]:
    tracker = AssociationTracker()
    assoc = _association()
    tracker.accepted(assoc, "a1")
    watch = tracker.events.subscribe(100)
    built = 0
    for encoded, identifier in _responses():
        message = sent_message(encoded, 1, identifier)
        if by_status:

            def build(message: Any = message) -> Any:
                nonlocal built
                built += 1
                return message

            tracker.response_sent(assoc, encoded.message_type, encoded.fields["Status"], build)
        else:
            tracker.dimse_sent(assoc, message)
    events, _ = watch.take(0.1)
    tracker.events.unsubscribe(watch)
    return tracker, assoc, events, built


def test_counters_and_summaries_match_the_message_path() -> None:
    by_message, _, events_m, _ = _feed(by_status=False)
    by_status, _, events_s, built = _feed(by_status=True)
    assert by_status.traffic() == by_message.traffic()
    assert by_status.traffic().statuses == {
        ("C-FIND", "sent", 0xFF00): 1,
        ("C-FIND", "sent", 0xFF01): 1,
        ("C-FIND", "sent", 0xB000): 1,
        ("C-FIND", "sent", 0x0000): 1,
        ("C-STORE", "sent", 0xA700): 1,
        ("C-ECHO", "sent", 0x0000): 1,
    }
    assert by_status.snapshot()[1].dimse_messages_sent == 6
    [live] = by_status.live()
    assert (live.messages_sent, live.messages_received) == (6, 0)
    assert built == 6  # once per message while watched
    sent = [e for e in events_s if e.message is not None]
    assert [e.message for e in sent] == [e.message for e in events_m if e.message is not None]
    assert [(e.message.service, e.message.status) for e in sent][:2] == [
        ("C-FIND", 0xFF00),
        ("C-FIND", 0xFF01),
    ]


def test_nothing_is_built_without_a_watcher() -> None:
    tracker = AssociationTracker()
    assoc = _association()
    tracker.accepted(assoc, "a1")
    calls: list[int] = []
    for encoded, _ in _responses():
        tracker.response_sent(
            assoc, encoded.message_type, encoded.fields["Status"], lambda: calls.append(1)
        )
    assert calls == []
    assert tracker.snapshot()[1].dimse_messages_sent == 6
    # A response of an association that is not (or no longer) live is still counted.
    encoded, _ = _responses()[0]
    tracker.response_sent(_association(), encoded.message_type, 0xFF00, lambda: None)
    assert tracker.traffic().statuses[("C-FIND", "sent", 0xFF00)] == 2
    assert tracker.live()[0].messages_sent == 6


def test_kind_of_names_as_message_kind() -> None:
    for encoded, identifier in _responses():
        message = sent_message(encoded, 1, identifier)
        assert kind_of(encoded.message_type) == message_kind(message)
    assert kind_of("C_FIND_RQ") == ("C-FIND", False)
    assert kind_of("N_EVENT_REPORT_RSP") == ("N-EVENT-REPORT", True)
