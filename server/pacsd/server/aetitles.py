"""The default AE registry (base service ``aetitles``), persisted in the server database.

Entries are validated here, once, so every path into the registry (control plane,
add-ins, a future import) obeys the same rules and every peer the DICOM client dials has
a usable address. Writes are single ``BEGIN IMMEDIATE`` transactions, so concurrent
callers (gRPC threads, association threads) see each change whole; reads go through the
same serialised connection.
"""

from __future__ import annotations

import builtins
import ipaddress
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from pacsd.addin.services import (
    UNSET,
    AETitleConflict,
    AETitleEntry,
    AETitles,
    InvalidAETitleEntry,
    Permission,
    UnknownAETitle,
    Unset,
)
from pacsd.server.storage.database import ServerDatabase

#: Longest description kept; the registry is configuration, not a notes store.
MAX_DESCRIPTION = 1024
#: Most addresses one entry may list; more is a network plan, better written as a CIDR.
MAX_ALLOWED_ADDRESSES = 64

# RFC 1123 labels; "_" is tolerated because container and Windows host names use it.
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def normalize_ae_title(value: object, field: str = "ae_title") -> str:
    """The AE title as stored (surrounding spaces dropped); raises InvalidAETitleEntry.

    PS3.5 AE value representation: at most 16 characters of the default repertoire,
    no backslash or control characters, and leading/trailing spaces are not significant.
    """
    if not isinstance(value, str):
        raise InvalidAETitleEntry(field, "must be a string")
    if len(value) > 16:
        raise InvalidAETitleEntry(field, f"{value!r} is longer than 16 characters")
    if any(c == "\\" or not (0x20 <= ord(c) < 0x7F) for c in value):
        raise InvalidAETitleEntry(
            field, f"{value!r} may hold printable ASCII only, without backslash"
        )
    stripped = value.strip(" ")
    if not stripped:
        raise InvalidAETitleEntry(field, "must not be empty or only spaces")
    return stripped


def validate_host(value: object, field: str = "host") -> str:
    """A hostname or IP address (surrounding spaces dropped); raises InvalidAETitleEntry."""
    if not isinstance(value, str):
        raise InvalidAETitleEntry(field, "must be a string")
    host = value.strip()
    if not host:
        raise InvalidAETitleEntry(field, "must not be empty")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise InvalidAETitleEntry(field, f"{value!r} is not a valid hostname or IP address")
    if name.replace(".", "").isdigit():
        # "10.0.0" or "300.1.1.1" would be resolved as odd IPv4 forms; refuse the typo.
        raise InvalidAETitleEntry(field, f"{value!r} is not a valid IP address")
    return host


def validate_address(value: object) -> str:
    """One ``allowed_addresses`` item: an IP address, a CIDR network or a host name.

    A network with host bits set (``10.1.2.3/16``) is refused rather than widened: it is
    usually a typo, and silently allowing the whole /16 would be the wrong guess.
    """
    field = "allowed_addresses"
    if isinstance(value, str) and "/" in value:
        text = value.strip()
        try:
            return str(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise InvalidAETitleEntry(
                field, f"{value!r} is not a valid CIDR network: {exc}"
            ) from exc
    return validate_host(value, field)


def validate_addresses(values: object) -> tuple[str, ...]:
    """The allow-list as stored: validated, duplicates dropped, order kept."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidAETitleEntry("allowed_addresses", "must be a list of addresses")
    addresses = tuple(dict.fromkeys(validate_address(v) for v in values))
    if len(addresses) > MAX_ALLOWED_ADDRESSES:
        raise InvalidAETitleEntry(
            "allowed_addresses", f"lists more than {MAX_ALLOWED_ADDRESSES} addresses"
        )
    return addresses


def validate_permissions(values: object) -> frozenset[Permission] | None:
    """The permission set as stored; None (every permission) passes through."""
    if values is None:
        return None
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidAETitleEntry("permissions", "must be a set of permission names")
    granted = set()
    for value in values:
        try:
            granted.add(Permission(value))
        except ValueError:
            known = ", ".join(p.value for p in Permission)
            raise InvalidAETitleEntry(
                "permissions", f"{value!r} is not a permission (known: {known})"
            ) from None
    return frozenset(granted)


def validate_port(value: object) -> int:
    # bool is an int in Python; True as a port is a bug in the caller, not port 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidAETitleEntry("port", "must be an integer")
    if not 1 <= value <= 65535:
        raise InvalidAETitleEntry("port", f"{value} is not between 1 and 65535")
    return value


def validate_description(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidAETitleEntry("description", "must be a string")
    if len(value) > MAX_DESCRIPTION:
        raise InvalidAETitleEntry("description", f"is longer than {MAX_DESCRIPTION} characters")
    if any(ord(c) < 0x20 and c not in "\t" for c in value) or "\x7f" in value:
        raise InvalidAETitleEntry("description", "must not contain control characters")
    return value


def validate_entry(entry: AETitleEntry) -> AETitleEntry:
    """The entry as it would be stored; raises InvalidAETitleEntry naming the field."""
    return AETitleEntry(
        ae_title=normalize_ae_title(entry.ae_title),
        host=validate_host(entry.host),
        port=validate_port(entry.port),
        description=validate_description(entry.description),
        allowed_addresses=validate_addresses(entry.allowed_addresses),
        permissions=validate_permissions(entry.permissions),
    )


class SqliteAETitles:
    """``AETitles`` on the server database's ``ae_titles`` table (migration 2)."""

    def __init__(self, db: ServerDatabase) -> None:
        self._db = db

    def list(self) -> builtins.list[AETitleEntry]:
        with self._db.transaction() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM ae_titles ORDER BY ae_title").fetchall()
        return [_entry(row) for row in rows]

    def get(self, ae_title: str) -> AETitleEntry:
        key = normalize_ae_title(ae_title)
        with self._db.transaction() as conn:
            row = _select(conn, key)
        if row is None:
            raise UnknownAETitle(key)
        return _entry(row)

    def create(self, entry: AETitleEntry) -> bool:
        wanted = validate_entry(entry)
        now = _now()
        with self._db.transaction() as conn:
            row = _select(conn, wanted.ae_title)
            if row is not None:
                existing = _entry(row)
                if existing == wanted:
                    return False
                raise AETitleConflict(existing, wanted)
            conn.execute(
                "INSERT INTO ae_titles (ae_title, host, port, description, allowed_addresses, "
                "permissions, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    wanted.ae_title,
                    wanted.host,
                    wanted.port,
                    wanted.description,
                    *_policy_columns(wanted),
                    now,
                    now,
                ),
            )
        return True

    def update(
        self,
        ae_title: str,
        host: str | None = None,
        port: int | None = None,
        description: str | None = None,
        allowed_addresses: tuple[str, ...] | None = None,
        permissions: frozenset[Permission] | Unset | None = UNSET,
    ) -> tuple[AETitleEntry, bool]:
        key = normalize_ae_title(ae_title)
        # Validate before touching the database so a bad field never half-applies.
        changes: dict[str, Any] = {}
        if host is not None:
            changes["host"] = validate_host(host)
        if port is not None:
            changes["port"] = validate_port(port)
        if description is not None:
            changes["description"] = validate_description(description)
        if allowed_addresses is not None:
            changes["allowed_addresses"] = validate_addresses(allowed_addresses)
        if permissions is not UNSET:
            changes["permissions"] = validate_permissions(permissions)
        with self._db.transaction() as conn:
            row = _select(conn, key)
            if row is None:
                raise UnknownAETitle(key)
            current = _entry(row)
            merged = AETitleEntry(
                ae_title=current.ae_title,
                host=changes.get("host", current.host),
                port=changes.get("port", current.port),
                description=changes.get("description", current.description),
                allowed_addresses=changes.get("allowed_addresses", current.allowed_addresses),
                permissions=changes.get("permissions", current.permissions),
            )
            if merged == current:
                return current, False
            conn.execute(
                "UPDATE ae_titles SET host = ?, port = ?, description = ?, "
                "allowed_addresses = ?, permissions = ?, updated_at = ? WHERE ae_title = ?",
                (
                    merged.host,
                    merged.port,
                    merged.description,
                    *_policy_columns(merged),
                    _now(),
                    key,
                ),
            )
        return merged, True

    def delete(self, ae_title: str) -> bool:
        key = normalize_ae_title(ae_title)
        with self._db.transaction() as conn:
            cursor = conn.execute("DELETE FROM ae_titles WHERE ae_title = ?", (key,))
            return cursor.rowcount > 0


