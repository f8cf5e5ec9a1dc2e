"""Reading a P-DATA-TF's PDV items in place (dicom/pdata.py)."""

from __future__ import annotations

import struct

from pacsd.server.dicom import pdata


def _pdu(*items: tuple[int, int, bytes]) -> bytearray:
    """A P-DATA-TF of (context ID, message control header, fragment) items."""
    body = b"".join(
        struct.pack(">IBB", 2 + len(fragment), context, header) + fragment
        for context, header, fragment in items
    )
    return bytearray(struct.pack(">BBI", 0x04, 0, len(body)) + body)


def test_the_last_fragment_of_a_data_set_ends_its_message() -> None:
    assert pdata.ends_data_set(_pdu((1, 0x02, b"data")))
    assert pdata.ends_data_set(_pdu((1, 0x00, b"more"), (1, 0x02, b"last")))


def test_anything_else_may_be_followed_by_more_of_its_message() -> None:
    assert not pdata.ends_data_set(_pdu((1, 0x00, b"more data")))
    assert not pdata.ends_data_set(_pdu((1, 0x03, b"command")))  # its data set may follow
    assert not pdata.ends_data_set(_pdu((1, 0x01, b"command, more")))
    assert not pdata.ends_data_set(_pdu((1, 0x02, b"last"), (1, 0x03, b"next command")))


def test_malformed_items_are_not_taken_for_an_ending() -> None:
    good = _pdu((1, 0x02, b"data"))
    assert not pdata.ends_data_set(good[:-1])  # an item longer than the PDU
    assert not pdata.ends_data_set(good + b"\x00\x00")  # trailing bytes, not an item
    assert not pdata.ends_data_set(bytearray(good[:6]))  # no item at all
    short = bytearray(good)
    struct.pack_into(">I", short, 6, 1)  # shorter than its own header
    assert not pdata.ends_data_set(short)
