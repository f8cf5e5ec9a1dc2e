"""Finding add-in classes: the ``pacsd.addins`` entry-point group.

Discovery only names what can be loaded; importing the code happens when the manager
loads an add-in, so one broken package cannot stop the others from being listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from pacsd.addin import Addin

ENTRY_POINT_GROUP = "pacsd.addins"


class AddinLoadError(Exception):
    """An add-in could not be imported, instantiated or started."""


@dataclass(frozen=True, slots=True)
class AddinSource:
    """Where an add-in comes from, before it is imported."""

    name: str
    #: Human-readable origin, e.g. ``entry-point:pacsd.builtin.verification:VerificationAddin``.
    origin: str
    entry_point: EntryPoint

    def load_class(self) -> type[Addin]:
        try:
            obj = self.entry_point.load()
        except Exception as exc:
            raise AddinLoadError(f"cannot import {self.origin}: {exc!r}") from exc
        if not (isinstance(obj, type) and issubclass(obj, Addin)):
            raise AddinLoadError(f"{self.origin} is not a pacsd.addin.Addin subclass")
        return obj


def discover() -> dict[str, AddinSource]:
    """Every add-in installed through the entry-point group, by entry-point name."""
    found: dict[str, AddinSource] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, AddinSource(ep.name, f"entry-point:{ep.value}", ep))
    return found
