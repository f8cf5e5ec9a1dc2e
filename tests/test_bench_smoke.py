"""The ingest benchmark runs end to end: every target receives every instance.

This checks behaviour, not timing: ``bench/ingest.py --quick --repeat 1`` must exit 0 (it
exits non-zero when a storescu fails or a target is missing an instance) and print its
table, one ratio line per (size, associations) and the verification line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "ingest.py"
RATIO = re.compile(
    r"^ratio (large|small) x(1|4): pacsd/storescp=\d+\.\d\d pacsd/orthanc=\d+\.\d\d "
    r"pacsd/plain=\d+\.\d\d$",
    re.M,
)


@pytest.mark.timeout(300)
def test_ingest_benchmark_quick_run(tmp_path: Path) -> None:
    out_json = tmp_path / "ingest.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--repeat",
            "1",
            "--json",
            str(out_json),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"

    ratios = {(m[1], m[2]) for m in RATIO.finditer(proc.stdout)}
    assert ratios == {("large", "1"), ("large", "4"), ("small", "1"), ("small", "4")}, proc.stdout
    assert re.search(r"^default Nagle .*pacsd small x1: \d", proc.stdout, re.M), proc.stdout
    assert re.search(
        r"^verified: 17 measurements, every storescu exited 0 and every target received "
        r"every instance",
        proc.stdout,
        re.M,
    ), proc.stdout

    figures = json.loads(out_json.read_text())
    results = figures["results"]
    targets = ("pacsd", "storescp", "orthanc", "plain")
    assert {(r["target"], r["size"], r["associations"]) for r in results} == {
        (t, s, a) for t in targets for s in ("large", "small") for a in (1, 4)
    }
    for r in results:
        assert r["count"] == (40 if r["size"] == "large" else 200)
        assert len(r["runs"]) == 1 and r["median_instances_per_s"] > 0
        # The senders' CPU and the machine's load are measured, not left out: storescu
        # parses and sends every file, and something was busy while it did.
        assert r["median_sender_cpu_ms_per_instance"] > 0, r
        assert 0 < r["median_machine_busy_pct"] <= 100, r
        # A figure cannot exceed what its own CPU costs allow on this machine's CPUs
        # (clock ticks are coarse at --quick sizes: a margin).
        cap = r["cpu_cap_instances_per_s"]
        assert cap > 0 and r["median_instances_per_s"] < cap * 1.5, r
    assert re.search(r"^\s+busy %: all \d+ CPUs", proc.stdout, re.M), proc.stdout
    assert re.search(r"^\s+CPU cap: \d+ CPUs / ", proc.stdout, re.M), proc.stdout
    assert figures["default_nagle"]["tcp_nodelay"] is False

    # Temporary directories are cleaned up: only what pytest made is left.
    assert list((tmp_path / "work").iterdir()) == []
