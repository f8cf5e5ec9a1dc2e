"""The memory benchmark runs end to end: every target receives the large instance whole,
and pacsd and Orthanc send it back whole (a C-GET by DCMTK's getscu).

Behaviour, not a memory figure: ``bench/memory.py`` exits non-zero when a target did not
write the whole instance; here it must exit 0, report each target's resident sizes, and
compute the ratios it promises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "memory.py"


@pytest.mark.timeout(300)
def test_memory_benchmark_small_instance(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--size-mb",
            "48",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    figures = json.loads(out.read_text())
    targets = [r["target"] for r in figures["results"]]
    assert targets == ["pacsd", "storescp", "plain", "orthanc"]
    for result in figures["results"]:
        assert result["received_bytes"] >= 48 * 1024 * 1024
        assert result["peak_rss_mb"] >= result["rss_before_mb"] > 0
        got = result["get"]
        if result["target"] in ("pacsd", "orthanc"):
            assert got["received_bytes"] >= 48 * 1024 * 1024
            assert got["peak_rss_mb"] >= got["rss_before_mb"] > 0
        else:
            assert got is None
    assert set(figures["ratios"]) == {
        "pacsd_growth_over_storescp",
        "pacsd_growth_over_plain",
        "pacsd_growth_over_orthanc",
        "pacsd_get_growth_over_orthanc",
    }
    assert "target: pacsd peak RSS under 200 MB:" in proc.stdout
    assert "target: pacsd peak RSS under 200 MB sending it back:" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["memory.json"]  # work folder removed
