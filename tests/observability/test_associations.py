"""Live associations over the control plane: list, abort, and the event stream."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pacsd.admin.v1 import associations_pb2
from pacsd.client import Client
from pacsd.client.errors import NotFound
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from tests import corpus
from tests.conftest import (
    PacsdProcess,
    console_script,
    dcmtk,
    dcmtk_env,
    run_pacsctl,
    sigint_as_at_a_terminal,
)
from tests.observability.common import CALLING, Reader

ROOT = Path(__file__).resolve().parents[2]
SLOW_ADDIN = ROOT / "tests" / "addins" / "slow.py"
VERIFICATION = "1.2.840.10008.1.1"
T = associations_pb2


def _open(port: int, calling: str = CALLING) -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context(VERIFICATION, ExplicitVRLittleEndian)
    ae.add_requested_context(corpus.SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
    assert assoc.is_established
    return assoc


def test_list_shows_live_associations_with_their_traffic(pacsd: PacsdProcess) -> None:
    assoc = _open(pacsd.dicom_port)
    try:
        assert assoc.send_c_echo().Status == 0
        with Client(pacsd.endpoint) as client:
            [item] = client.associations.list()
            assert item.id.startswith("a")
            assert (item.calling_ae, item.called_ae) == (CALLING, "PACSD")
            assert (item.peer_host, item.peer_port) == ("127.0.0.1", assoc.local["port"])
            assert (item.messages_received, item.messages_sent) == (1, 1)
            assert item.bytes_received > 0 and item.bytes_sent > 0
            assert not item.tls
            syntaxes = {cx.abstract_syntax: cx for cx in item.accepted_contexts}
            assert syntaxes[VERIFICATION].abstract_syntax_name == "Verification SOP Class"
            assert syntaxes[VERIFICATION].transfer_syntax == ExplicitVRLittleEndian
            assert syntaxes[VERIFICATION].scp_role
            assert item.start_time.ToSeconds() <= time.time()
            assert client.associations.get(item.id).id == item.id

            out = run_pacsctl(pacsd, "assoc", "list")
            assert out.returncode == 0 and item.id in out.stdout and CALLING in out.stdout
            detail = run_pacsctl(pacsd, "-w", "json", "assoc", "get", item.id)
            assert json.loads(detail.stdout)["association"]["messages_received"] == 1
    finally:
        assoc.release()
    with Client(pacsd.endpoint) as client:
        deadline = time.monotonic() + 5
        while client.associations.list() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.associations.list() == []
        with pytest.raises(NotFound) as err:
            client.associations.get(item.id)
        assert err.value.reason == "ASSOCIATION_NOT_FOUND"


def _until_watching(events: Reader, port: int) -> None:
    """Return once the watch sees events: an association of another AE comes through
    (the stream is opened lazily, so traffic right after watch() could precede it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = _open(port, "WARMUP")
        probe.release()
        seen = events.wait_for(lambda es: any(e.calling_ae == "WARMUP" for e in es), 1)
        if any(e.calling_ae == "WARMUP" for _, e in seen):
            return
    raise AssertionError("the association watch never started")


def test_pacsctl_assoc_abort_ends_a_running_storescu(
    pacsd_no_storage: PacsdProcess, tmp_path: Path
) -> None:
    pacsd = pacsd_no_storage
    with Client(pacsd.endpoint) as client:
        client.addins.load(SLOW_ADDIN)  # 1.5 s per C-STORE of Secondary Capture
        events = Reader(client.associations.watch(lifecycle_only=True))
        _until_watching(events, pacsd.dicom_port)
        files = corpus.series_files(tmp_path / "src", 6)
        sender = subprocess.Popen(
            [
                dcmtk("storescu"),
                "-v",
                "-aet",
                CALLING,
                "-aec",
                "PACSD",
                "127.0.0.1",
                str(pacsd.dicom_port),
                *map(str, files),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dcmtk_env(),
        )
        try:
            deadline = time.monotonic() + 10
            live: list[Any] = []
            while not live and time.monotonic() < deadline:
                live = [a for a in client.associations.list() if a.calling_ae == CALLING]
                time.sleep(0.05)
            assert live, "storescu's association never showed up"
            time.sleep(0.5)  # let the first C-STORE be under way
            started = time.monotonic()
            out = run_pacsctl(pacsd, "assoc", "abort", live[0].id)
            assert out.returncode == 0, out.stderr
            assert f"association {live[0].id} ({CALLING} -> PACSD" in out.stdout
            output, _ = sender.communicate(timeout=15)
            elapsed = time.monotonic() - started
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.communicate()
        # It stopped because of the abort, long before its 6 x 1.5 s of stores.
        assert elapsed < 5, elapsed
        assert sender.returncode != 0, output
        assert "abort" in output.lower(), output
        assert client.associations.list() == []
        # Its resources are gone: nothing left in the spool folder once the C-STORE
        # that was being handled (its handler cannot be interrupted) has returned.
        deadline = time.monotonic() + 5
        while list((pacsd.data_dir / "tmp").glob("*.part")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((pacsd.data_dir / "tmp").glob("*.part")) == []
        items = events.wait_for(
            lambda es: any(e.type == T.ASSOCIATION_EVENT_TYPE_CLOSED for e in es), 5
        )
        events.stop()
        mine = [e for _, e in items if e.association_id == live[0].id]
        kinds = [e.type for e in mine]
        assert kinds[0] == T.ASSOCIATION_EVENT_TYPE_ACCEPTED
        assert T.ASSOCIATION_EVENT_TYPE_ABORTED in kinds
        assert kinds[-1] == T.ASSOCIATION_EVENT_TYPE_CLOSED
        aborted = next(e for e in mine if e.type == T.ASSOCIATION_EVENT_TYPE_ABORTED)
        assert aborted.reason == "by control plane"

    again = run_pacsctl(pacsd, "assoc", "abort", live[0].id)
    assert again.returncode == 1
    assert "NOT_FOUND/ASSOCIATION_NOT_FOUND" in again.stderr


def test_watch_streams_lifecycle_and_message_summaries(pacsd: PacsdProcess, tmp_path: Path) -> None:
    watcher = subprocess.Popen(
        [console_script("pacsctl"), "-e", pacsd.endpoint, "-w", "json", "assoc", "watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_at_a_terminal,
    )
    time.sleep(1.0)  # the watch is open before the traffic
    with Client(pacsd.endpoint) as client:
        sdk = Reader(client.associations.watch(ae_title=CALLING))
        time.sleep(0.3)
        [path] = corpus.series_files(tmp_path / "src", 1)
        out = subprocess.run(
            [dcmtk("storescu"), "-aet", CALLING, "-aec", "PACSD", "127.0.0.1",
             str(pacsd.dicom_port), str(path)],
            capture_output=True, text=True, timeout=30, env=dcmtk_env(),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        items = sdk.wait_for(
            lambda es: any(e.type == T.ASSOCIATION_EVENT_TYPE_CLOSED for e in es), 5
        )
        sdk.stop()
    events = [e for _, e in items]
    assert [e.type for e in events] == [
        T.ASSOCIATION_EVENT_TYPE_ACCEPTED,
        T.ASSOCIATION_EVENT_TYPE_MESSAGE_RECEIVED,
        T.ASSOCIATION_EVENT_TYPE_MESSAGE_SENT,
        T.ASSOCIATION_EVENT_TYPE_RELEASED,
        T.ASSOCIATION_EVENT_TYPE_CLOSED,
    ]
    assert len({e.association_id for e in events}) == 1
    rq, rsp = events[1].message, events[2].message
    assert (rq.service, rq.response, rq.sop_instance_uid, rq.has_dataset) == (
        "C-STORE",
        False,
        path.stem,
        True,
    )
    assert not rq.HasField("status")
    assert (rsp.service, rsp.response, rsp.status, rsp.message_id) == (
        "C-STORE",
        True,
        0,
        rq.message_id,
    )
    watcher.send_signal(signal.SIGINT)  # as Ctrl-C
    stdout, stderr = watcher.communicate(timeout=10)
    assert watcher.returncode == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    types = [line["event"]["type"] for line in lines if line["event"]["calling_ae"] == CALLING]
    assert types == [
        "ASSOCIATION_EVENT_TYPE_ACCEPTED",
        "ASSOCIATION_EVENT_TYPE_MESSAGE_RECEIVED",
        "ASSOCIATION_EVENT_TYPE_MESSAGE_SENT",
        "ASSOCIATION_EVENT_TYPE_RELEASED",
        "ASSOCIATION_EVENT_TYPE_CLOSED",
    ]
