"""Custom commands: named operations the control plane can invoke on an add-in.

``pacsctl addin invoke NAME COMMAND --arg key=value`` calls the method with a dict of
JSON-like arguments and returns the dict it gives back, e.g. a ``forward-now`` or a
``stats`` command.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

COMMAND_ATTR = "__pacsd_command__"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def command(name: str) -> Callable[[F], F]:
    """Expose the method as command ``name``: ``(self, args: dict) -> dict``."""
    if not _NAME.match(name):
        raise ValueError(f"command name {name!r}: use lower-case letters, digits, '-' and '_'")

    def mark(fn: F) -> F:
        setattr(fn, COMMAND_ATTR, name)
        return fn

    return mark
