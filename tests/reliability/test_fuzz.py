"""Malformed input: 10,000 mutated PDUs over thousands of connections (bench/fuzz.py
with a fixed seed), then independent checks that the server is whole.

The fuzzer itself fails on a hung connection, an answer that is not framed as PDUs,
an invalid first PDU that got accepted, or a failed C-ECHO. Here, besides its report:
DCMTK's echoscu still gets an answer, no association is left in the server's books,
threads and descriptors are back to their level, memory stayed bounded and the log
holds no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PacsdProcess, dcmtk, dcmtk_env, run_pacsctl
from tests.reliability import procstats

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "bench" / "fuzz.py"
PDUS = 10_000
BAD = ("hung", "bad_answer", "accepted_invalid")


@pytest.mark.timeout(240)
def test_ten_thousand_malformed_pdus(start_pacsd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: PacsdProcess = start_pacsd(
        env={
            "PACSD_ACSE_TIMEOUT": "2",
            "PACSD_DIMSE_TIMEOUT": "3",
            "PACSD_NETWORK_TIMEOUT": "3",
            "PACSD_MAX_ASSOCIATIONS": "256",
        }
    )
    pid = server.proc.pid
    baseline = procstats.usage(pid)
    report_path = tmp_path / "fuzz.json"
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(FUZZ),
            "--pdus",
            str(PDUS),
            "--seed",
            "9",
            "--network-timeout",
            "3",
            "--dicom-port",
            str(server.dicom_port),
            "--pid",
            str(pid),
            "--log",
            str(server.stderr_path),
            "--json",
            str(report_path),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=200,
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(report_path.read_text())
    assert report["pdus"] >= PDUS and report["connections"] >= PDUS // 4, report
    assert not set(BAD) & set(report["results"]), report["results"]
    assert not [r for r in report["results"] if r.startswith("connect_failed")], report
    # Each kind of malformed input was sent, and the server answered by the protocol:
    # A-ABORTs for invalid PDUs, releases for the well-formed associations.
    assert set(report["kinds"]) == {
        "random_bytes",
        "mutated_rq",
        "lying_length_rq",
        "truncated_rq",
        "wrong_first_type",
        "established",
    }
    assert report["results"].get("aborted", 0) > report["connections"] // 4, report["results"]
    assert report["results"].get("released", 0) > 0, report["results"]
    assert report["server_alive"] and report["echo_after"]
    assert report["log_invalid_pdu_lines"] > report["connections"] // 4
    peak_growth_mib = (report["rss_kib"]["peak"] - baseline.rss_kib) / 1024
    assert peak_growth_mib < 150, report["rss_kib"]
    assert took < 150, f"the run took {took:.0f}s: connections linger"

    # An independent peer still gets an answer.
    echo = subprocess.run(
        [dcmtk("echoscu"), "-aec", "PACSD", "127.0.0.1", str(server.dicom_port)],
        capture_output=True,
        text=True,
        timeout=30,
        env=dcmtk_env(),
    )
    assert echo.returncode == 0, echo.stderr
    # Nothing is left: no association in the server's books, no thread or descriptor.
    listed = run_pacsctl(server, "assoc", "list")
    assert listed.returncode == 0 and "no associations" in listed.stdout, listed.stdout
    deadline = time.monotonic() + 10
    now = procstats.usage(pid)
    while time.monotonic() < deadline and now.fds > baseline.fds:
        time.sleep(0.2)
        now = procstats.usage(pid)
    assert now.fds == baseline.fds, (baseline, now)
    # The add-in worker pool keeps the threads it grew (capped at 128).
    assert now.threads <= baseline.threads + 128, (baseline, now)
    log = server.stderr()
    assert "Traceback" not in log and "Exception in thread" not in log
