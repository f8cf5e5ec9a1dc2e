"""The memory benchmark runs end to end: every target receives the large instance whole.

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
    assert [r["target"] for r in figures["results"]] == ["pacsd", "storescp", "plain"]
    for result in figures["results"]:
        assert result["received_bytes"] >= 48 * 1024 * 1024
        assert result["peak_rss_mb"] >= result["rss_before_mb"] > 0
    assert set(figures["ratios"]) == {"pacsd_growth_over_storescp", "pacsd_growth_over_plain"}
    assert "target: pacsd peak RSS under 200 MB" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["memory.json"]  # work folder removed
