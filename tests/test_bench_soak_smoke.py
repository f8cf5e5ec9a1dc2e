"""The soak benchmark runs end to end, briefly.

This checks behaviour, not the long-run figures: ``bench/soak.py`` for 20 seconds must
exit 0 (it exits non-zero on any failed operation, a traceback in the server's log, a
server that does not stop cleanly, or growth past its limits), have done every kind of
operation, and report its resource samples.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


@pytest.mark.timeout(120)
def test_soak_benchmark_short_run(tmp_path: Path) -> None:
    out_json = tmp_path / "soak.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--minutes",
            str(20 / 60),
            "--clients",
            "3",
            "--sample-s",
            "1",
            "--warmup-s",
            "4",
            # Short runs are noisy: allow more than the 10-minute defaults.
            "--max-rss-growth-mib",
            "60",
            "--json",
            str(out_json),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert re.search(r"^verified: flat and no failures$", proc.stdout, re.M), proc.stdout

    figures = json.loads(out_json.read_text())
    for op in ("store", "echo", "find", "move"):
        assert figures["ops"][op] > 0, figures["ops"]
    assert not [k for k in figures["ops"] if k.endswith("_failed")], figures["ops"]
    # Every moved study arrived at the move destination: 5 instances per C-MOVE.
    assert figures["moved_received"] == 5 * figures["ops"]["move"]
    assert len(figures["samples"]) >= 15
    assert set(figures["growth"]) == {"rss_kib", "threads", "fds", "index_kib"}
    assert figures["growth"]["index_kib"] > 0  # the index grew as it stored
    assert figures["stopped_cleanly"] and figures["log_tracebacks"] == 0
    assert list((tmp_path / "work").iterdir()) == []
