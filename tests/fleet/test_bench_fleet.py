"""The fleet benchmark runs end to end on a small fleet.

This checks behaviour, not timing: ``bench/fleet.py --sizes 2,3 --repeat 1`` must start
its servers, verify that every one answered in every run, print its table and ratios,
write its JSON, and leave no process or folder behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fleet.py"


def test_fleet_benchmark_quick_run(tmp_path: Path) -> None:
    out_json = tmp_path / "fleet.json"
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--sizes",
            "2,3",
            "--repeat",
            "1",
            "--json",
            str(out_json),
            "--workdir",
            str(work),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    ratios = re.findall(
        r"^ratio x(\d+): pacsctl=\d+\.\d\d sdk_cold=\d+\.\d\d sdk_warm=\d+\.\d\d "
        r"aio_warm=\d+\.\d\d$",
        proc.stdout,
        re.M,
    )
    assert ratios == ["2", "3"], proc.stdout
    assert re.search(r"^  started 3 servers in [\d.]+ s; per server RSS \d+ MiB", proc.stdout, re.M)
    assert "verified: 12 measurements, every server answered RUNNING in every run" in proc.stdout

    figures = json.loads(out_json.read_text())
    assert [row["servers"] for row in figures["results"]] == [1, 2, 3]
    for row in figures["results"]:
        for mode in ("pacsctl", "sdk_cold", "sdk_warm", "aio_warm"):
            assert row[mode]["median_s"] > 0
    assert figures["results"][0]["pacsctl"]["ratio"] == 1.0
    assert figures["goal"] is None  # 50 servers were not asked for
    assert figures["info"]["started"] == 3
    assert list(work.iterdir()) == []  # every server folder removed
