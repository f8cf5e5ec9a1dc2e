"""Direct appends to a preallocated file (storage/block_writer.py), on real files.

Each test reads the file back through an ordinary descriptor: appended bytes land where
they were written, whatever their lengths; a direct write rewrites the bytes before it in
its first block unchanged and zeroes its last block only; bytes beyond that block are
never touched; and a writer without direct I/O writes the same bytes.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from pacsd.server.storage.block_writer import ALIGN, BlockWriter

SIZE = 64 * ALIGN
FILL = b"\xaa"


def _file(tmp_path: Path) -> tuple[Path, int]:
    path = tmp_path / "ring"
    path.write_bytes(FILL * SIZE)  # what a previous lap left: must survive past the writes
    return path, os.open(path, os.O_RDWR)


def _supports_direct(folder: Path) -> bool:
    probe = folder / "probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
    return True


@pytest.mark.parametrize("direct", [True, False])
def test_appends_land_in_order_and_leave_the_rest_alone(tmp_path: Path, direct: bool) -> None:
    path, fd = _file(tmp_path)
    writer = BlockWriter(path, fd, direct=direct)
    assert writer.direct == (direct and _supports_direct(tmp_path))
    rng = random.Random(7)
    start = 2 * ALIGN
    position = start
    expected = bytearray()
    try:
        for _ in range(40):
            data = rng.randbytes(rng.choice([1, 8, 56, 4088, 4096, 4104, 10_000]))
            writer.write(data, position)
            position += len(data)
            expected += data
            on_disk = path.read_bytes()
            assert on_disk[start:position] == expected
            assert on_disk[:start] == FILL * start, "bytes before the first write changed"
            block_end = -(-position // ALIGN) * ALIGN
            # The rest of the last block: zeros from a direct write, untouched otherwise.
            rest = on_disk[position:block_end]
            assert rest == (bytes(len(rest)) if writer.direct else FILL * len(rest))
            assert on_disk[block_end:] == FILL * (SIZE - block_end)
    finally:
        writer.close()
        os.close(fd)


def test_after_a_reset_writes_start_again_at_an_aligned_position(tmp_path: Path) -> None:
    path, fd = _file(tmp_path)
    writer = BlockWriter(path, fd)
    try:
        writer.write(b"first lap", 10 * ALIGN)
        with pytest.raises(ValueError):  # not where the last write ended
            writer.write(b"elsewhere", ALIGN + 3)
        writer.reset()  # the ring wrapped
        writer.write(b"second lap", ALIGN)
        writer.write(b"!", ALIGN + len(b"second lap"))
    finally:
        writer.close()
        os.close(fd)
    on_disk = path.read_bytes()
    assert on_disk[ALIGN : ALIGN + 11] == b"second lap!"
    assert on_disk[10 * ALIGN : 10 * ALIGN + 9] == b"first lap"
