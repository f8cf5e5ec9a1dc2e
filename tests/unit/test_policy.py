"""The DICOM access policy as pure decisions: admission verdicts and their A-ASSOCIATE-RJ
parameters, address allow-lists, User Identity, per-service permissions; and the AE
registry's new fields (validation, persistence, migration of an existing database)."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacsd.addin import Service
from pacsd.addin.services import (
    ALL_PERMISSIONS,
    AETitleEntry,
    InvalidAETitleEntry,
    Permission,
    UnknownAETitle,
)
from pacsd.server.aetitles import SqliteAETitles
from pacsd.server.config import Settings
from pacsd.server.dicom import policy
from pacsd.server.dicom.policy import (
    HostCache,
    PolicyRejection,
    address_allowed,
    check_user_identity,
    decide,
    missing_permissions,
)
from pacsd.server.passcodes import hash_passcode
from pacsd.server.storage.database import ServerDatabase
from pacsd.server.storage.migrations import LATEST_VERSION, MIGRATIONS
from pynetdicom.pdu_primitives import UserIdentityNegotiation

MODALITY = AETitleEntry(
    "MODALITY",
    "127.0.0.1",
    104,
    allowed_addresses=("127.0.0.0/8",),
    permissions=frozenset({Permission.ECHO, Permission.STORE}),
)
FAR_AWAY = AETitleEntry("FARAWAY", "127.0.0.1", 104, allowed_addresses=("10.0.0.0/8",))
OPEN = AETitleEntry("OPEN", "127.0.0.1", 104)


def lookup(ae_title: str) -> AETitleEntry:
    for entry in (MODALITY, FAR_AWAY, OPEN):
        if entry.ae_title == ae_title:
            return entry
    raise UnknownAETitle(ae_title)


def settings(**values: object) -> Settings:
    return Settings.model_validate(values)


# -- admission ---------------------------------------------------------------------------


def test_permissive_defaults_admit_everyone_with_every_permission() -> None:
    verdict = decide(settings(), lookup, "ANYONE", "WHATEVER", "127.0.0.1")
    assert verdict.rejection is None
    assert verdict.permissions == ALL_PERMISSIONS


def test_unknown_calling_ae_is_rejected_when_required() -> None:
    verdict = decide(
        settings(require_known_calling_ae=True), lookup, "STRANGER", "PACSD", "127.0.0.1"
    )
    assert isinstance(verdict.rejection, PolicyRejection)
    # Permanent, service user, calling AE title not recognised (PS3.8 9.3.4).
    assert verdict.rejection[:3] == (1, 1, 3)
    assert "'STRANGER'" in verdict.rejection.why


def test_unknown_calling_ae_gets_the_configured_permissions() -> None:
    configured = settings(unknown_ae_permissions=["echo"])
    verdict = decide(configured, lookup, "STRANGER", "PACSD", "127.0.0.1")
    assert verdict.rejection is None
    assert verdict.permissions == {Permission.ECHO}


def test_called_ae_title_is_checked_first() -> None:
    strict = settings(ae_title="PACSD", check_called_ae=True, require_known_calling_ae=True)
    verdict = decide(strict, lookup, "STRANGER", "OTHER", "127.0.0.1")
    assert verdict.rejection is not None
    assert verdict.rejection[:3] == (1, 1, 7)
    assert decide(strict, lookup, "OPEN", "PACSD", "127.0.0.1").rejection is None


def test_registered_ae_gets_its_permissions_and_address_check() -> None:
    verdict = decide(settings(), lookup, "MODALITY", "PACSD", "127.0.0.5")
    assert verdict.rejection is None
    assert verdict.permissions == {Permission.ECHO, Permission.STORE}
    refused = decide(settings(), lookup, "FARAWAY", "PACSD", "127.0.0.1")
    assert refused.rejection is not None
    assert refused.rejection[:3] == (1, 1, 3)
    assert "may not connect from 127.0.0.1" in refused.rejection.why


def test_a_failing_registry_refuses_transiently() -> None:
    def broken(ae_title: str) -> AETitleEntry:
        raise RuntimeError("database is locked")

    verdict = decide(settings(), broken, "MODALITY", "PACSD", "127.0.0.1")
    assert verdict.rejection is not None
    assert verdict.rejection[:3] == (2, 1, 1)


# -- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "allowed", "expected"),
    [
        ("127.0.0.1", ["127.0.0.1"], True),
        ("127.0.0.2", ["127.0.0.1"], False),
        ("127.0.0.2", ["127.0.0.0/8"], True),
        ("127.0.0.1", ["10.0.0.0/8"], False),
        ("::ffff:127.0.0.1", ["127.0.0.0/8"], True),  # dual-stack socket
        ("::1", ["::1"], True),
        ("::1", ["127.0.0.0/8"], False),
        ("127.0.0.1", ["10.0.0.0/8", "localhost"], True),
        ("not an address", ["127.0.0.0/8"], False),
    ],
)
def test_address_allowed(peer: str, allowed: list[str], expected: bool) -> None:
    assert address_allowed(peer, allowed) is expected


def test_host_names_are_cached_for_their_ttl() -> None:
    now = [0.0]
    calls: list[str] = []
    real = policy._lookup_host

    def counting(name: str) -> frozenset[policy.IPAddress]:
        calls.append(name)
        return real(name)

    cache = HostCache(ttl=30.0, clock=lambda: now[0])
    policy._lookup_host = counting  # type: ignore[assignment]
    try:
        first = cache.resolve("localhost")
        cache.resolve("LOCALHOST")
        now[0] = 29.0
        cache.resolve("localhost")
        assert calls == ["localhost"]
        now[0] = 31.0
        cache.resolve("localhost")
        assert len(calls) == 2
    finally:
        policy._lookup_host = real  # type: ignore[assignment]
    assert any(ip.is_loopback for ip in first)


def test_an_unresolvable_name_matches_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    # The resolver's failure is simulated: a real failing lookup would query a DNS
    # server off this machine, and the tests stay on loopback.
    def fail(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    assert policy._lookup_host("gone.example") == frozenset()
    assert address_allowed("127.0.0.1", ["gone.example"]) is False


# -- permissions --------------------------------------------------------------------------


def test_each_service_needs_its_permission() -> None:
    echo_only = frozenset({Permission.ECHO})
    assert missing_permissions(Service.C_ECHO, echo_only) == []
    assert missing_permissions(Service.C_STORE, echo_only) == [Permission.STORE]
    assert missing_permissions(Service.C_FIND, echo_only) == [Permission.FIND]
    assert missing_permissions(Service.C_MOVE, echo_only) == [Permission.MOVE]
    assert missing_permissions(Service.C_GET, echo_only) == [Permission.GET]
    assert missing_permissions(Service.N_ACTION, echo_only) == [Permission.N_SERVICES]
    n_only = frozenset({Permission.N_SERVICES})
    assert missing_permissions(Service.N_SET, n_only) == []
    assert missing_permissions(Service.N_DELETE, n_only) == [Permission.DELETE]
    for service in Service:
        assert missing_permissions(service, ALL_PERMISSIONS) == []


# -- User Identity ------------------------------------------------------------------------

FAST = {"n": 2**10, "r": 8, "p": 1}


def identity(kind: int, user: bytes, passcode: bytes | None = None) -> UserIdentityNegotiation:
    item = UserIdentityNegotiation()
    item.user_identity_type = kind
    item.primary_field = user
    if passcode is not None:
        item.secondary_field = passcode
    return item


@pytest.fixture(scope="module")
def users() -> dict[str, str]:
    return {"alice": hash_passcode("wonderland", **FAST), "scanner": ""}


def test_user_identity_is_ignored_without_users_or_requirement() -> None:
    assert check_user_identity(identity(2, b"bob", b"x"), {}, False) == ""
    assert check_user_identity(None, {}, False) == ""


def test_username_and_passcode(users: dict[str, str]) -> None:
    assert check_user_identity(identity(2, b"alice", b"wonderland"), users, True) == ""
    wrong = check_user_identity(identity(2, b"alice", b"looking-glass"), users, True)
    assert wrong == "wrong passcode for user 'alice'"
    assert "looking-glass" not in wrong
    unknown = check_user_identity(identity(2, b"mallory", b"wonderland"), users, False)
    assert unknown == "user 'mallory' unknown"


def test_username_only_is_accepted_only_for_users_without_a_passcode(
    users: dict[str, str],
) -> None:
    assert check_user_identity(identity(1, b"scanner"), users, True) == ""
    assert "needs a passcode" in check_user_identity(identity(1, b"alice"), users, True)


def test_missing_or_unsupported_identity_when_required(users: dict[str, str]) -> None:
    assert "no user identity" in check_user_identity(None, users, True)
    assert check_user_identity(None, users, False) == ""
    saml = identity(4, b"<assertion/>")
    assert "type 4 is not supported" in check_user_identity(saml, users, True)
    assert check_user_identity(saml, users, False) == ""


def test_identity_rejection_is_no_reason_given(users: dict[str, str]) -> None:
    configured = settings(dicom_users=users)
    verdict = decide(
        configured, lookup, "OPEN", "PACSD", "127.0.0.1", identity(2, b"alice", b"nope")
    )
    assert verdict.rejection is not None
    assert verdict.rejection[:3] == (1, 1, 1)
    assert "nope" not in verdict.rejection.why


# -- the registry's new fields --------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SqliteAETitles]:
    db = ServerDatabase.open(tmp_path)
    yield SqliteAETitles(db)
    db.close()


def test_policy_fields_round_trip_and_update(registry: SqliteAETitles) -> None:
    entry = AETitleEntry(
        "CT1",
        "ct1.example",
        104,
        allowed_addresses=(" 10.1.0.0/16", "ct1.example", "10.2.3.4", "10.2.3.4"),
        permissions=frozenset({Permission.STORE}),
    )
    assert registry.create(entry) is True
    stored = registry.get("CT1")
    assert stored.allowed_addresses == ("10.1.0.0/16", "ct1.example", "10.2.3.4")
    assert stored.permissions == {Permission.STORE}
    assert registry.create(stored) is False  # identical: idempotent

    updated, changed = registry.update("CT1", permissions=frozenset())
    assert changed and updated.permissions == frozenset()
    assert updated.granted() == frozenset()
    updated, changed = registry.update("CT1", permissions=None)  # back to "all"
    assert changed and updated.permissions is None and updated.granted() == ALL_PERMISSIONS
    updated, changed = registry.update("CT1", port=105)
    assert changed and updated.allowed_addresses == stored.allowed_addresses  # kept
    updated, changed = registry.update("CT1", allowed_addresses=())
    assert changed and updated.allowed_addresses == ()
    assert registry.get("CT1") == updated


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"allowed_addresses": ("10.1.2.3/16",)}, "allowed_addresses"),  # host bits set
        ({"allowed_addresses": ("300.1.1.1",)}, "allowed_addresses"),
        ({"allowed_addresses": ("bad host!",)}, "allowed_addresses"),
        ({"allowed_addresses": "10.0.0.1"}, "allowed_addresses"),  # a string, not a list
        ({"allowed_addresses": tuple(f"10.0.0.{i}" for i in range(65))}, "allowed_addresses"),
        ({"permissions": frozenset({"echo", "fly"})}, "permissions"),
    ],
)
def test_invalid_policy_fields_name_the_field(
    registry: SqliteAETitles, fields: dict[str, object], field: str
) -> None:
    entry = AETitleEntry("BAD", "127.0.0.1", 104, **fields)  # type: ignore[arg-type]
    with pytest.raises(InvalidAETitleEntry) as err:
        registry.create(entry)
    assert err.value.field == field
    with pytest.raises(UnknownAETitle):
        registry.get("BAD")


def test_an_existing_database_is_migrated_and_keeps_its_entries(tmp_path: Path) -> None:
    # A database as the previous release left it: migrations 1 and 2, one entry.
    conn = sqlite3.connect(tmp_path / "pacsd.db")
    conn.execute(
        "CREATE TABLE schema_migrations "
        "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    for migration in MIGRATIONS[:2]:
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, '2026-01-01T00:00:00+00:00')",
            (migration.version, migration.description),
        )
    conn.execute("INSERT INTO ae_titles VALUES ('OLDPEER', '127.0.0.1', 104, 'kept', 'x', 'x')")
    conn.commit()
    conn.close()

    db = ServerDatabase.open(tmp_path)
    try:
        assert db.schema_version() == LATEST_VERSION >= 3
        registry = SqliteAETitles(db)
        old = registry.get("OLDPEER")
        assert (old.host, old.port, old.description) == ("127.0.0.1", 104, "kept")
        # Entries from before the policy allow every address and every permission.
        assert old.allowed_addresses == () and old.permissions is None
        _, changed = registry.update("OLDPEER", permissions=frozenset({Permission.ECHO}))
        assert changed
    finally:
        db.close()
