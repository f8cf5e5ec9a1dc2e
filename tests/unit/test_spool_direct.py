"""Spool files written past the page cache: every byte lands where it belongs, whatever
the fragment sizes, and a file system that refuses direct I/O gets the old path."""

from __future__ import annotations

import fcntl
import os
import random
from pathlib import Path

import pytest
from pacsd.server.dicom import direct
from pacsd.server.dicom.spool import SpoolFile
from pacsd.server.storage import fast_header

HEADER = b"\x00" * 128 + b"DICM" + b"meta" * 20


def _fragments(total: int, sizes: list[int], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out: list[bytes] = []
    left = total
    while left:
        n = min(left, rng.choice(sizes))
        out.append(rng.randbytes(n))
        left -= n
    return out


def _is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


def test_the_head_stays_in_the_page_cache_for_the_header_parse() -> None:
    assert direct.HEAD >= fast_header.HEAD_BYTES
    assert direct.HEAD % direct.ALIGN == 0
    assert direct.FLUSH_AT % direct.ALIGN == 0 and direct.FLUSH_AT < direct.CAPACITY


@pytest.mark.parametrize(
    ("total", "sizes"),
    [
        (10_000, [16_372]),  # a small instance: never direct
        (direct.HEAD - len(HEADER), [4_096]),  # exactly the head
        (direct.HEAD - len(HEADER) + 1, [16_372]),  # one byte past it
        (direct.HEAD + direct.FLUSH_AT - len(HEADER), [65_536]),  # whole blocks, no tail
        (525_000, [16_372, 131_066]),  # the benchmark's large instance, DCMTK's PDU sizes
        (1_300_000, [1, 7, 4_095, 4_097, 700_000, 262_144]),  # fragments over the buffer
    ],
)
def test_every_byte_lands_in_order(tmp_path: Path, total: int, sizes: list[int]) -> None:
    fragments = _fragments(total, sizes, seed=total)
    spool = SpoolFile(tmp_path / "rx.part", HEADER)
    went_direct = False
    for fragment in fragments:
        spool.write(memoryview(fragment))
        went_direct = went_direct or _is_direct(spool.fileno())
    spool.finish()
    assert spool.error is None
    spool.close()
    written = (tmp_path / "rx.part").read_bytes()
    assert written == HEADER + b"".join(fragments)
    assert went_direct == (len(HEADER) + total > direct.HEAD)
    # What the archive parses the header from, instead of reading the file back.
    assert bytes(spool.head) == written[: direct.HEAD]
    assert spool.size == len(written)


def test_a_file_system_that_refuses_direct_io_is_remembered(tmp_path: Path) -> None:
    folder = tmp_path / "no-direct"
    folder.mkdir()
    with open(os.devnull, "wb") as null:  # no direct I/O on a character device
        assert direct.start(null.fileno(), folder) is None
    assert not direct.usable(folder)
    fragments = _fragments(700_000, [131_066], seed=1)
    spool = SpoolFile(folder / "rx.part", HEADER)
    for fragment in fragments:
        spool.write(fragment)
        assert not _is_direct(spool.fileno())
    spool.finish()
    spool.close()
    written = (folder / "rx.part").read_bytes()
    assert written == HEADER + b"".join(fragments)
    assert bytes(spool.head) == written[: direct.HEAD] and spool.size == len(written)
    assert direct.usable(tmp_path)  # only that folder


def test_a_file_moved_away_is_not_removed_by_discard(tmp_path: Path) -> None:
    """Once the archive renamed the spool file into place, the name it had may be
    anyone's: ``discard`` (which the engine calls after every C-STORE) only closes."""
    spool = SpoolFile(tmp_path / "rx.part", HEADER)
    spool.write(b"data")
    spool.finish()
    final = tmp_path / "final.dcm"
    os.rename(tmp_path / "rx.part", final)
    spool.moved(final)
    (tmp_path / "rx.part").write_bytes(b"someone else's")
    spool.discard()
    assert (tmp_path / "rx.part").read_bytes() == b"someone else's"
    assert final.read_bytes() == HEADER + b"data"
    assert spool.fileno() == -1  # closed all the same


def test_staging_buffers_are_reused(tmp_path: Path) -> None:
    fragments = _fragments(400_000, [131_066], seed=2)
    for name in ("a.part", "b.part", "c.part"):
        spool = SpoolFile(tmp_path / name, HEADER)
        for fragment in fragments:
            spool.write(fragment)
        spool.finish()
        spool.close()
    kept = len(direct._free)
    assert 1 <= kept <= direct.KEEP
    spool = SpoolFile(tmp_path / "d.part", HEADER)
    for fragment in fragments:
        spool.write(fragment)
    assert len(direct._free) == kept - 1  # taken from the free list, not mapped anew
    spool.discard()  # an abandoned transfer gives its buffer back too
    assert len(direct._free) == kept
    assert not (tmp_path / "d.part").exists()
