"""The query benchmark runs end to end on a small index and finds what it filled.

Behaviour, not timing: every query must return the number of matches the synthetic
index holds for it (so a benchmark that silently queried nothing would fail here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "query.py"


@pytest.mark.timeout(300)
def test_query_benchmark_small_index(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--instances",
            "4000",
            "--repeat",
            "2",
            "--json",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(proc.stdout)
    matches = {q["query"]: q["matches"] for q in report["queries"]}
    # The name and date queries match a seeded random share; the rest are exact.
    del matches["study: PatientName SMITH^J*"], matches["study: StudyDate one week"]
    assert matches == {
        "study: PatientID": 2,  # two studies per patient
        "study: AccessionNumber": 1,
        "study: StudyInstanceUID": 1,
        "series: StudyInstanceUID+Modality": 1,
        "series: SeriesInstanceUID": 1,
        "image: SeriesInstanceUID": 10,  # ten instances per series
        "image: SOPInstanceUID": 1,
    }
    assert all(q["p50_ms"] > 0 and q["ratio_to_echo"] > 0 for q in report["queries"])
    assert report["echo_p50_ms"] > 0
