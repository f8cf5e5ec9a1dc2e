"""The ``Addin`` base class every pacsd add-in derives from."""

from __future__ import annotations

from typing import Any, ClassVar

from pacsd.addin.commands import COMMAND_ATTR
from pacsd.addin.context import AddinContext
from pacsd.addin.dimse import HANDLER_ATTR, HandlerSpec
from pacsd.addin.hooks import HOOK_ATTR, Hook
from pacsd.addin.requests import AssociationInfo
from pacsd.addin.settings import AddinSettings


class Addin:
    """A unit of DICOM behaviour the server loads by name.

    Subclasses set ``name``, ``version`` and ``description``, optionally a
    ``settings_model``, and decorate methods with ``pacsd.addin.dimse`` decorators
    (handlers), ``@hook`` (observers) and ``@command`` (control-plane commands). The
    server builds one instance per load, calls ``start`` before routing any message to it
    and ``stop`` after the last one.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""
    settings_model: ClassVar[type[AddinSettings] | None] = None
    #: Base services this add-in replaces while loaded ("aetitles", "dicom_client");
    #: ``provide(name)`` returns the implementation.
    provides: ClassVar[tuple[str, ...]] = ()

    ctx: AddinContext

    def start(self, ctx: AddinContext) -> None:
        """Acquire resources. Raising here leaves the add-in listed as failed, not loaded."""
        self.ctx = ctx

    def stop(self) -> None:
        """Release resources. Called once, after in-flight calls have finished."""

    def provide(self, service: str) -> Any:
        """The implementation of a service named in ``provides`` (called after start)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement {service!r}")

    def settings_changed(self, settings: Any) -> None:
        """Called after a validated settings update; ``self.ctx.settings`` is already new."""

    def accepts(self, assoc: AssociationInfo, sop_class_uid: str) -> bool:
        """Per-association decision: offer ``sop_class_uid`` to this peer? Default yes.

        Called during negotiation for every requested abstract syntax this add-in routes;
        returning False rejects that presentation context for this association only.
        """
        return True

    def observes(self, hook: Hook) -> bool:
        """Whether this add-in's ``hook`` has anything to do with the next event. Default yes.

        Asked before each event this add-in hooks (before each message, for the message
        hooks); on False the hook is not called for that event, and when no add-in says
        yes the server does not even build the ``DimseMessage``. An observer that is
        mostly idle (a log whose level is off) answers from its current state, cheaply.
        """
        return True

    @classmethod
    def overrides_accepts(cls) -> bool:
        return cls.accepts is not Addin.accepts

    @classmethod
    def _members(cls, attr: str) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for klass in cls.__mro__:
            for name, value in vars(klass).items():
                if name in seen:
                    continue
                seen.add(name)
                marker = getattr(value, attr, None)
                if marker is not None:
                    found.append((name, marker))
        return found

    @classmethod
    def handler_specs(cls) -> list[tuple[str, HandlerSpec]]:
        """The (method name, spec) pairs this class declares."""
        return [(n, s) for n, s in cls._members(HANDLER_ATTR) if isinstance(s, HandlerSpec)]

    @classmethod
    def hook_methods(cls) -> list[tuple[str, Hook]]:
        return [(n, h) for n, h in cls._members(HOOK_ATTR) if isinstance(h, Hook)]

    @classmethod
    def command_methods(cls) -> dict[str, str]:
        """Command name -> method name."""
        return {c: n for n, c in cls._members(COMMAND_ATTR) if isinstance(c, str)}
