"""``pacsd.admin.v1.ServerService``: thin mapping from RPCs to the Runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from google.protobuf import json_format
from pacsd.admin.v1 import errors_pb2, server_pb2, server_pb2_grpc
from pacsd.server import live_settings
from pacsd.server.control.errors import ControlError, rpc
from pacsd.server.control.structs import to_struct
from pacsd.server.dicom.listener import BindError, ListenerState, ListenerStoppedError
from pacsd.server.workers.supervisor import WorkerState

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime

_STATES = {
    ListenerState.RUNNING: server_pb2.SERVER_STATE_RUNNING,
    ListenerState.PAUSED: server_pb2.SERVER_STATE_PAUSED,
    ListenerState.STOPPED: server_pb2.SERVER_STATE_STOPPED,
}


_WORKER_STATES = {
    WorkerState.STARTING: server_pb2.WORKER_STATE_STARTING,
    WorkerState.SERVING: server_pb2.WORKER_STATE_SERVING,
    WorkerState.RESTARTING: server_pb2.WORKER_STATE_RESTARTING,
    WorkerState.STOPPED: server_pb2.WORKER_STATE_STOPPED,
}


class ServerServicer(server_pb2_grpc.ServerServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._settings = live_settings.LiveSettings(runtime)

    def _server(self) -> server_pb2.Server:
        rt = self._rt
        rt.refresh_health()
        listener = rt.listener
        active, counters = listener.tracker.snapshot()
        own = server_pb2.Counters(
            active_associations=active,
            associations_accepted=counters.associations_accepted,
            associations_rejected=counters.associations_rejected,
            associations_aborted=counters.associations_aborted,
            dimse_messages_received=counters.dimse_messages_received,
            dimse_messages_sent=counters.dimse_messages_sent,
        )
        msg = server_pb2.Server(
            version=rt.version,
            api_version=rt.api_version,
            state=(
                server_pb2.SERVER_STATE_SHUTTING_DOWN
                if rt.shutting_down
                else _STATES[rt.listeners.state]
            ),
            data_dir=str(rt.settings.data_dir.resolve()),
            pid=rt.pid,
        )
        msg.start_time.FromDatetime(rt.started_at)
        self._workers(msg, own)
        for dicom in rt.listeners.all():  # plain first, then TLS
            msg.listeners.add(
                protocol="dicom",
                ae_title=rt.settings.ae_title,
                host=dicom.host,
                port=dicom.port,
                tls=dicom.tls_context is not None,
                listening=dicom.state is not ListenerState.STOPPED,
            )
        msg.listeners.add(
            protocol="control",
            host=rt.settings.control_host,
            port=rt.control_port,
            tls=rt.control is not None and rt.control.tls is not None,
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

    def _workers(self, msg: server_pb2.Server, own: server_pb2.Counters) -> None:
        """This process and every worker, and the counters of all added up."""
        rt = self._rt
        first = msg.workers.add(
            index=rt.role.index if rt.role is not None else 0,
            pid=rt.pid,
            state=server_pb2.WORKER_STATE_SERVING,
            counters=own,
        )
        first.start_time.FromDatetime(rt.started_at)
        total = server_pb2.Counters()
        total.CopyFrom(own)
        supervisor = rt.supervisor
        if supervisor is None:
            msg.counters.CopyFrom(total)
            return
        answers = {
            worker.index: reply.server
            for worker, reply in supervisor.each(
                lambda w: server_pb2_grpc.ServerServiceStub(w.channel).GetServer(
                    server_pb2.GetServerRequest(), timeout=5
                )
            )
        }
        for status in supervisor.statuses():
            item = msg.workers.add(
                index=status.index,
                pid=status.pid,
                state=_WORKER_STATES[status.state],
                restarts=status.restarts,
            )
            if status.started_at is not None:
                item.start_time.FromDatetime(status.started_at)
            theirs = answers.get(status.index)
            if theirs is not None:
                item.counters.CopyFrom(theirs.counters)
                for field in server_pb2.Counters.DESCRIPTOR.fields:
                    name = field.name
                    setattr(total, name, getattr(total, name) + getattr(theirs.counters, name))
        msg.counters.CopyFrom(total)

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
            changed = self._rt.listeners.start()
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
        changed = self._rt.listeners.stop(grace, wait=False)
        return server_pb2.StopServerResponse(server=self._server(), changed=changed)

    @rpc
    def PauseServer(
        self, request: server_pb2.PauseServerRequest, context: grpc.ServicerContext
    ) -> server_pb2.PauseServerResponse:
        self._refuse_if_shutting_down()
        changed = self._toggle(self._rt.listeners.pause)
        return server_pb2.PauseServerResponse(server=self._server(), changed=changed)

    @rpc
    def ResumeServer(
        self, request: server_pb2.ResumeServerRequest, context: grpc.ServicerContext
    ) -> server_pb2.ResumeServerResponse:
        self._refuse_if_shutting_down()
        changed = self._toggle(self._rt.listeners.resume)
        return server_pb2.ResumeServerResponse(server=self._server(), changed=changed)

    @rpc
    def Shutdown(
        self, request: server_pb2.ShutdownRequest, context: grpc.ServicerContext
    ) -> server_pb2.ShutdownResponse:
        self._rt.request_shutdown(self._grace(request))
        return server_pb2.ShutdownResponse()

    @rpc
    def GetSettings(
        self, request: server_pb2.GetSettingsRequest, context: grpc.ServicerContext
    ) -> server_pb2.GetSettingsResponse:
        return server_pb2.GetSettingsResponse(
            settings=to_struct(live_settings.public_view(self._rt)),
            runtime_settings=sorted(live_settings.RUNTIME),
        )

    @rpc
    def UpdateSettings(
        self, request: server_pb2.UpdateSettingsRequest, context: grpc.ServicerContext
    ) -> server_pb2.UpdateSettingsResponse:
        self._refuse_if_shutting_down()
        values = json_format.MessageToDict(request.settings)
        if not values:
            raise ControlError(
                grpc.StatusCode.INVALID_ARGUMENT,
                errors_pb2.INVALID_ARGUMENT,
                "no settings given",
                {"field": "settings"},
            )
        try:
            update = self._settings.update(values, validate_only=request.validate_only)
        except live_settings.UnknownSetting as exc:
            raise ControlError(
                grpc.StatusCode.INVALID_ARGUMENT,
                errors_pb2.INVALID_ARGUMENT,
                str(exc),
                {"field": ",".join(exc.names)},
            ) from exc
        except live_settings.InvalidSetting as exc:
            raise ControlError(
                grpc.StatusCode.INVALID_ARGUMENT, errors_pb2.INVALID_ARGUMENT, str(exc)
            ) from exc
        except live_settings.RequiresRestart as exc:
            raise ControlError(
                grpc.StatusCode.FAILED_PRECONDITION,
                errors_pb2.SETTING_REQUIRES_RESTART,
                str(exc),
                {"fields": ",".join(exc.names)},
            ) from exc
        return server_pb2.UpdateSettingsResponse(
            settings=to_struct(update.settings),
            changed_fields=list(update.changed),
            changed=bool(update.changed),
        )

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
