"""``pacsd.admin.v1.ServerService``: thin mapping from RPCs to the Runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from pacsd.admin.v1 import errors_pb2, server_pb2, server_pb2_grpc
from pacsd.server.control.errors import ControlError, rpc
from pacsd.server.dicom.listener import BindError, ListenerState, ListenerStoppedError

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime

_STATES = {
    ListenerState.RUNNING: server_pb2.SERVER_STATE_RUNNING,
    ListenerState.PAUSED: server_pb2.SERVER_STATE_PAUSED,
    ListenerState.STOPPED: server_pb2.SERVER_STATE_STOPPED,
}


class ServerServicer(server_pb2_grpc.ServerServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _server(self) -> server_pb2.Server:
        rt = self._rt
        rt.refresh_health()
        listener = rt.listener
        active, counters = listener.tracker.snapshot()
        msg = server_pb2.Server(
            version=rt.version,
            api_version=rt.api_version,
            state=(
                server_pb2.SERVER_STATE_SHUTTING_DOWN
                if rt.shutting_down
                else _STATES[listener.state]
            ),
            data_dir=str(rt.settings.data_dir.resolve()),
            pid=rt.pid,
            counters=server_pb2.Counters(
                active_associations=active,
                associations_accepted=counters.associations_accepted,
                associations_rejected=counters.associations_rejected,
                associations_aborted=counters.associations_aborted,
                dimse_messages_received=counters.dimse_messages_received,
                dimse_messages_sent=counters.dimse_messages_sent,
            ),
        )
        msg.start_time.FromDatetime(rt.started_at)
        msg.listeners.add(
            protocol="dicom",
            ae_title=rt.settings.ae_title,
            host=listener.host,
            port=listener.port,
            tls=False,
            listening=listener.state is not ListenerState.STOPPED,
        )
        msg.listeners.add(
            protocol="control",
            host=rt.settings.control_host,
            port=rt.control_port,
            tls=False,
            listening=True,
        )
        if rt.metrics is not None:
            msg.listeners.add(
                protocol="metrics",
                host=rt.metrics.host,
                port=rt.metrics.port,
                tls=False,
                listening=True,
            )
        return msg

    def _refuse_if_shutting_down(self) -> None:
        if self._rt.shutting_down:
            raise ControlError(
                grpc.StatusCode.FAILED_PRECONDITION,
                errors_pb2.SHUTTING_DOWN,
                "the server is shutting down",
            )

    @rpc
    def GetServer(
        self, request: server_pb2.GetServerRequest, context: grpc.ServicerContext
    ) -> server_pb2.GetServerResponse:
        return server_pb2.GetServerResponse(server=self._server())

    @rpc
    def StartServer(
        self, request: server_pb2.StartServerRequest, context: grpc.ServicerContext
    ) -> server_pb2.StartServerResponse:
        self._refuse_if_shutting_down()
        try:
            changed = self._rt.listener.start()
        except BindError as exc:
            raise ControlError(
                grpc.StatusCode.UNAVAILABLE if exc.in_use else grpc.StatusCode.FAILED_PRECONDITION,
                errors_pb2.DICOM_PORT_IN_USE if exc.in_use else errors_pb2.DICOM_BIND_FAILED,
                str(exc),
                {"host": exc.host, "port": str(exc.port)},
            ) from exc
        return server_pb2.StartServerResponse(server=self._server(), changed=changed)

    @rpc
    def StopServer(
        self, request: server_pb2.StopServerRequest, context: grpc.ServicerContext
    ) -> server_pb2.StopServerResponse:
        self._refuse_if_shutting_down()
        grace = self._grace(request)
        changed = self._rt.listener.stop(grace, wait=False)
        return server_pb2.StopServerResponse(server=self._server(), changed=changed)

    @rpc
    def PauseServer(
        self, request: server_pb2.PauseServerRequest, context: grpc.ServicerContext
    ) -> server_pb2.PauseServerResponse:
        self._refuse_if_shutting_down()
        changed = self._toggle(self._rt.listener.pause)
        return server_pb2.PauseServerResponse(server=self._server(), changed=changed)

    @rpc
    def ResumeServer(
        self, request: server_pb2.ResumeServerRequest, context: grpc.ServicerContext
    ) -> server_pb2.ResumeServerResponse:
        self._refuse_if_shutting_down()
        changed = self._toggle(self._rt.listener.resume)
        return server_pb2.ResumeServerResponse(server=self._server(), changed=changed)

    @rpc
    def Shutdown(
        self, request: server_pb2.ShutdownRequest, context: grpc.ServicerContext
    ) -> server_pb2.ShutdownResponse:
        self._rt.request_shutdown(self._grace(request))
        return server_pb2.ShutdownResponse()

    def _grace(self, request: server_pb2.StopServerRequest | server_pb2.ShutdownRequest) -> float:
        if not request.HasField("grace_period"):
            return self._rt.settings.grace_period
        seconds = request.grace_period.ToTimedelta().total_seconds()
        if seconds < 0:
            raise ControlError(
                grpc.StatusCode.INVALID_ARGUMENT,
                errors_pb2.INVALID_ARGUMENT,
                "grace_period must not be negative",
                {"field": "grace_period"},
            )
        return seconds

    @staticmethod
    def _toggle(action: object) -> bool:
        try:
            return bool(action())  # type: ignore[operator]
        except ListenerStoppedError as exc:
            raise ControlError(
                grpc.StatusCode.FAILED_PRECONDITION, errors_pb2.SERVER_STOPPED, str(exc)
            ) from exc
