"""The ``Addin`` base class every pacsd add-in derives from."""

from __future__ import annotations

from typing import ClassVar

from pacsd.addin.context import AddinContext
from pacsd.addin.dimse import HANDLER_ATTR, HandlerSpec


class Addin:
    """A unit of DICOM behaviour the server loads by name.

    Subclasses set ``name``, ``version`` and ``description`` and decorate methods with
    ``pacsd.addin.dimse`` decorators. The server builds one instance per load, calls
    ``start`` before routing any message to it and ``stop`` after the last one.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""

    def start(self, ctx: AddinContext) -> None:
        """Acquire resources. Raising here leaves the add-in listed as failed, not loaded."""
        self.ctx = ctx

    def stop(self) -> None:
        """Release resources. Called once, after in-flight calls have finished."""

    @classmethod
    def handler_specs(cls) -> list[tuple[str, HandlerSpec]]:
        """The (method name, spec) pairs this class declares, in definition order."""
        found: list[tuple[str, HandlerSpec]] = []
        seen: set[str] = set()
        for klass in cls.__mro__:
            for attr, value in vars(klass).items():
                spec = getattr(value, HANDLER_ATTR, None)
                if isinstance(spec, HandlerSpec) and attr not in seen:
                    seen.add(attr)
                    found.append((attr, spec))
        return found