class ServiceLookup(Protocol):
    def get(self, name: str) -> Any: ...


class CurrentAETitles:
    """``AETitles`` that delegates every call to the registry in force right now.

    The ``aetitles`` base service may be replaced by an add-in while the server runs;
    the DICOM client and the control plane hold this proxy instead of one
    implementation, so they always resolve peers the same way the C-MOVE dispatcher does.
    """

    def __init__(self, services: ServiceLookup, name: str = "aetitles") -> None:
        self._services = services
        self._name = name

    def _current(self) -> AETitles:
        registry = self._services.get(self._name)
        if registry is None:
            raise RuntimeError("no AE registry is registered")
        return registry

    def list(self) -> builtins.list[AETitleEntry]:
        return self._current().list()

    def get(self, ae_title: str) -> AETitleEntry:
        return self._current().get(ae_title)

    def create(self, entry: AETitleEntry) -> bool:
        return self._current().create(entry)

    def update(
        self,
        ae_title: str,
        host: str | None = None,
        port: int | None = None,
        description: str | None = None,
        allowed_addresses: tuple[str, ...] | None = None,
        permissions: frozenset[Permission] | Unset | None = UNSET,
    ) -> tuple[AETitleEntry, bool]:
        # Only the policy fields given are passed on, so a replacement registry written
        # before they existed keeps working for host/port/description updates.
        extra: dict[str, Any] = {}
        if allowed_addresses is not None:
            extra["allowed_addresses"] = allowed_addresses
        if permissions is not UNSET:
            extra["permissions"] = permissions
        return self._current().update(
            ae_title, host=host, port=port, description=description, **extra
        )

    def delete(self, ae_title: str) -> bool:
        return self._current().delete(ae_title)


_COLUMNS = "ae_title, host, port, description, allowed_addresses, permissions"


def _select(conn: Any, key: str) -> tuple[Any, ...] | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM ae_titles WHERE ae_title = ?", (key,)).fetchone()
    return None if row is None else tuple(row)


def _entry(row: tuple[Any, ...]) -> AETitleEntry:
    # JSON lists: readable with the sqlite3 shell, and NULL permissions mean "all".
    permissions = None if row[5] is None else frozenset(Permission(p) for p in json.loads(row[5]))
    return AETitleEntry(
        ae_title=str(row[0]),
        host=str(row[1]),
        port=int(row[2]),
        description=str(row[3]),
        allowed_addresses=tuple(json.loads(row[4] or "[]")),
        permissions=permissions,
    )


def _policy_columns(entry: AETitleEntry) -> tuple[str, str | None]:
    addresses = json.dumps(list(entry.allowed_addresses))
    if entry.permissions is None:
        return addresses, None
    return addresses, json.dumps(sorted(p.value for p in entry.permissions))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
