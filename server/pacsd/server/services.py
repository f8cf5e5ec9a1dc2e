"""Base services (AE registry, DICOM client, ...) and the add-ins that replace them.

The server registers a default implementation for each service. An add-in that lists a
service in ``provides`` replaces it while it is loaded; when it unloads, the default is
back. Add-ins read services through their context on every use, so a replacement
reaches add-ins that were loaded before it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("pacsd.core")

#: The base services an add-in may replace.
REPLACEABLE = ("aetitles", "dicom_client", "storage", "security")

#: Called with a service's name after its implementation (or its provider's settings)
#: changed; runs on the thread that made the change, outside the registry's lock.
ServiceWatcher = Callable[[str], None]


class ServiceConflict(Exception):
    pass


class ServiceRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._defaults: dict[str, Any] = {}
        #: service -> (add-in name, implementation)
        self._overrides: dict[str, tuple[str, Any]] = {}
        self._watchers: dict[str, list[ServiceWatcher]] = {}

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
        self._notify([name])

    def release(self, addin: str, notify: bool = True) -> list[str]:
        """Drop every override ``addin`` installed (it is unloading); returns their names.

        A reload releases with ``notify=False`` and installs the new instance at once,
        so a watcher sees one change, not the service vanishing in between (the DICOM
        TLS port would otherwise close and re-open)."""
        with self._lock:
            names = [n for n, (a, _) in self._overrides.items() if a == addin]
            for name in names:
                del self._overrides[name]
        if notify:
            self._notify(names)
        return names

    def provided_by(self, addin: str) -> list[str]:
        with self._lock:
            return [n for n, (a, _) in self._overrides.items() if a == addin]

    def subscribe(self, name: str, watcher: ServiceWatcher) -> None:
        """Call ``watcher(name)`` whenever service ``name`` is replaced, released, or its
        provider reports new settings (``changed``)."""
        with self._lock:
            self._watchers.setdefault(name, []).append(watcher)

    def changed(self, names: Iterable[str]) -> None:
        """Tell the watchers of ``names`` that their implementation changed in place."""
        self._notify(names)

    def _notify(self, names: Iterable[str]) -> None:
        for name in dict.fromkeys(names):
            with self._lock:
                watchers = list(self._watchers.get(name, ()))
            for watcher in watchers:
                try:
                    watcher(name)
                except Exception:
                    # A watcher's failure is its own to report; the add-in operation
                    # that triggered it has already happened and stays done.
                    log.exception("reacting to a change of service %s failed", name)
