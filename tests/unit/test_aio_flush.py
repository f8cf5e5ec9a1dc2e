"""Flushes that run in the kernel while the caller goes on (storage/aio_flush.py).

On this project's machines native AIO is there, and the large C-STORE path counts on it
to overlap its flushes with its CPU work; where it is not, requests run when made. Both
ways, each request's outcome reaches its callback and its label, and ``wait`` raises
the first failure. Contexts go back to a pool instead of being made per batch.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacsd.server.storage import aio_flush
from pacsd.server.storage.aio_flush import Flushes


def test_native_aio_is_there_on_this_machine_kind() -> None:
    assert aio_flush.available(), "no native AIO: large C-STOREs would lose the overlap"


@pytest.fixture(params=["native", "fallback"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "fallback":
        monkeypatch.setattr(aio_flush, "_native", lambda: None)
    yield str(request.param)


def test_each_request_reports_to_its_callback_and_label(tmp_path: Path, mode: str) -> None:
    """A regular file flushes; a pipe cannot (EINVAL: no fsync, native or not)."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10_000)
    fd = os.open(path, os.O_RDWR)
    read_end, write_end = os.pipe()
    seen: dict[str, OSError | None] = {}
    try:
        batch = Flushes()
        batch.fsync(fd, lambda e: seen.__setitem__("file", e), label="file")
        batch.fdatasync(read_end, lambda e: seen.__setitem__("pipe", e), label="pipe")
        assert len(batch) == 2 and batch.labels == ["file", "pipe"]
        assert seen == {}, "callbacks run in wait, not before"
        with pytest.raises(OSError) as raised:
            batch.wait()
        assert raised.value.errno == errno.EINVAL
        assert seen["file"] is None
        assert seen["pipe"] is not None and seen["pipe"].errno == errno.EINVAL
        assert batch.failed("file") is None
        assert batch.failed("pipe") is seen["pipe"]
        batch.wait()  # a second wait neither raises again nor calls back again
        with pytest.raises(RuntimeError):
            batch.fsync(fd)  # a waited-for batch takes no more requests
    finally:
        for n in (fd, read_end, write_end):
            os.close(n)


def test_a_bad_descriptor_is_the_callers_error(tmp_path: Path) -> None:
    batch = Flushes()
    with pytest.raises(OSError) as raised:
        batch.fsync(12_345)  # not open
    assert raised.value.errno == errno.EBADF
    assert len(batch) == 0
    batch.wait()


def _aio_events() -> int:
    return int(Path("/proc/sys/fs/aio-nr").read_text())


def test_every_batch_gives_its_context_back(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        warm = Flushes()
        warm.fdatasync(fd)
        warm.wait()  # the pool holds a context now
        before = _aio_events()
        for _ in range(200):
            batch = Flushes()
            batch.fdatasync(fd)
            batch.fsync(fd)
            batch.wait()
        assert _aio_events() == before, "contexts leak: each batch kept one"
    finally:
        os.close(fd)
