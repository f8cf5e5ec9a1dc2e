"""``workers = 2``: two engine processes share the DICOM port and look like one server.

Each test starts a real pacsd with two workers and talks DICOM to its one port. The
kernel spreads connections over the processes (SO_REUSEPORT, hashed per connection),
so a test opens many associations (20 or more): the chance that all land on one
process is below one in half a million, and each test checks that both served.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from google.protobuf import struct_pb2
from pacsd.admin.v1 import (
    addins_pb2,
    addins_pb2_grpc,
    associations_pb2,
    associations_pb2_grpc,
    logs_pb2,
    logs_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    storage_pb2,
    storage_pb2_grpc,
)
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from tests import corpus
from tests.conftest import PacsdProcess, run_pacsctl

ROOT = Path(__file__).resolve().parents[2]
SPY = ROOT / "tests" / "addins" / "spy.py"
FAULTY = ROOT / "tests" / "addins" / "faulty.py"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"
ASSOCIATIONS = 24


def status(channel: grpc.Channel) -> server_pb2.Server:
    stub = server_pb2_grpc.ServerServiceStub(channel)
    return stub.GetServer(server_pb2.GetServerRequest(), timeout=10).server


def associate(port: int, calling: str = "SCU") -> Association:
    ae = AE(ae_title=calling)
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(corpus.SECONDARY_CAPTURE)
    return ae.associate("127.0.0.1", port, ae_title="PACSD")


def echo_once(port: int, calling: str = "SCU") -> bool:
    """One association, one C-ECHO; True when accepted and answered with success."""
    assoc = associate(port, calling)
    if not assoc.is_established:
        return False
    try:
        answer = assoc.send_c_echo()
        return bool(answer) and answer.Status == 0
    finally:
        assoc.release()


def accepted_by_worker(server: server_pb2.Server) -> dict[int, int]:
    return {w.index: w.counters.associations_accepted for w in server.workers}


def test_two_workers_serve_one_port_and_each_instance_is_stored_once(
    server: PacsdProcess, channel: grpc.Channel, tmp_path: Path
) -> None:
    first = status(channel)
    assert [w.index for w in first.workers] == [0, 1]
    assert first.workers[1].pid not in (0, first.pid)
    assert first.workers[1].state == server_pb2.WORKER_STATE_SERVING

    sent: set[str] = set()
    repeat = None
    for n in range(ASSOCIATIONS):
        assoc = associate(server.dicom_port)
        assert assoc.is_established
        try:
            batch = [corpus.instance(patient_id=f"W{n}", number=i) for i in range(2)]
            if repeat is not None:  # a duplicate, on whichever process this association got
                batch.append(repeat)
            for ds in batch:
                answer = assoc.send_c_store(ds)
                assert answer.Status == 0, (n, answer)
                sent.add(ds.SOPInstanceUID)
            repeat = batch[0]
        finally:
            assoc.release()

    after = status(channel)
    served = accepted_by_worker(after)
    assert served[0] > 0 and served[1] > 0, served  # the kernel spread the connections
    assert after.counters.associations_accepted == sum(served.values()) >= ASSOCIATIONS

    storage = storage_pb2_grpc.StorageServiceStub(channel)
    stats = storage.GetStorageStats(storage_pb2.GetStorageStatsRequest(), timeout=10).stats
    assert stats.instances == len(sent) == 2 * ASSOCIATIONS
    files = [p.stem for p in (server.data_dir / "blobs").rglob("*.dcm")]
    assert sorted(files) == sorted(sent)  # each once, none missing, no stray copy
    assert not list((server.data_dir / "tmp").glob("*.part"))


def test_runtime_addin_load_and_unload_reach_every_worker(
    server: PacsdProcess, channel: grpc.Channel
) -> None:
    addins = addins_pb2_grpc.AddinServiceStub(channel)
    # The spy add-in rejects calling AE BADGUY from its association_requested hook.
    assert all(echo_once(server.dicom_port, "BADGUY") for _ in range(4))
    addins.LoadAddin(addins_pb2.LoadAddinRequest(name=str(SPY)), timeout=30)
    before = status(channel)
    outcomes = [echo_once(server.dicom_port, "BADGUY") for _ in range(ASSOCIATIONS)]
    assert not any(outcomes), outcomes  # refused by both processes, not half of them
    rejected = {
        w.index: w.counters.associations_rejected - b.counters.associations_rejected
        for w, b in zip(status(channel).workers, before.workers, strict=True)
    }
    assert rejected[0] > 0 and rejected[1] > 0, rejected

    addins.UnloadAddin(addins_pb2.UnloadAddinRequest(name="spy"), timeout=30)
    assert all(echo_once(server.dicom_port, "BADGUY") for _ in range(ASSOCIATIONS))


def test_association_list_and_log_stream_cover_both_workers(
    server: PacsdProcess, channel: grpc.Channel
) -> None:
    # The message log add-in logs each DIMSE message at INFO from now on, in every
    # process (a replicated settings change).
    settings = struct_pb2.Struct()
    settings.update({"level": "INFO"})
    addins_pb2_grpc.AddinServiceStub(channel).UpdateAddinSettings(
        addins_pb2.UpdateAddinSettingsRequest(name="message_log", settings=settings), timeout=30
    )
    held = [associate(server.dicom_port, f"HOLD{n}") for n in range(ASSOCIATIONS)]
    try:
        assert all(a.is_established for a in held)
        for assoc in held:
            assert assoc.send_c_echo().Status == 0
        listing = run_pacsctl(server, "-w", "json", "assoc", "list")
        assert listing.returncode == 0, listing.stderr
        stub = associations_pb2_grpc.AssociationServiceStub(channel)
        live = stub.ListAssociations(
            associations_pb2.ListAssociationsRequest(page_size=1000), timeout=10
        ).associations
        ours = [a for a in live if a.calling_ae.startswith("HOLD")]
        assert len(ours) == ASSOCIATIONS
        assert {a.worker for a in ours} == {0, 1}
        assert len({a.id for a in ours}) == ASSOCIATIONS
        for a in ours:
            assert a.id.startswith("w1.") == (a.worker == 1), a.id
            assert a.id in listing.stdout
        # An operator can act on an association whichever process serves it.
        remote = next(a for a in ours if a.worker == 1)
        got = stub.GetAssociation(associations_pb2.GetAssociationRequest(id=remote.id))
        assert got.association.calling_ae == remote.calling_ae
        stub.AbortAssociation(associations_pb2.AbortAssociationRequest(id=remote.id), timeout=30)
        left = stub.ListAssociations(associations_pb2.ListAssociationsRequest())
        assert remote.id not in {a.id for a in left.associations}
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()

    # The log stream of the control plane carries both processes' records.
    logs = logs_pb2_grpc.LogServiceStub(channel)
    deadline = time.monotonic() + 10
    ids: set[str] = set()
    while time.monotonic() < deadline:
        records = [
            item.record
            for item in logs.StreamLogs(logs_pb2.StreamLogsRequest(tail=5000), timeout=10)
            if item.HasField("record")
        ]
        ids = {r.association_id for r in records if r.calling_ae.startswith("HOLD")}
        if any(i.startswith("w1.") for i in ids) and any(not i.startswith("w1.") for i in ids):
            break
        time.sleep(0.2)
    assert {a.id for a in ours} <= ids, sorted({a.id for a in ours} - ids)
    relayed = [r for r in records if r.association_id.startswith("w1.")]
    assert all(r.extras.get("worker") == "1" for r in relayed)


def _wait_gone(pid: int, timeout: float = 10) -> None:
    """Until the supervisor has reaped ``pid`` (signals are delivered asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still exists")


def test_killed_worker_is_restarted_while_the_other_serves(
    server: PacsdProcess, channel: grpc.Channel
) -> None:
    addins = addins_pb2_grpc.AddinServiceStub(channel)
    addins.LoadAddin(addins_pb2.LoadAddinRequest(name=str(SPY)), timeout=30)
    victim = status(channel).workers[1]
    os.kill(victim.pid, signal.SIGKILL)
    _wait_gone(victim.pid)
    # The first process keeps serving while worker 1 is down (the kernel took the dead
    # socket out of the group; connections it had queued when it died are lost).
    for _ in range(10):
        assert echo_once(server.dicom_port)
    deadline = time.monotonic() + 30
    now = status(channel)
    while time.monotonic() < deadline:
        now = status(channel)
        w = now.workers[1]
        if w.state == server_pb2.WORKER_STATE_SERVING and w.pid != victim.pid:
            break
        time.sleep(0.2)
    restarted = now.workers[1]
    assert restarted.state == server_pb2.WORKER_STATE_SERVING, now
    assert restarted.pid != victim.pid and restarted.restarts == 1
    assert "worker 1 (pid" in server.stderr() and "restarting it" in server.stderr()
    # The new worker serves, with the add-in loaded at runtime before the crash.
    outcomes = [echo_once(server.dicom_port, "BADGUY") for _ in range(ASSOCIATIONS)]
    assert not any(outcomes), outcomes
    assert status(channel).workers[1].counters.associations_rejected > 0
    assert all(echo_once(server.dicom_port) for _ in range(4))


def test_status_and_metrics_add_up_every_worker(
    start_pacsd: Callable[..., PacsdProcess],
) -> None:
    server = start_pacsd(env={"PACSD_WORKERS": "2", "PACSD_METRICS_PORT": "0"})
    for _ in range(ASSOCIATIONS):
        assert echo_once(server.dicom_port)
    with grpc.insecure_channel(server.endpoint) as ch:
        now = status(ch)
    served = accepted_by_worker(now)
    assert served[0] > 0 and served[1] > 0, served
    assert now.counters.associations_accepted == sum(served.values()) == ASSOCIATIONS

    port = next(item.port for item in now.listeners if item.protocol == "metrics")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as rsp:
        text = rsp.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("pacsd_associations_accepted_total", ())] == ASSOCIATIONS
    echoes = samples[
        (
            "pacsd_dimse_messages_total",
            (("direction", "received"), ("service", "C-ECHO"), ("type", "request")),
        )
    ]
    assert echoes == ASSOCIATIONS
    assert samples[("pacsd_addin_healthy", (("addin", "verification"),))] == 1
    assert samples[("pacsd_info", (("version", now.version),))] == 1

    # The add-in's own counters, as the control plane shows them: every worker's calls.
    with grpc.insecure_channel(server.endpoint) as ch:
        addins = addins_pb2_grpc.AddinServiceStub(ch)
        one = addins.GetAddin(addins_pb2.GetAddinRequest(name="verification"), timeout=10)
        listed = addins.ListAddins(addins_pb2.ListAddinsRequest(), timeout=10).addins
    assert one.addin.counters.calls == ASSOCIATIONS, one.addin.counters
    assert one.addin.healthy
    assert [a.counters.calls for a in listed if a.name == "verification"] == [ASSOCIATIONS]
    out = run_pacsctl(server, "-w", "json", "addin", "get", "verification")
    assert out.returncode == 0, out.stderr
    assert int(json.loads(out.stdout)["addin"]["counters"]["calls"]) == ASSOCIATIONS

    out = run_pacsctl(server, "status")
    assert out.returncode == 0, out.stderr
    assert "WORKERS" in out.stdout
    for worker in now.workers:
        assert str(worker.pid) in out.stdout


