"""C-STORE-RQ command sets turned into pynetdicom's primitive without pydicom's value
conversion.

pynetdicom's ``message_to_primitive`` converts every element of a received command set
through pydicom (value conversion, the reading validation regexes) and then sets it on
the primitive through setters that validate each UID twice more: ~125 µs of the
~1 ms of Python a small C-STORE costs. Every instance takes this path, so the common
case is done here, from the raw bytes:

* the command set is Implicit VR Little Endian (PS3.7 6.3.1), so each element is a tag,
  a 4-byte length and the value;
* a C-STORE-RQ whose elements are the ones PS3.7 9.3.1.1 lists, once each, with UIDs
  that are valid (PS3.5 9.1: digits and dots, no leading zeros, at most 64 characters)
  gets exactly the primitive pynetdicom would build, without a warning on either path.

Anything else (another message, an unknown or repeated element, a UID pynetdicom would
warn about or refuse, a value of the wrong size) returns None and pynetdicom decodes the
message as before, with its errors and warnings. ``tests/unit/test_dimse_decode.py``
compares both paths.
"""

from __future__ import annotations

import re
import struct
from typing import cast

from pydicom import config as pydicom_config
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE

#: Tags of a C-STORE-RQ command set (PS3.7 Table 9.3-1).
_GROUP_LENGTH = 0x00000000
_AFFECTED_SOP_CLASS = 0x00000002
_COMMAND_FIELD = 0x00000100
_MESSAGE_ID = 0x00000110
_PRIORITY = 0x00000700
DATA_SET_TYPE = 0x00000800
_AFFECTED_SOP_INSTANCE = 0x00001000
_MOVE_ORIGINATOR_AE = 0x00001030
_MOVE_ORIGINATOR_ID = 0x00001031

_STORE_RQ_TAGS = frozenset(
    {
        _GROUP_LENGTH,
        _AFFECTED_SOP_CLASS,
        _COMMAND_FIELD,
        _MESSAGE_ID,
        _PRIORITY,
        DATA_SET_TYPE,
        _AFFECTED_SOP_INSTANCE,
        _MOVE_ORIGINATOR_AE,
        _MOVE_ORIGINATOR_ID,
    }
)
_REQUIRED = (_AFFECTED_SOP_CLASS, _COMMAND_FIELD, _MESSAGE_ID, _PRIORITY, DATA_SET_TYPE)
_US_TAGS = (_COMMAND_FIELD, _MESSAGE_ID, _PRIORITY, DATA_SET_TYPE, _MOVE_ORIGINATOR_ID)
C_STORE_RQ_FIELD = 0x0001

#: A UID both pynetdicom checks accept without a word (PS3.5 9.1).
_VALID_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
#: AE title characters pynetdicom keeps as they are (printable ASCII but backslash).
_PLAIN_AE = re.compile(rb"[\x20-\x5b\x5d-\x7e]{0,16}")

_unpack_head = struct.Struct("<HHI").unpack_from
_unpack_us = struct.Struct("<H").unpack


def parse(raw: bytes | bytearray | memoryview) -> dict[int, bytes] | None:
    """tag -> raw value of an Implicit VR LE command set; None if it does not parse
    cleanly (an element twice, a length past the end, a tag outside group 0000)."""
    data = bytes(raw)
    fields: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            return None
        group, elem, length = _unpack_head(data, pos)
        pos += 8
        tag = (group << 16) | elem
        if group != 0 or tag in fields or pos + length > end:
            return None
        fields[tag] = data[pos : pos + length]
        pos += length
    return fields


def _us(value: bytes) -> int | None:
    return _unpack_us(value)[0] if len(value) == 2 else None


def _uid(value: bytes) -> UID | None:
    """The UID pynetdicom would make of the raw value, or None if either of its checks
    would object (or the value needs decoding rules beyond plain ASCII)."""
    if not value.isascii():
        return None
    text = value.decode("ascii").rstrip("\x00 ")
    if len(text) > 64 or not _VALID_UID.fullmatch(text):
        return None
    return UID(text, validation_mode=pydicom_config.IGNORE)


#: SOP Class UIDs already checked: an association sends few, once per instance.
_CLASS_UIDS: dict[bytes, UID | None] = {}


def _class_uid(value: bytes) -> UID | None:
    found = _CLASS_UIDS.get(value, _CLASS_UIDS)
    if found is _CLASS_UIDS:
        found = _uid(value)
        if len(_CLASS_UIDS) >= 1024:  # private classes by the thousand: start again
            _CLASS_UIDS.clear()
        _CLASS_UIDS[value] = found
    return found  # type: ignore[return-value]


def store_request(fields: dict[int, bytes]) -> C_STORE | None:
    """The C-STORE primitive for a plain C-STORE-RQ command set, else None.

    ``DataSet`` and the context ID are left for the caller, as pynetdicom leaves them
    to ``message_to_primitive``'s second half.
    """
    if not fields.keys() <= _STORE_RQ_TAGS or any(t not in fields for t in _REQUIRED):
        return None
    numbers = {t: _us(fields[t]) for t in _US_TAGS if t in fields}
    if any(v is None for v in numbers.values()) or numbers[_COMMAND_FIELD] != C_STORE_RQ_FIELD:
        return None
    sop_class = _class_uid(fields[_AFFECTED_SOP_CLASS])
    instance_raw = fields.get(_AFFECTED_SOP_INSTANCE)
    sop_instance = _uid(instance_raw) if instance_raw is not None else None
    if sop_class is None or (instance_raw is not None and sop_instance is None):
        return None
    move_ae: str | None = None
    if _MOVE_ORIGINATOR_AE in fields:
        raw_ae = fields[_MOVE_ORIGINATOR_AE]
        if not _PLAIN_AE.fullmatch(raw_ae):
            return None  # pynetdicom's AE checks and their warnings
        move_ae = raw_ae.decode("ascii").strip()
        if not move_ae:
            return None
    primitive = C_STORE()
    primitive.MessageID = numbers[_MESSAGE_ID]
    primitive.Priority = cast(int, numbers[_PRIORITY])
    # The UIDs go straight to the attributes their setters fill (pynetdicom 3.0's
    # names): the setters would run both validations again. tests/unit/
    # test_dimse_decode.py compares the result with pynetdicom's own.
    primitive._affected_sop_class_uid = sop_class
    primitive._affected_sop_instance_uid = sop_instance
    if move_ae is not None:
        primitive.MoveOriginatorApplicationEntityTitle = move_ae
    if _MOVE_ORIGINATOR_ID in fields:
        primitive.MoveOriginatorMessageID = numbers[_MOVE_ORIGINATOR_ID]
    return primitive
