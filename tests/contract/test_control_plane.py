"""The control plane speaks standard gRPC: health, reflection, ErrorInfo on errors.

These use raw generated stubs (not the SDK) so they pin the wire contract itself.
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from pacsd.admin.v1 import server_pb2, server_pb2_grpc

from tests.conftest import PacsdProcess


@pytest.fixture
def channel(pacsd: PacsdProcess):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(pacsd.endpoint) as ch:
        yield ch


def test_health_reports_process_and_listener(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    stub = server_pb2_grpc.ServerServiceStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    check = lambda name: health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status  # noqa: E731
    assert check("") == serving
    assert check("pacsd.dicom") == serving
    stub.PauseServer(server_pb2.PauseServerRequest(), timeout=5)
    assert check("pacsd.dicom") == not_serving
    assert check("") == serving
    stub.ResumeServer(server_pb2.ResumeServerRequest(), timeout=5)
    assert check("pacsd.dicom") == serving


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {
        "pacsd.admin.v1.ServerService",
        "pacsd.admin.v1.LogService",
        "pacsd.admin.v1.AssociationService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_errors_carry_error_info(channel: grpc.Channel) -> None:
    stub = server_pb2_grpc.ServerServiceStub(channel)
    stub.StopServer(server_pb2.StopServerRequest(), timeout=15)
    with pytest.raises(grpc.RpcError) as err:
        stub.ResumeServer(server_pb2.ResumeServerRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(err.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.domain, info.reason) == ("pacsd", "SERVER_STOPPED")


def test_negative_grace_period_is_invalid_argument(channel: grpc.Channel) -> None:
    stub = server_pb2_grpc.ServerServiceStub(channel)
    request = server_pb2.StopServerRequest()
    request.grace_period.seconds = -1
    with pytest.raises(grpc.RpcError) as err:
        stub.StopServer(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    assert info.reason == "INVALID_ARGUMENT" and info.metadata["field"] == "grace_period"


def test_state_changes_are_idempotent(channel: grpc.Channel) -> None:
    stub = server_pb2_grpc.ServerServiceStub(channel)
    assert stub.PauseServer(server_pb2.PauseServerRequest(), timeout=5).changed
    again = stub.PauseServer(server_pb2.PauseServerRequest(), timeout=5)
    assert not again.changed and again.server.state == server_pb2.SERVER_STATE_PAUSED
    assert stub.StopServer(server_pb2.StopServerRequest(), timeout=15).changed
    assert not stub.StopServer(server_pb2.StopServerRequest(), timeout=15).changed
    started = stub.StartServer(server_pb2.StartServerRequest(), timeout=5)
    assert started.changed and started.server.state == server_pb2.SERVER_STATE_RUNNING
    assert not stub.StartServer(server_pb2.StartServerRequest(), timeout=5).changed
