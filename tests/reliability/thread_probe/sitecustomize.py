"""Start-up probe for a pacsd under test: on SIGUSR2, write the names of its Python
threads (JSON) to ``PACSD_THREAD_PROBE``.

/proc gives a process's thread count but not which threads they are (CPython 3.11 does
not name native threads), and the add-in worker pool (a ThreadPoolExecutor) keeps every
thread it grows; with the names a test can count those apart and require every other
thread to be gone. Python imports ``sitecustomize`` at start-up from the first folder
on ``sys.path`` that has one; the test puts this folder on the server's PYTHONPATH.
Without the variable nothing happens.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from types import FrameType


def _dump(path: str) -> None:
    names = [t.name for t in threading.enumerate()]
    with open(path + ".part", "w") as out:
        json.dump(names, out)
    os.replace(path + ".part", path)  # the test never reads half a list


def _install() -> None:
    path = os.environ.get("PACSD_THREAD_PROBE")
    if path:

        def on_signal(signum: int, frame: FrameType | None) -> None:
            _dump(path)

        signal.signal(signal.SIGUSR2, on_signal)


_install()