def test_an_addin_unhealthy_in_one_worker_is_unhealthy_for_the_server(
    start_pacsd: Callable[..., PacsdProcess], tmp_path: Path
) -> None:
    """A handler that outlives its time limit on the second process: the control
    plane, served by the first, reports the add-in unhealthy and says where."""
    config = tmp_path / "no-storage.toml"
    config.write_text("[addins.storage]\nenabled = false\n")  # faulty takes MR instead
    server = start_pacsd(["--config", str(config)], env={"PACSD_WORKERS": "2"})
    with grpc.insecure_channel(server.endpoint) as ch:
        addins = addins_pb2_grpc.AddinServiceStub(ch)
        listing = associations_pb2_grpc.AssociationServiceStub(ch)
        addins.LoadAddin(addins_pb2.LoadAddinRequest(name=str(FAULTY)), timeout=30)
        ae = AE(ae_title="SCU")
        ae.add_requested_context(MR_IMAGE, ExplicitVRLittleEndian)
        for _ in range(ASSOCIATIONS):  # until the kernel gives one to the second worker
            assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="PACSD")
            assert assoc.is_established
            port = assoc.dul.socket.socket.getsockname()[1]
            live = listing.ListAssociations(
                associations_pb2.ListAssociationsRequest(), timeout=10
            ).associations
            if any(a.peer_port == port and a.worker == 1 for a in live):
                break
            assoc.release()
        else:
            raise AssertionError(f"none of {ASSOCIATIONS} associations reached worker 1")
        try:
            ds = corpus.instance(patient_id="HANG", sop_class=MR_IMAGE, modality="MR")
            assert assoc.send_c_store(ds).Status == 0x0110  # answered at the 1 s limit
        finally:
            assoc.release()

        got = addins.GetAddin(addins_pb2.GetAddinRequest(name="faulty"), timeout=10).addin
        listed = [
            a
            for a in addins.ListAddins(addins_pb2.ListAddinsRequest(), timeout=10).addins
            if a.name == "faulty"
        ]
    assert not got.healthy, got
    assert got.error.startswith("worker 1: ") and "time limit" in got.error, got.error
    assert got.counters.timeouts == 1 and got.counters.calls == 1, got.counters
    assert [(a.healthy, a.error, a.counters.timeouts) for a in listed] == [(False, got.error, 1)]


def test_pause_and_runtime_settings_reach_every_worker(
    server: PacsdProcess, channel: grpc.Channel
) -> None:
    stub = server_pb2_grpc.ServerServiceStub(channel)
    stub.PauseServer(server_pb2.PauseServerRequest(), timeout=30)
    assert not any(echo_once(server.dicom_port) for _ in range(ASSOCIATIONS))
    paused = {w.index: w.counters.associations_rejected for w in status(channel).workers}
    assert paused[0] > 0 and paused[1] > 0, paused
    stub.ResumeServer(server_pb2.ResumeServerRequest(), timeout=30)
    assert all(echo_once(server.dicom_port) for _ in range(ASSOCIATIONS))

    # A runtime setting: one association per process at a time.
    settings = struct_pb2.Struct()
    settings.update({"max_associations": 1})
    stub.UpdateSettings(server_pb2.UpdateSettingsRequest(settings=settings), timeout=30)
    held = [associate(server.dicom_port) for _ in range(12)]
    try:
        established = [a for a in held if a.is_established]
        # Each process took one and refused the rest.
        assert len(established) == 2, len(established)
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()
