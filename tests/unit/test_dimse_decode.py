"""dimse_decode builds the C-STORE primitive pynetdicom builds, or declines."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from pacsd.server.dicom import dimse_decode, spool
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA

CT = "1.2.840.10008.5.1.4.1.1.2"
INSTANCE = "1.2.826.0.1.3680043.8.498.84362576990252533300771734292204249504"
FIELDS = (
    "MessageID",
    "Priority",
    "AffectedSOPClassUID",
    "AffectedSOPInstanceUID",
    "MoveOriginatorApplicationEntityTitle",
    "MoveOriginatorMessageID",
)


def element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def uid(text: str) -> bytes:
    raw = text.encode()
    return raw + b"\x00" if len(raw) % 2 else raw


def command(**override: bytes | None) -> bytes:
    """A C-STORE-RQ command set, elements replaced or (None) dropped by tag name."""
    parts = {
        "sop_class": (0x00000002, uid(CT)),
        "field": (0x00000100, us(1)),
        "message_id": (0x00000110, us(7)),
        "priority": (0x00000700, us(0)),
        "data_set_type": (0x00000800, us(1)),
        "instance": (0x00001000, uid(INSTANCE)),
    }
    extra = {"move_ae": 0x00001030, "move_id": 0x00001031, "other": 0x00000900}
    for name, value in override.items():
        tag = parts[name][0] if name in parts else extra[name]
        if value is None:
            parts.pop(name)
        else:
            parts[name] = (tag, value)
    body = b"".join(element(tag, value) for tag, value in sorted(parts.values()))
    return element(0x00000000, struct.pack("<I", len(body))) + body


def pynetdicom_primitive(raw: bytes) -> C_STORE:
    msg = C_STORE_RQ()
    msg.command_set = decode(BytesIO(raw), True, True)
    msg.data_set = BytesIO()
    msg.context_id = 1
    return msg.message_to_primitive()


PLAIN = {
    "typical": command(),
    "low priority, last message ID": command(priority=us(2), message_id=us(65535)),
    "short UID, padded": command(instance=uid("1.2.3")),
    "64-character UID": command(instance=uid("2.25.1" + "0" * 58)),
    "C-MOVE sub-operation": command(move_ae=b"MOVER ", move_id=us(3)),
    "AE with a space": command(move_ae=b"A B     ", move_id=us(0)),
    "no instance UID": command(instance=None),
}


@pytest.mark.parametrize("raw", PLAIN.values(), ids=PLAIN.keys())
def test_plain_requests_give_pynetdicoms_primitive(raw: bytes) -> None:
    fields = dimse_decode.parse(raw)
    assert fields is not None
    ours = dimse_decode.store_request(fields)
    assert ours is not None
    theirs = pynetdicom_primitive(raw)
    for name in FIELDS:
        assert getattr(ours, name) == getattr(theirs, name), name
        assert type(getattr(ours, name)) is type(getattr(theirs, name)), name
    assert isinstance(ours.AffectedSOPClassUID, UID)


DECLINED = {
    "leading zero": command(instance=uid("1.2.03")),
    "letters": command(instance=uid("1.2.abc")),
    "65 characters": command(instance=uid("1." + "2" * 63)),
    "empty class": command(sop_class=b""),
    "no message id": command(message_id=None),
    "no priority": command(priority=None),
    "a C-FIND": command(field=us(0x0020)),
    "odd-sized number": command(message_id=b"\x07"),
    "unknown element": command(other=us(1)),
    "backslash in AE": command(move_ae=b"A\\B "),
    "blank AE": command(move_ae=b"    "),
    "non-ASCII UID": command(instance=b"1.2.\xc3\xa9"),
}


@pytest.mark.parametrize("raw", DECLINED.values(), ids=DECLINED.keys())
def test_anything_unusual_is_left_to_pynetdicom(raw: bytes) -> None:
    assert dimse_decode.store_request(dimse_decode.parse(raw) or {}) is None


@pytest.mark.parametrize(
    "raw",
    [
        command()[:-3],  # a value cut short
        command() + element(0x00000110, us(8)),  # an element twice
        command() + element(0x00080018, uid(INSTANCE)),  # not group 0000
        command() + b"\x00\x00",  # a header cut short
    ],
)
def test_command_sets_that_do_not_parse(raw: bytes) -> None:
    assert dimse_decode.parse(raw) is None


def test_a_spooled_store_decodes_its_command_set_only_when_asked(tmp_path: Path) -> None:
    """The spooling assembly builds a plain C-STORE-RQ's primitive from the raw bytes
    and leaves pydicom's decode to whoever reads ``command_set`` (observers)."""
    raw = command(data_set_type=us(1))
    msg = spool.new_message(tmp_path, "PEER")
    pdv = P_DATA()
    pdv.presentation_data_value_list = [[1, b"\x03" + raw]]  # last command fragment
    assoc = SimpleNamespace(_accepted_cx={1: SimpleNamespace(transfer_syntax=[CT])})
    assert msg.decode_msg(pdv, assoc) is False  # the dataset is still to come
    assert type(msg).__name__ == "C_STORE_RQ"
    assert "_pacsd_command_set" not in msg.__dict__  # nothing decoded yet
    expected = decode(BytesIO(raw), True, True)
    assert msg.command_set == expected
    assert msg.command_set.AffectedSOPInstanceUID == INSTANCE
    assert msg.command_set.MessageID == 7
    msg.command_set = Dataset()  # pynetdicom may replace it; the raw bytes are dropped
    assert msg.command_set == Dataset()
    spool.discard_unfinished(msg)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (command(field=us(0x1234)), "unknown Command Field"),
        (command(data_set_type=None), "Command Data Set Type"),
    ],
    ids=["unknown command field", "no data set type"],
)
def test_a_command_set_a_peer_got_wrong_is_refused_by_name(
    tmp_path: Path, raw: bytes, why: str
) -> None:
    msg = spool.new_message(tmp_path, "PEER")
    pdv = P_DATA()
    pdv.presentation_data_value_list = [[1, b"\x03" + raw]]
    with pytest.raises(ValueError, match=why):
        msg.decode_msg(pdv, SimpleNamespace(_accepted_cx={}))
