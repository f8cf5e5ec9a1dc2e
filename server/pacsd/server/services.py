"""Base services (AE registry, DICOM client, ...) and the add-ins that replace them.

The server registers a default implementation for each service. An add-in that lists a
service in ``provides`` replaces it while it is loaded; when it unloads, the default is
back. Add-ins read services through their context on every use, so a replacement
reaches add-ins that were loaded before it.
"""

from __future__ import annotations

import threading
from typing import Any

#: The base services an add-in may replace.
REPLACEABLE = ("aetitles", "dicom_client", "storage")


class ServiceConflict(Exception):
    pass


class ServiceRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._defaults: dict[str, Any] = {}
        #: service -> (add-in name, implementation)
        self._overrides: dict[str, tuple[str, Any]] = {}

    def set_default(self, name: str, impl: Any) -> None:
        with self._lock:
            self._defaults[name] = impl

    def get(self, name: str) -> Any:
        override = self._overrides.get(name)
        return override[1] if override is not None else self._defaults.get(name)

    def provider(self, name: str) -> str:
        """The add-in providing ``name``, or "" for the server's default."""
        override = self._overrides.get(name)
        return override[0] if override else ""

    def override(self, name: str, addin: str, impl: Any) -> None:
        if name not in REPLACEABLE:
            raise ServiceConflict(
                f"add-in {addin!r} provides unknown service {name!r} "
                f"(replaceable: {', '.join(REPLACEABLE)})"
            )
        with self._lock:
            current = self._overrides.get(name)
            if current is not None and current[0] != addin:
                raise ServiceConflict(
                    f"add-ins {current[0]!r} and {addin!r} both provide service {name!r}"
                )
            self._overrides[name] = (addin, impl)

    def release(self, addin: str) -> None:
        """Drop every override ``addin`` installed (it is unloading)."""
        with self._lock:
            for name in [n for n, (a, _) in self._overrides.items() if a == addin]:
                del self._overrides[name]
