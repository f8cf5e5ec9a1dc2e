"""Encodes outgoing DIMSE responses without pydicom for the common cases.

pynetdicom builds every response's command set as a pydicom ``Dataset`` (one
``DataElement`` per field, validated, then written twice: once to learn the group
length) and writes each C-FIND identifier with ``write_dataset``: ~0.5 ms of Python per
response, which was most of a C-FIND's time on a large index. The encoders here write
the same bytes directly:

* ``encode_command_set``: the command set of C-ECHO/C-STORE/C-FIND/C-GET/C-MOVE
  responses (Implicit VR Little Endian, group 0000 with its group length);
* ``encode_identifier``: a flat dataset (text, dates, UIDs, person names, numbers, tags)
  in Implicit or Explicit VR Little Endian, deflated or not; raw (still encoded) little
  endian elements of those VRs are written as they are, as pydicom writes them;
* ``pdv_values`` / ``pdata_pdus``: a message fragmented as pynetdicom does, as
  presentation data values or as the P-DATA-TF PDUs that carry them.

Each returns None for anything it does not handle (sequences, binary or ambiguous VRs,
big endian, values of unexpected types, text pydicom would have to replace
characters in), and the caller then uses pynetdicom and pydicom as before: the
bytes are always the ones pydicom would write. ``tests/unit/test_dimse_encode.py``
compares them over a corpus. ``install`` makes pynetdicom's service classes use
``encode_dataset`` for the identifiers they encode.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Callable, Sequence
from io import BufferedIOBase
from typing import Any, NamedTuple

from pydicom.charset import convert_encodings, default_encoding, encode_string
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName
from pynetdicom import dimse_primitives as prim
from pynetdicom import dsutils

#: The response primitives whose command sets ``encode_command_set`` writes, with
#: their Command Field and the fields each may carry (PS3.7 9.3), in tag order.
_RESPONSES: dict[type, tuple[str, int, tuple[str, ...]]] = {
    prim.C_ECHO: (
        "C_ECHO_RSP",
        0x8030,
        ("AffectedSOPClassUID", "MessageIDBeingRespondedTo", "Status", "ErrorComment"),
    ),
    prim.C_STORE: (
        "C_STORE_RSP",
        0x8001,
        (
            "AffectedSOPClassUID",
            "MessageIDBeingRespondedTo",
            "Status",
            "OffendingElement",
            "ErrorComment",
            "AffectedSOPInstanceUID",
        ),
    ),
    prim.C_FIND: (
        "C_FIND_RSP",
        0x8020,
        (
            "AffectedSOPClassUID",
            "MessageIDBeingRespondedTo",
            "Status",
            "OffendingElement",
            "ErrorComment",
        ),
    ),
    prim.C_GET: (
        "C_GET_RSP",
        0x8010,
        (
            "AffectedSOPClassUID",
            "MessageIDBeingRespondedTo",
            "Status",
            "OffendingElement",
            "ErrorComment",
            "NumberOfRemainingSuboperations",
            "NumberOfCompletedSuboperations",
            "NumberOfFailedSuboperations",
            "NumberOfWarningSuboperations",
        ),
    ),
    prim.C_MOVE: (
        "C_MOVE_RSP",
        0x8021,
        (
            "AffectedSOPClassUID",
            "MessageIDBeingRespondedTo",
            "Status",
            "OffendingElement",
            "ErrorComment",
            "NumberOfRemainingSuboperations",
            "NumberOfCompletedSuboperations",
            "NumberOfFailedSuboperations",
            "NumberOfWarningSuboperations",
        ),
    ),
}

_DATA_SET_ABSENT = 0x0101
_DATA_SET_PRESENT = 0x0001

_ELEMENT = struct.Struct("<HHL")  # Implicit VR: tag, 32-bit length
_EXPLICIT_16 = struct.Struct("<HH2sH")  # Explicit VR: tag, VR, 16-bit length
_EXPLICIT_32 = struct.Struct("<HH2sHL")  # Explicit VR: tag, VR, reserved, 32-bit length
_US = struct.Struct("<H")
_PDU_HEAD = struct.Struct(">BBLLB")  # PDU type, reserved, length; PDV length, context ID

#: VRs whose Explicit VR length field is 32 bits (PS3.5 7.1.2); the ones the encoder
#: writes at all are the text VRs UC, UR, UT and the 64-bit integers.
_LENGTH_32 = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)

_MISSING = object()


class EncodedCommand(NamedTuple):
    """A response's command set as written, with the values it carries (for hooks)."""

    message_type: str  # pynetdicom's message class name, e.g. "C_FIND_RSP"
    data: bytes
    fields: dict[str, Any]


