"""Protobuf messages as plain JSON-ready dicts, shaped for scripts rather than for proto3 JSON.

``google.protobuf.json_format.MessageToDict`` is close but wrong for our users: it
renders 64-bit integers as strings (so ``jq '.server.counters.associations_accepted > 0'``
compares a string), drops default values unless asked, and camelCases names that the
proto and the docs spell in snake_case. Walking the descriptors ourselves gives one
predictable shape: every field present, named as in the .proto, numbers as numbers.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["message_to_dict", "message_to_json"]

_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"


def message_to_dict(message: Message) -> dict[str, Any]:
    """Every field by its proto name, defaults included.

    Enums become their value names (an unknown number stays a number), all integers
    stay JSON numbers, Timestamps become RFC 3339 strings (UTC, "Z") and Durations
    proto3-JSON strings such as "1.5s". A field with presence (a message, or a proto3
    ``optional`` scalar) that is not set is ``None``, so "unset" stays distinguishable
    from "zero"; unset members of a oneof are left out, as at most one can exist.
    """
    out: dict[str, Any] = {}
    for field in _fields(message.DESCRIPTOR):
        if field.has_presence and not message.HasField(field.name):
            oneof = field.containing_oneof
            if oneof is None or _is_synthetic(oneof):
                out[field.name] = None
            continue
        out[field.name] = _field(field, getattr(message, field.name))
    return out


def message_to_json(message: Message, *, indent: int | None = 2) -> str:
    """``message_to_dict`` serialised; strict JSON (no NaN/Infinity literals)."""
    return json.dumps(message_to_dict(message), indent=indent, allow_nan=False)


def _fields(descriptor: Any) -> list[FieldDescriptor]:
    # The upb backend's descriptor classes are not the ones the type stubs name.
    return list(descriptor.fields)


def _is_synthetic(oneof: Any) -> bool:
    # proto3 ``optional`` fields live in a synthetic oneof of their own; they behave
    # like plain fields with presence, not like a real choice between fields. upb does
    # not expose the flag, but protoc always names that oneof "_" + the field name.
    synthetic = getattr(oneof, "is_synthetic", None)
    if synthetic is not None:
        return bool(synthetic)
    fields = list(oneof.fields)
    return len(fields) == 1 and oneof.name == f"_{fields[0].name}"


def _is_map(field: FieldDescriptor) -> bool:
    msg = field.message_type
    return (
        field.is_repeated
        and field.type == FieldDescriptor.TYPE_MESSAGE
        and msg is not None
        and msg.GetOptions().map_entry
    )


def _field(field: FieldDescriptor, value: Any) -> Any:
    if _is_map(field):
        entry = field.message_type
        assert entry is not None  # _is_map checked it
        value_field = entry.fields_by_name["value"]
        return {str(_key(k)): _single(value_field, v) for k, v in value.items()}
    if field.is_repeated:
        return [_single(field, item) for item in value]
    return _single(field, value)


def _key(key: Any) -> Any:
    # JSON object keys are strings; booleans would otherwise become "True"/"False".
    if isinstance(key, bool):
        return "true" if key else "false"
    return key


def _single(field: FieldDescriptor, value: Any) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None  # set for every message field
        if field.message_type.full_name in (_TIMESTAMP, _DURATION):
            return value.ToJsonString()
        return message_to_dict(value)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None  # set for every enum field
        enum_value = field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else int(value)
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return _float(value)
    if kind == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    if kind == FieldDescriptor.TYPE_BOOL:
        return bool(value)
    if kind == FieldDescriptor.TYPE_STRING:
        return str(value)
    return int(value)


def _float(value: float) -> float | str:
    # Strict JSON has no NaN/Infinity; proto3 JSON spells them as these strings.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float(value)
