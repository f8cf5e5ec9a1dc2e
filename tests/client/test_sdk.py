"""The Python SDK (pacsd.client) against real pacsd processes."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from pacsd.admin.v1 import server_pb2
from pacsd.client import (
    Change,
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PacsdError,
    ServerUnavailable,
    message_to_dict,
    message_to_json,
)
from pynetdicom import AE

from tests.conftest import PacsdProcess

VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def client(pacsd: PacsdProcess) -> Iterator[Client]:
    with Client(pacsd.endpoint, timeout=10) as c:
        yield c


def c_echo(port: int, ae_title: str = "PACSD") -> int:
    """One association with one C-ECHO; returns the DIMSE status."""
    ae = AE()
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established, "association was not accepted"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    return int(status.Status)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Counters are bumped on server threads; give them a moment instead of sleeping."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listeners(server: server_pb2.Server) -> dict[str, server_pb2.Listener]:
    return {item.protocol: item for item in server.listeners}


def test_get_describes_the_running_server(pacsd: PacsdProcess, client: Client) -> None:
    server = client.server.get()

    assert server.version
    assert server.api_version == "v1"
    assert server.state == server_pb2.SERVER_STATE_RUNNING
    assert server.pid == pacsd.proc.pid
    assert server.data_dir == str(pacsd.data_dir.resolve())
    by_protocol = listeners(server)
    assert set(by_protocol) == {"dicom", "control"}
    assert by_protocol["dicom"].port == pacsd.dicom_port
    assert by_protocol["dicom"].ae_title == "PACSD"
    assert by_protocol["dicom"].listening
    assert by_protocol["control"].port == pacsd.control_port
    assert by_protocol["control"].listening
    assert server.HasField("start_time")
    started = server.start_time.ToDatetime(tzinfo=UTC)
    now = datetime.now(UTC)
    assert now - timedelta(minutes=2) < started <= now + timedelta(seconds=1)


def test_pause_and_resume_are_idempotent(client: Client) -> None:
    first = client.server.pause()
    assert isinstance(first, Change)
    assert first.changed is True
    assert first.server.state == server_pb2.SERVER_STATE_PAUSED

    again = client.server.pause()
    assert again.changed is False
    assert again.server.state == server_pb2.SERVER_STATE_PAUSED

    resumed = client.server.resume()
    assert resumed.changed is True
    assert resumed.server.state == server_pb2.SERVER_STATE_RUNNING
    assert client.server.resume().changed is False


def test_resume_while_stopped_is_refused_then_start_rebinds(
    pacsd: PacsdProcess, client: Client
) -> None:
    stopped = client.server.stop(grace_period=0)
    assert stopped.changed is True
    assert stopped.server.state == server_pb2.SERVER_STATE_STOPPED
    assert listeners(stopped.server)["dicom"].listening is False
    assert client.server.stop(grace_period=0).changed is False

    with pytest.raises(FailedPrecondition) as caught:
        client.server.resume()
    assert caught.value.reason == "SERVER_STOPPED"
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.endpoint == pacsd.endpoint
    assert not caught.value.unreachable
    with pytest.raises(FailedPrecondition):
        client.server.pause()

    started = client.server.start()
    assert started.changed is True
    assert started.server.state == server_pb2.SERVER_STATE_RUNNING
    assert listeners(started.server)["dicom"].port == pacsd.dicom_port
    assert client.server.start().changed is False
    assert c_echo(pacsd.dicom_port) == 0x0000


def test_start_reports_a_taken_dicom_port(pacsd: PacsdProcess, client: Client) -> None:
    client.server.stop(grace_period=0)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", pacsd.dicom_port))
        squatter.listen(1)
        with pytest.raises(PacsdError) as caught:
            client.server.start()
    error = caught.value
    assert isinstance(error, ServerUnavailable)
    assert error.reason == "DICOM_PORT_IN_USE"
    assert error.metadata["port"] == str(pacsd.dicom_port)
    # An answer from the server, not a connection failure.
    assert not error.unreachable
    assert client.server.get().state == server_pb2.SERVER_STATE_STOPPED

    assert client.server.start().changed is True


def test_nothing_listening_raises_server_unavailable() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    with Client(endpoint, timeout=5) as c, pytest.raises(ServerUnavailable) as caught:
        c.server.get()
    assert caught.value.unreachable
    assert caught.value.reason == ""
    assert caught.value.endpoint == endpoint
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


def test_deadline_while_connecting_counts_as_unreachable() -> None:
    # A socket that accepts TCP but never speaks HTTP/2: the call hangs in CONNECTING.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        endpoint = f"127.0.0.1:{mute.getsockname()[1]}"
        with Client(endpoint, timeout=1) as c, pytest.raises(DeadlineExceeded) as caught:
            c.server.get()
    assert caught.value.unreachable


def test_counters_rise_after_c_echo(pacsd: PacsdProcess, client: Client) -> None:
    before = client.server.get().counters
    assert c_echo(pacsd.dicom_port) == 0x0000
    assert c_echo(pacsd.dicom_port) == 0x0000

    def risen() -> bool:
        now = client.server.get().counters
        return (
            now.associations_accepted == before.associations_accepted + 2
            and now.dimse_messages_received >= before.dimse_messages_received + 2
            and now.dimse_messages_sent >= before.dimse_messages_sent + 2
            and now.active_associations == 0
        )

    assert eventually(risen), client.server.get().counters


def test_paused_server_rejects_and_counts(pacsd: PacsdProcess, client: Client) -> None:
    client.server.pause()
    ae = AE()
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", pacsd.dicom_port, ae_title="PACSD")
    assert assoc.is_rejected
    assert eventually(lambda: client.server.get().counters.associations_rejected == 1)
    client.server.resume()
    assert c_echo(pacsd.dicom_port) == 0x0000


def test_health_follows_the_dicom_listener(client: Client) -> None:
    assert client.health() == "SERVING"
    assert client.health("pacsd.dicom") == "SERVING"

    client.server.pause()
    assert client.health("pacsd.dicom") == "NOT_SERVING"
    assert client.health("") == "SERVING"

    client.server.resume()
    assert client.health("pacsd.dicom") == "SERVING"

    client.server.stop(grace_period=0)
    assert client.health("pacsd.dicom") == "NOT_SERVING"
    assert client.health("no.such.service") == "SERVICE_UNKNOWN"


def test_invalid_grace_period(client: Client) -> None:
    with pytest.raises(InvalidArgument) as server_side:
        client.server.stop(grace_period=-1)
    assert server_side.value.reason == "INVALID_ARGUMENT"
    assert server_side.value.metadata == {"field": "grace_period"}

    with pytest.raises(InvalidArgument) as client_side:
        client.server.stop(grace_period=float("nan"))
    assert client_side.value.metadata == {"field": "grace_period"}

    assert client.server.get().state == server_pb2.SERVER_STATE_RUNNING


def test_shutdown_ends_the_process_with_status_0(pacsd: PacsdProcess, client: Client) -> None:
    client.shutdown(grace_period=0)
    assert pacsd.wait(timeout=30) == 0
    with pytest.raises(ServerUnavailable) as caught:
        client.health()
    assert caught.value.unreachable


def test_client_rejects_useless_settings() -> None:
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            Client(timeout=bad)
    with pytest.raises(ValueError):
        Client("")


def test_closed_client_refuses_calls(pacsd: PacsdProcess) -> None:
    c = Client(pacsd.endpoint)
    c.close()
    c.close()  # idempotent
    with pytest.raises(ValueError):
        c.server.get()


def test_json_helper_on_a_live_server(client: Client) -> None:
    data = json.loads(message_to_json(client.server.get()))
    assert data["state"] == "SERVER_STATE_RUNNING"
    assert data["api_version"] == "v1"
    counters = data["counters"]
    assert set(counters) == {
        "active_associations",
        "associations_accepted",
        "associations_rejected",
        "associations_aborted",
        "dimse_messages_received",
        "dimse_messages_sent",
    }
    assert all(type(v) is int for v in counters.values())
    assert datetime.fromisoformat(data["start_time"]).tzinfo is not None
    assert data["start_time"].endswith("Z")
    assert {item["protocol"] for item in data["listeners"]} == {"dicom", "control"}


def test_json_helper_keeps_int64_numeric_and_defaults() -> None:
    msg = server_pb2.Server(counters=server_pb2.Counters(associations_accepted=2**62))
    data = message_to_dict(msg)
    assert data["counters"]["associations_accepted"] == 2**62
    assert data["counters"]["associations_rejected"] == 0
    assert data["version"] == ""
    assert data["pid"] == 0
    assert data["state"] == "SERVER_STATE_UNSPECIFIED"
    assert data["listeners"] == []
    assert data["start_time"] is None  # unset message: null, not a fake epoch

    empty = message_to_dict(server_pb2.Server())
    assert empty["counters"] is None

    # An enum number this client does not know survives as a number.
    assert message_to_dict(server_pb2.Server(state=42))["state"] == 42  # type: ignore[arg-type]

    request = server_pb2.StopServerRequest()
    request.grace_period.FromTimedelta(timedelta(seconds=1.5))
    assert message_to_dict(request) == {"grace_period": "1.500s"}


def _edge_case_message() -> type[Any]:
    """A throwaway proto3 message with the field kinds our own protos do not use yet."""
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tests/client/edge.proto", package="edge", syntax="proto3"
    )
    msg = proto.message_type.add(name="Edge")
    msg.oneof_decl.add(name="choice")
    msg.oneof_decl.add(name="_maybe")
    msg.field.add(name="text", number=1, type=f.TYPE_STRING, oneof_index=0)
    msg.field.add(name="big", number=2, type=f.TYPE_INT64, oneof_index=0)
    msg.field.add(name="maybe", number=3, type=f.TYPE_INT64, oneof_index=1, proto3_optional=True)
    msg.field.add(name="ratio", number=4, type=f.TYPE_DOUBLE)
    msg.field.add(name="blob", number=5, type=f.TYPE_BYTES)
    entry = msg.nested_type.add(name="TagsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=f.TYPE_BOOL)
    entry.field.add(name="value", number=2, type=f.TYPE_UINT64)
    msg.field.add(
        name="tags",
        number=6,
        type=f.TYPE_MESSAGE,
        type_name=".edge.Edge.TagsEntry",
        label=f.LABEL_REPEATED,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    cls: type[Any] = message_factory.GetMessageClass(pool.FindMessageTypeByName("edge.Edge"))
    return cls


def test_json_helper_edge_cases() -> None:
    edge = _edge_case_message()
    # Unset: the oneof is absent, the optional scalar is null, plain fields default.
    assert message_to_dict(edge()) == {"maybe": None, "ratio": 0.0, "blob": "", "tags": {}}

    full = edge(big=2**63 - 1, maybe=0, ratio=float("nan"), blob=b"\x00\xff")
    full.tags[True] = 2**64 - 1
    data = json.loads(message_to_json(full))
    assert data == {
        "big": 2**63 - 1,
        "maybe": 0,
        "ratio": "NaN",
        "blob": "AP8=",
        "tags": {"true": 2**64 - 1},
    }
