"""The SQLite AE registry: validation, idempotency, persistence and concurrent use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsd.addin.services import (
    AETitleConflict,
    AETitleEntry,
    AETitles,
    InvalidAETitleEntry,
    UnknownAETitle,
)
from pacsd.server.aetitles import CurrentAETitles, SqliteAETitles
from pacsd.server.services import ServiceRegistry
from pacsd.server.storage.database import ServerDatabase


@pytest.fixture
def db(tmp_path: Path) -> Iterator[ServerDatabase]:
    database = ServerDatabase.open(tmp_path)
    yield database
    database.close()


@pytest.fixture
def registry(db: ServerDatabase) -> SqliteAETitles:
    return SqliteAETitles(db)


STORESCP = AETitleEntry("STORESCP", "127.0.0.1", 11112, "the test peer")


def test_implements_the_public_protocol(registry: SqliteAETitles) -> None:
    assert isinstance(registry, AETitles)


def test_create_get_list_update_delete(registry: SqliteAETitles) -> None:
    assert registry.list() == []
    assert registry.create(STORESCP) is True
    assert registry.get("STORESCP") == STORESCP
    assert registry.create(AETitleEntry("ARCHIVE", "pacs.example.org", 104)) is True
    assert [e.ae_title for e in registry.list()] == ["ARCHIVE", "STORESCP"]

    entry, changed = registry.update("STORESCP", port=11113)
    assert changed is True
    assert entry == AETitleEntry("STORESCP", "127.0.0.1", 11113, "the test peer")
    assert registry.get("STORESCP") == entry

    assert registry.delete("STORESCP") is True
    with pytest.raises(UnknownAETitle) as info:
        registry.get("STORESCP")
    assert info.value.ae_title == "STORESCP"
    assert isinstance(info.value, KeyError)  # code written against dicts keeps working
    assert "no AE title 'STORESCP'" in str(info.value)


def test_create_is_idempotent_and_conflicts_name_the_existing_entry(
    registry: SqliteAETitles,
) -> None:
    assert registry.create(STORESCP) is True
    assert registry.create(STORESCP) is False
    # Surrounding spaces are not significant in an AE title: the same entry again.
    same = AETitleEntry(" STORESCP  ", "127.0.0.1", 11112, "the test peer")
    assert registry.create(same) is False
    with pytest.raises(AETitleConflict) as info:
        registry.create(AETitleEntry("STORESCP", "127.0.0.1", 4242))
    assert info.value.existing == STORESCP
    assert registry.get("STORESCP") == STORESCP


def test_update_reports_no_change_and_leaves_unmentioned_fields(
    registry: SqliteAETitles, db: ServerDatabase
) -> None:
    registry.create(STORESCP)
    with db.transaction() as conn:
        (before,) = conn.execute("SELECT updated_at FROM ae_titles").fetchone()
    entry, changed = registry.update("STORESCP", host="127.0.0.1")
    assert (entry, changed) == (STORESCP, False)
    entry, changed = registry.update("STORESCP")
    assert (entry, changed) == (STORESCP, False)
    with db.transaction() as conn:
        (after,) = conn.execute("SELECT updated_at FROM ae_titles").fetchone()
    assert after == before
    entry, changed = registry.update("STORESCP", description="")
    assert changed and entry == AETitleEntry("STORESCP", "127.0.0.1", 11112, "")


def test_update_and_delete_of_unknown_titles(registry: SqliteAETitles) -> None:
    with pytest.raises(UnknownAETitle):
        registry.update("NOPE", port=1)
    assert registry.delete("NOPE") is False


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (AETitleEntry("", "h", 1), "ae_title"),
        (AETitleEntry("    ", "h", 1), "ae_title"),
        (AETitleEntry("A" * 17, "h", 1), "ae_title"),
        (AETitleEntry("BACK\\SLASH", "h", 1), "ae_title"),
        (AETitleEntry("TAB\tX", "h", 1), "ae_title"),
        (AETitleEntry("ÄRZTE", "h", 1), "ae_title"),
        (AETitleEntry("OK", "", 1), "host"),
        (AETitleEntry("OK", "   ", 1), "host"),
        (AETitleEntry("OK", "bad host", 1), "host"),
        (AETitleEntry("OK", "-leading.example", 1), "host"),
        (AETitleEntry("OK", "a" * 64 + ".example", 1), "host"),
        (AETitleEntry("OK", "300.1.1.1", 1), "host"),
        (AETitleEntry("OK", "h;rm -rf", 1), "host"),
        (AETitleEntry("OK", "h", 0), "port"),
        (AETitleEntry("OK", "h", 65536), "port"),
        (AETitleEntry("OK", "h", -1), "port"),
        (AETitleEntry("OK", "h", True), "port"),
        (AETitleEntry("OK", "h", "104"), "port"),  # type: ignore[arg-type]
        (AETitleEntry("OK", "h", 1, "line\nbreak"), "description"),
        (AETitleEntry("OK", "h", 1, "x" * 1025), "description"),
    ],
)
def test_invalid_entries_name_the_field(
    registry: SqliteAETitles, entry: AETitleEntry, field: str
) -> None:
    with pytest.raises(InvalidAETitleEntry) as info:
        registry.create(entry)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{field}:")
    assert registry.list() == []


def test_invalid_update_changes_nothing(registry: SqliteAETitles) -> None:
    registry.create(STORESCP)
    with pytest.raises(InvalidAETitleEntry) as info:
        registry.update("STORESCP", host="new.example", port=70000)
    assert info.value.field == "port"
    assert registry.get("STORESCP") == STORESCP


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "::1", "fe80::1", "pacs", "pacs.example.org", "pacs.example.org.", "db_1"]
)
def test_valid_hosts(registry: SqliteAETitles, host: str) -> None:
    assert registry.create(AETitleEntry("PEER", host, 104))
    assert registry.get("PEER").host == host


def test_titles_are_stored_stripped_and_are_case_sensitive(registry: SqliteAETitles) -> None:
    registry.create(AETitleEntry("  ARCHIVE ", "h", 104))
    assert registry.get("ARCHIVE").ae_title == "ARCHIVE"
    assert registry.get(" ARCHIVE").ae_title == "ARCHIVE"
    with pytest.raises(UnknownAETitle):
        registry.get("archive")


def test_values_are_data_not_sql(registry: SqliteAETitles) -> None:
    # Parameterized SQL: quotes and SQL fragments are just characters of the title.
    tricky = AETitleEntry("X' OR '1'='1", "h", 104, "'); DROP TABLE ae_titles; --")
    assert registry.create(tricky)
    assert registry.get("X' OR '1'='1") == tricky
    assert registry.list() == [tricky]
    with pytest.raises(UnknownAETitle):
        registry.get("' OR 1=1 --")


def test_entries_survive_reopening_the_database(tmp_path: Path) -> None:
    db = ServerDatabase.open(tmp_path)
    SqliteAETitles(db).create(STORESCP)
    db.close()
    db = ServerDatabase.open(tmp_path)
    try:
        assert SqliteAETitles(db).list() == [STORESCP]
    finally:
        db.close()


def test_concurrent_writers_see_each_change_whole(registry: SqliteAETitles) -> None:
    errors: list[BaseException] = []
    created: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            for i in range(20):
                title = f"PEER{i:02d}"
                # Everyone creates the same 20 entries: exactly one creation each wins.
                changed = registry.create(AETitleEntry(title, "127.0.0.1", 1000 + i))
                with lock:
                    created.append(changed)
            barrier.wait(timeout=30)
            for i in range(n, 20, 8):
                # Each writer owns some entries; its updates must land whole.
                registry.update(f"PEER{i:02d}", host=f"host{n}", description=f"writer {n}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert created.count(True) == 20
    entries = registry.list()
    assert [e.ae_title for e in entries] == [f"PEER{i:02d}" for i in range(20)]
    for e in entries:
        owner = int(e.ae_title[4:]) % 8
        assert (e.host, e.port, e.description) == (
            f"host{owner}",
            1000 + int(e.ae_title[4:]),
            f"writer {owner}",
        )


def test_current_registry_proxy_follows_a_replacement(registry: SqliteAETitles) -> None:
    registry.create(STORESCP)
    services = ServiceRegistry()
    services.set_default("aetitles", registry)
    proxy = CurrentAETitles(services)
    assert proxy.get("STORESCP") == STORESCP

    class Book:
        def get(self, ae_title: str) -> AETitleEntry:
            if ae_title != "MOVEDEST":
                raise UnknownAETitle(ae_title)
            return AETitleEntry("MOVEDEST", "10.0.0.1", 104)

        def list(self) -> list[Any]:
            return [self.get("MOVEDEST")]

    services.override("aetitles", "ae_book", Book())
    assert proxy.get("MOVEDEST").host == "10.0.0.1"
    with pytest.raises(UnknownAETitle):
        proxy.get("STORESCP")
    services.release("ae_book")
    assert proxy.get("STORESCP") == STORESCP
