"""The consolidated log, read remotely: live streams, tail, levels, sinks, audit trail.

Every test runs a real ``pacsd serve`` and real DCMTK peers, and reads the log through
the SDK, the raw gRPC stubs or ``pacsctl``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from pacsd.admin.v1 import associations_pb2, logs_pb2, logs_pb2_grpc
from pacsd.client import Client
from pacsd.client.errors import NotFound

from tests import corpus
from tests.conftest import PacsdProcess, run_pacsctl
from tests.observability.common import CALLING, Reader, echoscu, start_with, storescu

ACCEPTED = associations_pb2.ASSOCIATION_EVENT_TYPE_ACCEPTED
#: message_log at INFO, so every DIMSE message is a record at the default level.
MESSAGE_LOG_INFO = '[addins.message_log.settings]\nlevel = "INFO"\n'


def _store_records(records: list[Any], sop_uid: str) -> list[Any]:
    return [
        r
        for r in records
        if r.source == "message_log" and "C-STORE" in r.message and sop_uid in r.message
    ]


def test_following_streams_get_a_c_store_within_a_second(start_pacsd: Any, tmp_path: Path) -> None:
    pacsd = start_with(start_pacsd, tmp_path, MESSAGE_LOG_INFO)
    [path] = corpus.series_files(tmp_path / "src", 1)
    sop_uid = path.stem
    with Client(pacsd.endpoint) as client:
        # Three followers at once, each with the last record first, so each is known
        # to be subscribed before any traffic.
        followers = [Reader(client.logs.stream(follow=True, tail=1)) for _ in range(3)]
        events = Reader(client.associations.watch(lifecycle_only=True))
        for follower in followers:
            assert follower.wait_for(lambda items: len(items) >= 1, 5), follower.error
        assert echoscu(pacsd.dicom_port).returncode == 0  # proves the watch is live
        assert events.wait_for(lambda es: any(e.calling_ae == CALLING for e in es), 5)

        out = storescu(pacsd.dicom_port, [path])
        sent_at = time.time()
        assert out.returncode == 0, out.stdout + out.stderr
        for follower in followers:
            items = follower.wait_for(lambda rs: len(_store_records(rs, sop_uid)) >= 2, 1.0)
            store = [(at, r) for at, r in items if _store_records([r], sop_uid)]
            assert len(store) == 2, [r.message for _, r in items]
            for arrived, record in store:
                assert arrived - sent_at <= 1.0
                assert arrived - record.time.ToNanoseconds() / 1e9 <= 1.0

        def accepted(es: list[Any]) -> list[Any]:
            return [e for e in es if e.type == ACCEPTED and e.calling_ae == CALLING]

        seen = [e for _, e in events.wait_for(lambda es: len(accepted(es)) >= 2, 2)]
        store_assoc = accepted(seen)[1].association_id  # the storescu's (after the echo's)
        rq, rsp = (r for _, r in store)
        assert "received C-STORE-RQ" in rq.message and "sent C-STORE-RSP" in rsp.message
        assert "status=0x0000" in rsp.message
        for record in (rq, rsp):
            assert record.association_id == store_assoc
            assert (record.calling_ae, record.called_ae) == (CALLING, "PACSD")
            assert record.peer.startswith("127.0.0.1:")
            assert record.level == logs_pb2.LOG_LEVEL_INFO
            assert record.extras["dimse_service"] == "C-STORE"
        assert rq.sequence < rsp.sequence
        for follower in (*followers, events):
            follower.stop()
            assert follower.error is None, follower.error


def test_tail_gives_the_last_records_kept_in_memory(start_pacsd: Any, tmp_path: Path) -> None:
    pacsd = start_with(start_pacsd, tmp_path, MESSAGE_LOG_INFO)
    [path] = corpus.series_files(tmp_path / "src", 1)
    assert storescu(pacsd.dicom_port, [path]).returncode == 0

    out = run_pacsctl(pacsd, "-w", "json", "logs", "--tail", "2", "--source", "message_log")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 2
    rq, rsp = (line["record"] for line in lines)
    assert "C-STORE-RQ" in rq["message"] and path.stem in rq["message"]
    assert "C-STORE-RSP" in rsp["message"]
    assert rq["sequence"] < rsp["sequence"]
    assert rq["calling_ae"] == CALLING and rq["association_id"] == rsp["association_id"]

    text = run_pacsctl(pacsd, "logs", "--tail", "3")
    assert text.returncode == 0, text.stderr
    assert len(text.stdout.splitlines()) == 3
    assert "[message_log " in text.stdout and f"{CALLING}->PACSD] sent C-STORE-RSP" in text.stdout

    # The level filter applies to the tail: nothing at WARNING or above was logged.
    quiet = run_pacsctl(pacsd, "-w", "json", "logs", "--level", "WARNING")
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stdout
    with Client(pacsd.endpoint) as client:
        by_assoc = client.logs.tail(100, association_id=rq["association_id"])
        assert {r.association_id for r in by_assoc} == {rq["association_id"]}
        assert len(by_assoc) == 2
        by_ae = client.logs.tail(100, ae_title=CALLING)
        assert len(by_ae) == 2


def test_a_stalled_follower_never_slows_dicom_and_its_drops_are_counted(
    start_pacsd: Any, tmp_path: Path
) -> None:
    pacsd = start_with(start_pacsd, tmp_path, "log_stream_queue_size = 20\n" + MESSAGE_LOG_INFO)
    first = corpus.series_files(tmp_path / "a", 150, pixels=8)
    second = corpus.series_files(tmp_path / "b", 150, pixels=8)

    started = time.monotonic()
    out = storescu(pacsd.dicom_port, first)
    baseline = time.monotonic() - started
    assert out.returncode == 0, out.stderr

    # gRPC buffers what a client has not read up to the client's flow-control window,
    # which a default client grows to megabytes on loopback (BDP probing); this one keeps
    # it small, like a client on a slow link, so the server's own queue is what fills.
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)]
    with grpc.insecure_channel(pacsd.endpoint, options=options) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        # Opened and never read while the traffic runs.
        stalled = stub.StreamLogs(logs_pb2.StreamLogsRequest(follow=True))
        time.sleep(0.5)
        started = time.monotonic()
        out = storescu(pacsd.dicom_port, second)
        loaded = time.monotonic() - started
        assert out.returncode == 0, out.stderr
        assert loaded < 3 * baseline + 2.0, (baseline, loaded)

        with Client(pacsd.endpoint) as client:
            stats = client.storage.stats()
        assert stats.instances == 300

        # Now read: the server reports what it had to drop for this reader.
        reader = Reader(stalled)
        items = reader.wait_for(lambda rs: any(r.WhichOneof("item") == "dropped" for r in rs), 10)
        reader.stop()
    notices = [r.dropped for _, r in items if r.WhichOneof("item") == "dropped"]
    assert notices, f"no drop notice after {len(items)} items"
    assert notices[0].count > 0 and notices[0].total >= notices[0].count


def test_levels_change_at_runtime_per_source(start_pacsd: Any, tmp_path: Path) -> None:
    pacsd = start_with(start_pacsd, tmp_path, "")  # message_log logs at DEBUG: off at INFO
    with Client(pacsd.endpoint) as client:
        follower = Reader(client.logs.stream(follow=True, sources=["message_log"]))
        time.sleep(0.3)
        assert echoscu(pacsd.dicom_port).returncode == 0
        time.sleep(0.5)
        assert follower.snapshot() == []

        out = run_pacsctl(pacsd, "log-level", "DEBUG", "--source", "message_log")
        assert out.returncode == 0 and "set to DEBUG" in out.stdout, out.stdout + out.stderr
        levels = client.logs.levels()
        assert levels.default == "INFO" and levels.sources["message_log"] == "DEBUG"
        assert echoscu(pacsd.dicom_port).returncode == 0
        items = follower.wait_for(lambda rs: len(rs) >= 2, 5)
        assert [r.level for _, r in items][:2] == [logs_pb2.LOG_LEVEL_DEBUG] * 2
        assert "received C-ECHO-RQ" in items[0][1].message

        again = run_pacsctl(pacsd, "log-level", "DEBUG", "--source", "message_log")
        assert "no change" in again.stdout
        out = run_pacsctl(pacsd, "log-level", "default", "--source", "message_log")
        assert out.returncode == 0, out.stderr
        assert "message_log" not in client.logs.levels().sources
        count = len(follower.snapshot())
        assert echoscu(pacsd.dicom_port).returncode == 0
        time.sleep(0.5)
        assert len(follower.snapshot()) == count
        follower.stop()

        with pytest.raises(NotFound) as err:
            client.logs.set_level("DEBUG", source="no_such_addin")
        assert err.value.reason == "LOG_SOURCE_NOT_FOUND"


def test_file_sinks_text_and_json_lines_rotate(start_pacsd: Any, tmp_path: Path) -> None:
    text_log = tmp_path / "logs" / "pacsd.log"
    json_log = tmp_path / "logs" / "pacsd.jsonl"
    pacsd = start_with(
        start_pacsd,
        tmp_path,
        f'log_file = "{text_log}"\nlog_json_file = "{json_log}"\n'
        "log_file_max_bytes = 1500\nlog_file_backups = 2\n" + MESSAGE_LOG_INFO,
    )
    for _ in range(12):
        assert echoscu(pacsd.dicom_port).returncode == 0
    assert Path(f"{json_log}.1").is_file() and Path(f"{text_log}.1").is_file()
    assert not Path(f"{json_log}.3").exists()  # two backups kept, no more
    documents = [json.loads(line) for line in json_log.read_text().splitlines()]
    echoes = [d for d in documents if d["source"] == "message_log"]
    assert echoes, documents
    doc = echoes[-1]
    assert doc["level"] == "INFO" and doc["calling_ae"] == CALLING and doc["called_ae"] == "PACSD"
    assert doc["association_id"].startswith("a") and doc["time"].endswith("Z")
    assert doc["extras"]["dimse_service"] == "C-ECHO"
    assert "[message_log a" in text_log.read_text()


def test_state_changing_calls_are_audited(pacsd: PacsdProcess) -> None:
    assert run_pacsctl(pacsd, "server", "pause").returncode == 0
    assert run_pacsctl(pacsd, "server", "resume").returncode == 0
    assert run_pacsctl(pacsd, "status").returncode == 0  # a read: not audited
    bad = run_pacsctl(pacsd, "storage", "delete", "study", "1.2.abc")
    assert bad.returncode == 1
    secret = run_pacsctl(pacsd, "addin", "settings", "message_log", "--set", "password=hunter2")
    assert secret.returncode != 0

    with Client(pacsd.endpoint) as client:
        audit = client.logs.tail(50, sources=["control"])
    assert all(r.level == logs_pb2.LOG_LEVEL_AUDIT for r in audit)
    rpcs = [r.extras["rpc"] for r in audit]
    assert rpcs == [
        "pacsd.admin.v1.ServerService/PauseServer",
        "pacsd.admin.v1.ServerService/ResumeServer",
        "pacsd.admin.v1.StorageService/DeleteStudy",
        "pacsd.admin.v1.AddinService/UpdateAddinSettings",
    ], rpcs
    pause, _, delete, settings = audit
    assert pause.extras["code"] == "OK" and pause.extras["client"].startswith("ipv4:127.0.0.1:")
    assert "pacsctl" in pause.extras["user_agent"] or pause.extras["user_agent"]
    assert float(pause.extras["duration_ms"]) >= 0
    assert delete.extras["code"] == "INVALID_ARGUMENT" and delete.extras["reason"] == "INVALID_UID"
    assert json.loads(delete.extras["request"]) == {"study_instance_uid": "1.2.abc"}
    assert "hunter2" not in settings.message and "hunter2" not in settings.extras["request"]
    assert '"password":"***"' in settings.extras["request"]
    text = run_pacsctl(pacsd, "logs", "--source", "control")
    assert "AUDIT   [control] ServerService.PauseServer by ipv4:127.0.0.1:" in text.stdout


def test_streams_are_bounded_and_unary_calls_keep_working(pacsd: PacsdProcess) -> None:
    with grpc.insecure_channel(pacsd.endpoint) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        request = logs_pb2.StreamLogsRequest(follow=True, tail=1)
        streams = [stub.StreamLogs(request) for _ in range(32)]
        for stream in streams:
            next(stream)  # each is open on the server, its tail sent
        with pytest.raises(grpc.RpcError) as err:
            next(stub.StreamLogs(request))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "32 streams are open already" in (err.value.details() or "")
        with Client(pacsd.endpoint) as client:
            assert client.server.get().pid > 0  # unary calls still have threads
            assert client.logs.tail(1)  # and so does a tail without follow
        streams.pop().cancel()
        deadline = time.monotonic() + 5
        while True:  # the cancelled stream's slot comes back
            try:
                again = stub.StreamLogs(request)
                next(again)
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline, "the slot never came back"
                time.sleep(0.1)
        for stream in [*streams, again]:
            stream.cancel()
        with pytest.raises(grpc.RpcError) as err:
            next(stub.StreamLogs(logs_pb2.StreamLogsRequest(tail=-1)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
