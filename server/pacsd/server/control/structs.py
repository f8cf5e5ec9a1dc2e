"""``google.protobuf.Struct`` from plain values: settings and command results on the wire."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2


def to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message
