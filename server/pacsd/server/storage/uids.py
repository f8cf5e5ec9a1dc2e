"""UID validation (PS3.5 9.1): every UID is checked before a path or a query uses it.

A UID is digits and dots, at most 64 characters, with no empty component. This is what
keeps ``1.2.3/../../x`` from ever naming a file: nothing that fails here reaches the
blob store or the index.
"""

from __future__ import annotations

import re

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class InvalidUID(ValueError):
    def __init__(self, what: str, value: object) -> None:
        self.what, self.value = what, value
        super().__init__(f"invalid {what}: {value!r} (PS3.5 9.1: digits and dots, max 64)")


def is_valid_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.match(value) is not None


def require_uid(value: object, what: str = "UID") -> str:
    if not is_valid_uid(value):
        raise InvalidUID(what, value)
    return value  # type: ignore[return-value]
