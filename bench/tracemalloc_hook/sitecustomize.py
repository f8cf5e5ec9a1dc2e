"""Memory tracing for a pacsd process under a benchmark (``bench/soak.py --tracemalloc``).

Python imports ``sitecustomize`` at start-up from the first folder on ``sys.path`` that
has one; ``soak.py`` puts this folder on the server's ``PYTHONPATH`` and sets
``PACSD_TRACEMALLOC_DIR``. Tracing then starts before pacsd imports anything, and a
daemon thread dumps a snapshot every ``PACSD_TRACEMALLOC_EVERY`` seconds (60) so the
benchmark can diff an early one against a late one and name the lines whose memory
grows. Nothing happens without the variable, so the folder is harmless on the path.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc


def _dump_forever(folder: str, every: float) -> None:
    n = 0
    while True:
        time.sleep(every)
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        path = os.path.join(folder, f"snap-{os.getpid()}-{n:04d}.pickle")
        snapshot.dump(path + ".part")
        os.replace(path + ".part", path)  # the reader never sees half a snapshot
        n += 1


def _start() -> None:
    folder = os.environ.get("PACSD_TRACEMALLOC_DIR")
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    tracemalloc.start(int(os.environ.get("PACSD_TRACEMALLOC_FRAMES", "8")))
    every = float(os.environ.get("PACSD_TRACEMALLOC_EVERY", "60"))
    threading.Thread(
        target=_dump_forever, args=(folder, every), name="tracemalloc-dump", daemon=True
    ).start()


_start()
