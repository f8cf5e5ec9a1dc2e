"""Test add-in: replaces the ``aetitles`` base service with a fixed, in-memory book."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pacsd.addin import Addin, AddinSettings


@dataclass(frozen=True)
class Entry:
    ae_title: str
    host: str
    port: int
    description: str = ""


class BookSettings(AddinSettings):
    port: int = 0


class Book:
    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries

    def get(self, ae_title: str) -> Entry:
        return self.entries[ae_title]

    def list(self) -> list[Entry]:
        return list(self.entries.values())


class AEBook(Addin):
    name = "ae_book"
    settings_model = BookSettings
    provides = ("aetitles",)

    def provide(self, service: str) -> Any:
        port = self.ctx.settings.port
        return Book({"MOVEDEST": Entry("MOVEDEST", "127.0.0.1", port)})