# -- command sets -----------------------------------------------------------------------


def _field_encoder(keyword: str) -> tuple[int, int, Callable[[Any], bytes | None]]:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    vr = dictionary_VR(tag)
    encoders: dict[str, Callable[[Any], bytes | None]] = {
        "UI": _uid_value,
        "US": _us_value,
        "LO": _ascii_text_value,
        "AT": _tag_value,
    }
    return tag >> 16, tag & 0xFFFF, encoders[vr]


def _uid_value(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value.isascii():
        return None
    data = value.strip().encode("ascii")  # pydicom's UID() strips; pynetdicom validated it
    return data + b"\0" if len(data) % 2 else data


def _us_value(value: Any) -> bytes | None:
    if type(value) is not int or not 0 <= value <= 0xFFFF:
        return None
    return _US.pack(value)


def _ascii_text_value(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value.isascii():
        return None  # pydicom's charset handling (with its warnings) decides the rest
    data = value.encode("ascii")
    return data + b" " if len(data) % 2 else data


def _tag_value(value: Any) -> bytes | None:
    values = value if isinstance(value, list | MultiValue) else [value]
    out = bytearray()
    for tag in values:
        if not isinstance(tag, int) or isinstance(tag, bool) or not 0 <= tag <= 0xFFFFFFFF:
            return None
        out += struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    return bytes(out)


_COMMAND_FIELDS: dict[type, tuple[str, int, tuple[tuple[str, int, int, Any], ...]]] = {
    cls: (name, field, tuple((kw, *_field_encoder(kw)) for kw in keywords))
    for cls, (name, field, keywords) in _RESPONSES.items()
}
_COMMAND_FIELD_TAG = (0x0000, 0x0100)
_DATA_SET_TYPE_TAG = (0x0000, 0x0800)


def encode_command_set(primitive: Any) -> EncodedCommand | None:
    """The command set pynetdicom would send for a response ``primitive``, or None.

    Fields whose value is None are left out, as pynetdicom does; an empty string or
    list is written as an empty element. Only exact types are taken (the primitive's
    setters already checked most of them); anything else is left to pynetdicom.
    """
    if getattr(primitive, "MessageIDBeingRespondedTo", None) is None:
        return None  # a request
    spec = _COMMAND_FIELDS.get(type(primitive))
    if spec is None or getattr(primitive, "_dataset_path", None) is not None:
        return None
    name, command_field, layout = spec
    # Present whenever the primitive holds a BytesIO, even an empty one (pynetdicom).
    identifier = getattr(primitive, "Identifier", None) if name != "C_STORE_RSP" else None
    data_set_type = _DATA_SET_PRESENT if identifier is not None else _DATA_SET_ABSENT
    values = tuple(getattr(primitive, keyword, _MISSING) for keyword, *_ in layout)
    if _MISSING in values:
        return None
    # The pending responses of one C-FIND share one command set: encode it once. The
    # types are part of the key (True == 1, but only an int is a Status).
    key = (type(primitive), data_set_type, values, tuple(map(type, values)))
    try:
        found = _command_cache.get(key)
    except TypeError:  # an unhashable value (a list of tags): encode it every time
        return _encode_command(name, command_field, layout, data_set_type, values)
    if found is None:
        found = _encode_command(name, command_field, layout, data_set_type, values)
        if found is not None:
            if len(_command_cache) >= 256:
                _command_cache.clear()
            _command_cache[key] = found
    return found


#: Encoded command sets by primitive type, data set type and field values. The
#: ``fields`` of a cached ``EncodedCommand`` are shared: read them, never change them.
_command_cache: dict[Any, EncodedCommand] = {}


def _encode_command(
    name: str,
    command_field: int,
    layout: tuple[tuple[str, int, int, Any], ...],
    data_set_type: int,
    values: tuple[Any, ...],
) -> EncodedCommand | None:
    fields: dict[str, Any] = {
        "CommandField": command_field,
        "CommandDataSetType": data_set_type,
    }
    elements: list[tuple[int, int, bytes]] = [
        (*_COMMAND_FIELD_TAG, _US.pack(command_field)),
        (*_DATA_SET_TYPE_TAG, _US.pack(data_set_type)),
    ]
    for (keyword, group, element, encode), value in zip(layout, values, strict=True):
        if value is None:
            continue
        data = encode(value)
        if data is None:
            return None
        elements.append((group, element, data))
        fields[keyword] = value
    elements.sort()
    body = b"".join(_ELEMENT.pack(g, e, len(d)) + d for g, e, d in elements)
    fields["CommandGroupLength"] = len(body)
    return EncodedCommand(
        name, _ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + body, fields
    )


# -- identifiers --------------------------------------------------------------------------


def _ascii_value(value: Any, pad: bytes) -> bytes | None:
    """A string or strings in the default character set, padded to even length."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, MultiValue | list | tuple):
        if not all(isinstance(v, str) for v in value):
            return None
        text = "\\".join(value)
    else:
        return None
    data = text.encode(default_encoding)
    return data + pad if len(data) % 2 else data


def _string_value(value: Any, encodings: Sequence[str]) -> bytes | None:
    """AE AS CS DA DT TM UR: pydicom's ``write_string`` (default character set)."""
    return _ascii_value(value, b" ")


def _ui_value(value: Any, encodings: Sequence[str]) -> bytes | None:
    return _ascii_value(value, b"\0")


def _text_value(value: Any, encodings: Sequence[str]) -> bytes | None:
    """LO LT SH ST UC UT: pydicom's ``write_text`` (Specific Character Set)."""
    if isinstance(value, str):
        data = _encode_text(value, encodings)
    elif isinstance(value, MultiValue | list | tuple):
        if not value or not isinstance(value[0], str):
            return None
        if not all(isinstance(v, str) for v in value):
            return None
        data = b"\\".join(_encode_text(v, encodings) for v in value)
    else:
        return None
    return data + b" " if len(data) % 2 else data


def _encode_text(value: Any, encodings: Sequence[str]) -> bytes:
    if value.isascii() and _ascii_safe(encodings[0]):
        return value.encode("ascii")
    # pydicom's own function: code extensions, escapes and, for text no encoding
    # takes, its warning and replacement characters (or its error) are the same.
    return encode_string(value, encodings)


_ASCII = "".join(chr(i) for i in range(128))
_ascii_safe_cache: dict[str, bool] = {}


def _ascii_safe(encoding: str) -> bool:
    """True when ``encoding`` writes every ASCII character as itself, with no escapes
    (pydicom adds an escape sequence after text in ISO 2022 JIS encodings)."""
    known = _ascii_safe_cache.get(encoding)
    if known is None:
        try:
            known = encoding not in {"iso2022_jp", "iso2022_jp_2", "iso-2022-jp"} and (
                _ASCII.encode(encoding) == _ASCII.encode("ascii")
            )
        except (LookupError, UnicodeError):
            known = False
        _ascii_safe_cache[encoding] = known
    return known


def _pn_value(value: Any, encodings: Sequence[str]) -> bytes | None:
    values = value if isinstance(value, MultiValue | list) else [value]
    if not all(isinstance(v, PersonName) for v in values):
        return None
    try:
        data = b"\\".join(_encode_name(v, encodings) for v in values)
    except (UnicodeError, LookupError):
        return None
    return data + b" " if len(data) % 2 else data


def _encode_name(name: PersonName, encodings: Sequence[str]) -> bytes:
    """``PersonName.encode``; for a name made from ASCII text (not read from bytes) in an
    ASCII-compatible character set, its result directly: the components joined with
    "=", empty trailing components dropped."""
    if name.original_string is None and name.encodings is None and _ascii_safe(encodings[0]):
        text = "=".join(name.components).rstrip("=")
        if text.isascii():
            return text.encode("ascii")
    return name.encode(encodings)


def _number_string_value(value: Any, encodings: Sequence[str]) -> bytes | None:
    """IS DS: pydicom's ``write_number_string``."""
    if isinstance(value, MultiValue | list | tuple):
        text = "\\".join(
            x.original_string if hasattr(x, "original_string") else str(x) for x in value
        )
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = value.original_string if hasattr(value, "original_string") else str(value)
    else:
        return None
    if not isinstance(text, str):
        return None
    data = text.encode(default_encoding)
    return data + b" " if len(data) % 2 else data


def _numbers(fmt: str, kinds: tuple[type, ...]) -> Callable[[Any, Sequence[str]], bytes | None]:
    one = struct.Struct("<" + fmt)

    def encode(value: Any, encodings: Sequence[str]) -> bytes | None:
        if hasattr(value, "append"):
            if not all(isinstance(v, kinds) and not isinstance(v, bool) for v in value):
                return None
            return struct.pack(f"<{len(value)}{fmt}", *value)
        if not isinstance(value, kinds) or isinstance(value, bool):
            return None
        return one.pack(value)

    return encode


def _at_value(value: Any, encodings: Sequence[str]) -> bytes | None:
    return _tag_value(value)


_INTS = (int,)
_REALS = (int, float)
_VALUE_ENCODERS: dict[str, Callable[[Any, Sequence[str]], bytes | None]] = {
    "AE": _string_value,
    "AS": _string_value,
    "CS": _string_value,
    "DA": _string_value,
    "DT": _string_value,
    "TM": _string_value,
    "UR": _string_value,
    "UI": _ui_value,
    "LO": _text_value,
    "LT": _text_value,
    "SH": _text_value,
    "ST": _text_value,
    "UC": _text_value,
    "UT": _text_value,
    "PN": _pn_value,
    "IS": _number_string_value,
    "DS": _number_string_value,
    "US": _numbers("H", _INTS),
    "SS": _numbers("h", _INTS),
    "UL": _numbers("L", _INTS),
    "SL": _numbers("l", _INTS),
    "UV": _numbers("Q", _INTS),
    "SV": _numbers("q", _INTS),
    "FL": _numbers("f", _REALS),
    "FD": _numbers("d", _REALS),
    "AT": _at_value,
}
_SPECIFIC_CHARACTER_SET = 0x00080005


def _is_empty(value: Any) -> bool | None:
    """pydicom's ``DataElement.is_empty`` for non-sequence values (None: buffered)."""
    if value is None:
        return True
    if isinstance(value, str | bytes | PersonName):
        return not value
    if isinstance(value, BufferedIOBase):
        return None
    try:
        iter(value)
    except TypeError:
        return False
    return len(value) == 0


_encodings_cache: dict[Any, list[str]] = {}


def _encodings(charset: Any) -> list[str]:
    """pydicom's ``convert_encodings`` for a Specific Character Set value, remembered
    (a handful of values ever occur; pydicom warns about a bad one the first time)."""
    key = tuple(charset) if isinstance(charset, MultiValue | list | tuple) else charset
    try:
        found = _encodings_cache.get(key)
    except TypeError:  # not hashable: ask pydicom every time
        return convert_encodings(charset or [default_encoding])
    if found is None:
        found = convert_encodings(charset or [default_encoding])
        if len(_encodings_cache) < 64:
            _encodings_cache[key] = found
    return found


def encode_identifier(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """``ds`` encoded as ``pynetdicom.dsutils.encode`` would, or None if not flat."""
    elements = getattr(ds, "_dict", None)
    if not is_little_endian or type(elements) is not dict:
        return None
    try:
        return _encode_elements(elements, is_implicit_vr, deflated)
    except (TypeError, ValueError, OverflowError, UnicodeError, LookupError, struct.error):
        return None  # pydicom decides (it may warn, replace or fail)


def _encode_elements(elements: dict[Any, Any], implicit: bool, deflated: bool) -> bytes | None:
    charset = elements.get(_SPECIFIC_CHARACTER_SET)
    if charset is not None and type(charset) is not DataElement:
        return None
    encodings = _encodings(charset.value if charset is not None else None)
    out: list[bytes] = []
    for tag in sorted(elements, key=int):  # BaseTag compares in Python; int in C
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # retired group lengths are not written (pydicom)
        elem = elements[tag]
        vr = elem.VR
        if type(elem) is RawDataElement:
            # Already encoded (pacsd's C-FIND matches, see storage/query.py): pydicom
            # writes the value of a raw element as it is, and so does this.
            data = elem.value
            if (
                vr not in _VALUE_ENCODERS
                or type(data) is not bytes
                or len(data) % 2
                or not elem.is_little_endian
            ):
                return None
        elif type(elem) is DataElement:
            encoder = _VALUE_ENCODERS.get(vr)
            if encoder is None:
                return None
            value = elem.value
            empty = _is_empty(value)
            if empty is None:
                return None
            data = b"" if empty else encoder(value, encodings)
            if data is None:
                return None
        else:
            return None
        group, element = tag >> 16, tag & 0xFFFF
        if implicit:
            out.append(_ELEMENT.pack(group, element, len(data)))
        elif vr in _LENGTH_32:
            out.append(_EXPLICIT_32.pack(group, element, vr.encode(), 0, len(data)))
        elif len(data) > 0xFFFF:
            return None  # pydicom rewrites the VR as UN, with a warning
        else:
            out.append(_EXPLICIT_16.pack(group, element, vr.encode(), len(data)))
        out.append(data)
    encoded = b"".join(out)
    if deflated:  # as pynetdicom.dsutils.encode does it
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        encoded = compressor.compress(encoded) + compressor.flush()
        encoded += b"\x00" if len(encoded) % 2 else b""
    return encoded


_pydicom_encode = dsutils.encode


def encode_dataset(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """Drop-in for ``pynetdicom.dsutils.encode``: the fast path, else pydicom's."""
    fast = encode_identifier(ds, is_implicit_vr, is_little_endian, deflated)
    if fast is not None:
        return fast
    return _pydicom_encode(ds, is_implicit_vr, is_little_endian, deflated)


def install() -> None:
    """Have pynetdicom's service classes encode response identifiers with
    ``encode_dataset`` (C-FIND matches, C-GET/C-MOVE failed-instance lists, N-*
    attribute lists). They call the module-level ``encode`` they imported, and pacsd's
    handlers yield their datasets to them, so this is the one place to change it;
    the bytes are the same, only the time differs.

    Also: pynetdicom pretty-prints every C-FIND/C-GET/C-MOVE response identifier for a
    debug log line whether or not anyone logs at debug level (``pretty_dataset``, ~10 %
    of a C-FIND's time); that is now done only while its logger is enabled for debug.
    Likewise it decodes and pretty-prints each C-FIND/C-GET/C-MOVE *request* identifier
    for info log lines (~0.5 ms a request, half of a one-match C-FIND): only while its
    logger is enabled for info. Called for each new association, so a level changed at
    runtime applies to the next.
    """
    from pynetdicom import _config, service_class

    if service_class.encode is not encode_dataset:
        service_class.encode = encode_dataset
    _config.LOG_RESPONSE_IDENTIFIERS = service_class.LOGGER.isEnabledFor(logging.DEBUG)
    _config.LOG_REQUEST_IDENTIFIERS = service_class.LOGGER.isEnabledFor(logging.INFO)


# -- P-DATA-TF ----------------------------------------------------------------------------


def pdv_values(command: bytes, dataset: bytes | None, max_pdu: int) -> list[bytes]:
    """The presentation data values pynetdicom makes of a message, one per P-DATA.

    Each is a message control header (command 0x01, last command fragment 0x03, dataset
    0x00, last dataset fragment 0x02) and a fragment, at most ``max_pdu`` (the peer's
    Maximum Length; 0 is unlimited) minus the 6 bytes of PDV length, context ID and
    header. An empty dataset sends nothing.
    """
    values: list[bytes] = []
    _fragments(values, command, 0x01, max_pdu)
    if dataset:
        _fragments(values, dataset, 0x00, max_pdu)
    return values


def pdata_pdus(context_id: int, command: bytes, dataset: bytes | None, max_pdu: int) -> bytes:
    """The P-DATA-TF PDUs pynetdicom sends for a message (one PDV each), concatenated."""
    out = bytearray()
    for value in pdv_values(command, dataset, max_pdu):
        out += _PDU_HEAD.pack(0x04, 0x00, len(value) + 5, len(value) + 1, context_id)
        out += value
    return bytes(out)


def _fragments(out: list[bytes], data: bytes, header: int, max_pdu: int) -> None:
    size = len(data) if max_pdu == 0 else max_pdu - 6
    if size <= 0 and data:
        raise ValueError(f"maximum PDU length {max_pdu} leaves no room for data")
    offset = 0
    while True:
        chunk = data[offset : offset + size] if size else b""
        offset += len(chunk)
        last = offset >= len(data)
        out.append(bytes((header | (0x02 if last else 0x00),)) + chunk)
        if last:
            return
