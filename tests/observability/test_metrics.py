"""The Prometheus endpoint: its values follow the traffic."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

from pacsd.client import Client
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from tests import corpus
from tests.conftest import console_script
from tests.observability.common import echoscu, scrape, storescu, value


def _metrics_port(endpoint: str) -> int:
    with Client(endpoint) as client:
        listeners = {item.protocol: item for item in client.server.get().listeners}
    assert listeners["metrics"].host == "127.0.0.1"
    return int(listeners["metrics"].port)


def test_metrics_change_after_traffic(start_pacsd: Any, tmp_path: Path) -> None:
    pacsd = start_pacsd(["--metrics-port", "0"])
    port = _metrics_port(pacsd.endpoint)
    before = scrape(port)
    [info] = [v for (name, _), v in before.items() if name == "pacsd_info"]
    assert info == 1

    files = corpus.series_files(tmp_path / "src", 3)
    sizes = sum(f.stat().st_size for f in files)
    out = storescu(pacsd.dicom_port, files)
    assert out.returncode == 0, out.stderr
    assert echoscu(pacsd.dicom_port).returncode == 0
    with Client(pacsd.endpoint) as client:
        client.server.pause()
        ae = AE(ae_title="REFUSED")
        ae.add_requested_context("1.2.840.10008.1.1", ExplicitVRLittleEndian)
        refused = ae.associate("127.0.0.1", pacsd.dicom_port, ae_title="PACSD")
        assert refused.is_rejected
        client.server.resume()
    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("pacsd_associations_accepted_total") == 2
    assert delta("pacsd_associations_rejected_total", reason="paused") == 1
    assert delta("pacsd_associations_rejected_total", reason="limit") == 0
    assert value(after, "pacsd_associations_active") == 0
    store_rq = {"service": "C-STORE", "direction": "received", "type": "request"}
    assert delta("pacsd_dimse_messages_total", **store_rq) == 3
    assert (
        delta("pacsd_dimse_messages_total", service="C-ECHO", direction="sent", type="response")
        == 1
    )
    assert (
        delta("pacsd_dimse_responses_total", service="C-STORE", direction="sent", status="0x0000")
        == 3
    )
    assert delta("pacsd_addin_calls_total", addin="storage") == 3
    assert delta("pacsd_addin_calls_total", addin="verification") == 1
    assert delta("pacsd_addin_call_duration_seconds_count", addin="storage") == 3
    assert delta("pacsd_addin_call_duration_seconds_bucket", addin="storage", le="+Inf") == 3
    assert delta("pacsd_addin_call_duration_seconds_sum", addin="storage") > 0
    assert delta("pacsd_addin_failures_total", addin="storage") == 0
    assert value(after, "pacsd_addin_healthy", addin="storage") == 1
    assert delta("pacsd_stored_instances_total") == 3
    # Each of the three small instances made durable by one store-journal record.
    assert delta("pacsd_store_journal_records_total") == 3
    assert value(after, "pacsd_store_journal_used_bytes") >= sum(f.stat().st_size for f in files)
    assert value(after, "pacsd_store_journal_healthy") == 1
    assert delta("pacsd_store_journal_checkpoints_total") == 0  # none due yet
    # The stored files are the sent ones plus pacsd's own file meta; the received bytes
    # are the datasets plus PDU and command overhead.
    assert delta("pacsd_stored_bytes_total") >= sizes - 3 * 400
    assert delta("pacsd_received_bytes_total") > sizes - 3 * 400
    assert delta("pacsd_sent_bytes_total") > 0
    assert value(after, "process_resident_memory_bytes") > 0


def test_metrics_are_off_by_default_and_loopback_only(start_pacsd: Any, tmp_path: Path) -> None:
    pacsd = start_pacsd()
    with Client(pacsd.endpoint) as client:
        assert "metrics" not in {item.protocol for item in client.server.get().listeners}
    env = {"PATH": "/usr/bin:/bin"}
    serve = [console_script("pacsd"), "serve", "--data-dir", str(tmp_path / "other")]
    proc = subprocess.run(
        [*serve, "--metrics-port", "0"],
        env={**env, "PACSD_METRICS_HOST": "0.0.0.0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "metrics_host: Value error, the metrics endpoint listens on loopback only" in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*serve, "--dicom-port", "0", "--control-port", "0", "--metrics-port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    assert f"pacsd: error: metrics port 127.0.0.1:{port} cannot be bound" in proc.stderr
