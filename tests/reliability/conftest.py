"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import PacsdProcess, _start


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PacsdProcess]:
    """One pacsd with default settings per test module (modules needing other settings
    define their own ``server``)."""
    started = _start(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield started
    started.proc.terminate()
    started.proc.wait(15)
