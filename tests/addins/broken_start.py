"""Test add-in: fails in start()."""

from __future__ import annotations

from typing import Any

from pacsd.addin import Addin


class BrokenStart(Addin):
    name = "broken_start"

    def start(self, ctx: Any) -> None:
        raise OSError("cannot reach the thing it needs")
