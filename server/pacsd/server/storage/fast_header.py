"""The indexed attributes of a Part 10 file, read from its first bytes without pydicom.

``attributes.read_instance`` built the index record with ``dcmread(specific_tags=...)``
and pydicom's value conversion: ~0.7 ms per instance, a quarter of the C-STORE path's
Python time. Most instances are plain: little-endian, ASCII text, the indexed elements
near the start. For those this module scans the element headers up to the last indexed
tag and turns the few raw values into the same record; anything it is not sure to read
exactly as pydicom would (other character sets or byte orders, undefined lengths before
the last indexed tag, multi-valued or padded text in a column, numbers that are not
plain integers, ...) returns None and the caller uses pydicom. ``tests/unit/
test_fast_header.py`` checks both paths give the same record.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

#: How much of the file is read at once: the header of an instance, not its pixels.
HEAD_BYTES = 64 * 1024

_IMPLICIT_LE = "1.2.840.10008.1.2"
#: Big endian and deflated datasets go to pydicom.
_NOT_FAST = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})
#: Explicit VRs whose length field has 4 bytes (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
#: Text VRs whose values we turn into DICOM JSON by hand (split on backslash).
_SPLIT_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UI"})
_PLAIN_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"})
_INT = re.compile(r"[+-]?[0-9]+")
_CHARSET_TAG = 0x00080005

_unpack_tag = struct.Struct("<HH").unpack_from
_unpack_u16 = struct.Struct("<H").unpack_from
_unpack_u32 = struct.Struct("<I").unpack_from


class NotFast(Exception):
    """This file needs pydicom."""


def wanted(keywords: tuple[str, ...]) -> dict[int, tuple[str, str]]:
    """tag -> (keyword, dictionary VR) for the indexed keywords."""
    return {int(Tag(k)): (k, str(dictionary_VR(Tag(k)))) for k in keywords}


def read_head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(HEAD_BYTES)


def transfer_syntax(head: bytes) -> tuple[str, int]:
    """The file meta's Transfer Syntax UID and where the dataset starts."""
    if len(head) < 144 or head[128:132] != b"DICM":
        raise NotFast
    pos = 132
    group, elem = _unpack_tag(head, pos)
    if (group, elem) != (2, 0) or head[pos + 4 : pos + 6] != b"UL":
        raise NotFast
    end = pos + 12 + _unpack_u32(head, pos + 8)[0]
    pos += 12
    syntax = ""
    while pos < end:
        if pos + 8 > len(head):
            raise NotFast
        group, elem = _unpack_tag(head, pos)
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            length = _unpack_u32(head, pos + 8)[0]
            pos += 12
        else:
            length = _unpack_u16(head, pos + 6)[0]
            pos += 8
        if group != 2 or pos + length > len(head):
            raise NotFast
        if elem == 0x0010:
            syntax = head[pos : pos + length].rstrip(b"\x00 ").decode("ascii")
        pos += length
    if pos != end or not syntax:
        raise NotFast
    return syntax, pos


def scan(
    head: bytes, pos: int, implicit: bool, tags: dict[int, tuple[str, str]], complete: bool
) -> dict[int, tuple[str, bytes]]:
    """Raw (VR, value) of each wanted top-level element, scanning up to the last one.

    ``complete``: ``head`` is the whole file (ending before the last wanted tag is
    fine); otherwise running out of bytes is :class:`NotFast`.
    """
    last = max(tags)
    found: dict[int, tuple[str, bytes]] = {}
    size = len(head)
    while True:
        if pos + 8 > size:
            if complete and pos == size:
                return found
            raise NotFast
        group, elem = _unpack_tag(head, pos)
        tag = group << 16 | elem
        if tag > last:
            return found
        if implicit:
            length = _unpack_u32(head, pos + 4)[0]
            vr = ""
            pos += 8
        else:
            raw_vr = head[pos + 4 : pos + 6]
            if raw_vr in _LONG_VRS:
                if pos + 12 > size:
                    raise NotFast
                length = _unpack_u32(head, pos + 8)[0]
                pos += 12
            else:
                length = _unpack_u16(head, pos + 6)[0]
                pos += 8
            vr = raw_vr.decode("ascii", errors="replace")
        if length == 0xFFFFFFFF or pos + length > size:
            raise NotFast  # a sequence of undefined length, or a header past HEAD_BYTES
        if tag in tags:
            expected = tags[tag][1]
            if implicit:
                vr = expected
            elif vr != expected:
                raise NotFast  # let pydicom judge an unusual VR
            found[tag] = (vr, head[pos : pos + length])
        pos += length


def text(vr: str, value: bytes) -> str:
    """A column's value as ``attributes._text`` gets it from pydicom (single values)."""
    if b"\\" in value or (b"\x00" in value and vr != "UI") or not value.isascii():
        raise NotFast
    result = value.decode("ascii")
    if vr == "UI":
        result = result.rstrip("\x00")
    result = result.strip()
    if vr == "IS" and result and not _INT.fullmatch(result):
        raise NotFast
    if vr == "PN" and "=" in result:
        raise NotFast
    return result


def json_value(tag: int, vr: str, value: bytes) -> dict[str, Any]:
    """DICOM JSON of one element, as pydicom's ``to_json_dict`` writes it."""
    if vr in _SPLIT_TEXT_VRS and value.isascii() and value.strip(b" \x00"):
        raw = value.decode("ascii")
        raw = raw.rstrip("\x00 ") if vr == "UI" else raw.rstrip(" ")
        parts = raw.split("\\")
        if all(p and p == p.strip() for p in parts):
            return {"vr": vr, "Value": parts}
    if vr == "US" and value and len(value) % 2 == 0:
        return {"vr": vr, "Value": list(struct.unpack(f"<{len(value) // 2}H", value))}
    ds = Dataset()
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    result: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=1 << 20, bulk_data_element_handler=None
    )[f"{tag:08X}"]
    return result


def read(
    path: Path, tags: dict[int, tuple[str, str]], head: bytes | None = None
) -> tuple[str, dict[str, tuple[str, bytes]]]:
    """(transfer syntax, keyword -> (VR, raw value)); :class:`NotFast` for pydicom's cases.

    ``head``: the file's first bytes when the caller still holds them (at least
    ``HEAD_BYTES`` of them, or the whole file).
    """
    head = read_head(path) if head is None else head[:HEAD_BYTES]
    syntax, pos = transfer_syntax(head)
    if syntax in _NOT_FAST:
        raise NotFast
    found = scan(head, pos, syntax == _IMPLICIT_LE, tags, len(head) < HEAD_BYTES)
    for vr, value in found.values():
        if vr != "US" and not value.isascii():
            raise NotFast  # text that needs the character set: pydicom decodes it
    charset = found.get(_CHARSET_TAG)
    if charset is not None:
        name = charset[1].decode("ascii", errors="replace").strip(" \x00")
        if name not in _PLAIN_CHARSETS:
            raise NotFast
    return syntax, {tags[tag][0]: raw for tag, raw in found.items()}
