"""PostgreSQL for tests: a fresh database per test (or per module) on a real server.

The server is the one at ``PACSD_TEST_PG_URL`` (default
``postgresql://pacsd:pacsd@127.0.0.1:5432/postgres``): its role needs CREATEDB, and the
database in the URL is only used to create and drop the test databases. An unreachable
server FAILS the test, never skips it: CI installs and starts PostgreSQL, and an index
backend that silently goes untested is worse than a red build.

Fixtures are registered by importing them into a test module::

    from tests.pg import index_url  # noqa: F401
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

PG_URL = os.environ.get("PACSD_TEST_PG_URL", "postgresql://pacsd:pacsd@127.0.0.1:5432/postgres")

#: The index backends every storage test runs against.
ENGINES = ("sqlite", "postgresql")


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL is required for these tests and is not reachable at {PG_URL} "
            f"(set PACSD_TEST_PG_URL): {exc}"
        )


def database_url(name: str) -> str:
    """``PG_URL`` pointing at database ``name`` instead."""
    return urlunsplit(urlsplit(PG_URL)._replace(path="/" + name))


@contextmanager
def fresh_database(prefix: str = "pacsd_test") -> Iterator[str]:
    """Create an empty database, yield its URL, drop it (and its sessions) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(name)
    finally:
        with _admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def engine_url(engine: str, workdir: Path) -> Iterator[str]:
    """An ``index_url`` for ``engine``: a SQLite file in ``workdir`` or a fresh database."""
    if engine == "sqlite":
        workdir.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{workdir / 'index.db'}"
    elif engine == "postgresql":
        with fresh_database() as url:
            yield url
    else:
        raise ValueError(f"unknown engine {engine!r}")


@pytest.fixture(params=ENGINES)
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty index on each engine in turn (function scope)."""
    with engine_url(request.param, tmp_path / "index") as url:
        yield url
