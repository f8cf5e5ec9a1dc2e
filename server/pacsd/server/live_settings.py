"""Settings that change while the server runs, and how each one takes effect.

Most settings shape what gets built at startup (ports, folders, the index, log sinks)
and only a restart can change them. A few are read again for every association or
request; those are listed in ``RUNTIME`` with the function that puts a new value in
force. Keeping the list here, rather than marking fields in ``config.Settings``, keeps
the "what does changing this do" question in one place.

A change is validated whole before anything is applied (one bad value changes
nothing), and lasts until the process ends: the settings file stays the operator's
source of truth, and ``pacsctl apply`` re-applies a desired state after a restart.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pacsd.server import logsetup
from pacsd.server.config import Settings, describe_validation_error
from pydantic import ValidationError

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime

log = logging.getLogger("pacsd.core.settings")


def _log_level(rt: Runtime, value: Any) -> None:
    logsetup.set_level("", logging.getLevelNamesMapping()[value])


def _timeouts(rt: Runtime, value: Any) -> None:
    # New associations copy these from the AE; running ones keep theirs.
    s = rt.settings
    for listener in rt.dicom_listeners():
        ae = listener.ae
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        ae.maximum_pdu_size = s.max_pdu_size
    if rt.dicom_client is not None:
        rt.dicom_client.configure(
            acse_timeout=s.acse_timeout,
            dimse_timeout=s.dimse_timeout,
            network_timeout=s.network_timeout,
            max_pdu_size=s.max_pdu_size,
        )


def _read_when_used(rt: Runtime, value: Any) -> None:
    """Nothing to do: the code reads ``runtime.settings`` each time it needs the value."""


#: Setting -> how a new value is put in force (after ``runtime.settings`` holds it).
RUNTIME: dict[str, Callable[[Runtime, Any], None]] = {
    "log_level": _log_level,
    # Admission checks it per association.
    "max_associations": _read_when_used,
    # Stop, shutdown and the drain read it when they start.
    "grace_period": _read_when_used,
    # Dispatch reads it per request.
    "handler_time_limit": _read_when_used,
    # Admission reads the access policy per association (dicom/policy.py). The
    # passcode hashes (dicom_users) are not here: secrets change with the file.
    "require_known_calling_ae": _read_when_used,
    "check_called_ae": _read_when_used,
    "unknown_ae_permissions": _read_when_used,
    "require_user_identity": _read_when_used,
    "acse_timeout": _timeouts,
    "dimse_timeout": _timeouts,
    "network_timeout": _timeouts,
    "max_pdu_size": _timeouts,
}

#: Keys whose values never leave the process (masked in GetSettings).
_SECRET_KEYS = ("password", "secret", "token", "passcode", "users", "credential")
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]+:)[^@/\s]+@")
MASK = "***"


class UnknownSetting(ValueError):
    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"unknown setting(s): {', '.join(names)}")


class RequiresRestart(ValueError):
    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(
            f"{', '.join(names)} only take(s) effect at startup: change the settings file "
            f"and restart (settings changeable at runtime: {', '.join(sorted(RUNTIME))})"
        )


class InvalidSetting(ValueError):
    """A value the settings model refuses; the message names the field."""


@dataclass(frozen=True)
class Update:
    changed: tuple[str, ...]
    settings: dict[str, Any]


def public_view(rt: Runtime) -> dict[str, Any]:
    """Every setting, JSON-ready, with secrets masked and the live log level."""
    data = rt.settings.model_dump(mode="json")
    # SetLogLevel changes the default level too; report what is in force.
    data["log_level"] = logging.getLevelName(logsetup.levels()[0])
    return _mask(data)


def _mask(value: Any, key: str = "") -> Any:
    if key and any(s in key.lower() for s in _SECRET_KEYS) and value:
        return MASK
    if isinstance(value, dict):
        return {k: _mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value


class LiveSettings:
    """Applies setting changes for the control plane, one change at a time."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._lock = threading.Lock()

    def update(self, values: Mapping[str, Any], *, validate_only: bool = False) -> Update:
        """Validate ``values`` whole, then put the changed ones in force.

        Raises UnknownSetting, RequiresRestart or InvalidSetting; nothing changes then.
        """
        with self._lock:
            unknown = sorted(k for k in values if k not in Settings.model_fields)
            if unknown:
                raise UnknownSetting(unknown)
            # The log level in force is the live one: SetLogLevel may have changed it.
            level = logging.getLevelName(logsetup.levels()[0])
            candidate = {**self._rt.settings.model_dump(), "log_level": level, **values}
            try:
                checked = Settings.model_validate(candidate)
            except ValidationError as exc:
                raise InvalidSetting(describe_validation_error(exc)) from exc
            now = self._rt.settings
            changed = sorted(
                k
                for k in values
                if getattr(checked, k) != (level if k == "log_level" else getattr(now, k))
            )
            restart = [k for k in changed if k not in RUNTIME]
            if restart:
                raise RequiresRestart(restart)
            if not validate_only:
                self._apply(checked, changed)
            view = public_view(self._rt)
            if validate_only:
                view.update({k: checked.model_dump(mode="json")[k] for k in changed})
            return Update(tuple(changed), view)

    def _apply(self, checked: Settings, changed: list[str]) -> None:
        s = self._rt.settings
        for name in changed:
            setattr(s, name, getattr(checked, name))
        done: set[Callable[[Runtime, Any], None]] = set()
        for name in changed:
            effect = RUNTIME[name]
            if effect not in done:
                effect(self._rt, getattr(s, name))
                done.add(effect)
            log.info("setting %s changed to %r", name, getattr(s, name))
