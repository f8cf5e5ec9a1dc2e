"""Bring a (re)started worker to the state the first process is in now.

A worker starts from the settings in force (runtime changes included: the supervisor
hands it the live settings) and loads the add-ins those settings name, like the first
process did at its start. What changed since then through the control plane is
applied here, through the worker's own control services: add-ins loaded, unloaded,
enabled, disabled or given new settings, log levels, and a paused or stopped
listener. The supervisor holds its lock meanwhile, so no change slips in between.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from pacsd.admin.v1 import (
    addins_pb2,
    addins_pb2_grpc,
    logs_pb2,
    logs_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
)
from pacsd.server import logsetup
from pacsd.server.addins.record import AddinState
from pacsd.server.control.structs import to_struct
from pacsd.server.dicom.listener import ListenerState

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime
    from pacsd.server.workers.supervisor import WorkerProcess

_LOADED = (addins_pb2.ADDIN_STATE_ENABLED, addins_pb2.ADDIN_STATE_DISABLED)


class SyncError(Exception):
    """The worker refused to take the current state."""


def bring_up_to_date(runtime: Runtime, worker: WorkerProcess) -> None:
    assert worker.channel is not None
    try:
        _addins(runtime, addins_pb2_grpc.AddinServiceStub(worker.channel))
        _log_levels(logs_pb2_grpc.LogServiceStub(worker.channel))
        _listener(runtime, server_pb2_grpc.ServerServiceStub(worker.channel))
    except grpc.RpcError as exc:
        raise SyncError(
            f"worker {worker.index} refused the current state: {exc.details()}"
        ) from exc


def _addins(runtime: Runtime, stub: addins_pb2_grpc.AddinServiceStub) -> None:
    theirs = {
        a.name: a for a in stub.ListAddins(addins_pb2.ListAddinsRequest(page_size=1000)).addins
    }
    manager = runtime.addins
    for record in manager.records():
        name = record.name
        ours_loaded = record.instance is not None
        their = theirs.get(name)
        their_loaded = their is not None and their.state in _LOADED
        if not ours_loaded:
            if their_loaded:
                stub.UnloadAddin(addins_pb2.UnloadAddinRequest(name=name))
            continue
        if not their_loaded:
            path = record.source.path
            stub.LoadAddin(addins_pb2.LoadAddinRequest(name=str(path) if path else name))
        settings = to_struct(manager.get_settings(name))
        stub.UpdateAddinSettings(
            addins_pb2.UpdateAddinSettingsRequest(name=name, settings=settings)
        )
        if record.state is AddinState.DISABLED:
            stub.DisableAddin(addins_pb2.DisableAddinRequest(name=name))
        else:
            stub.EnableAddin(addins_pb2.EnableAddinRequest(name=name))
    ours = {record.name for record in manager.records()}
    for name, their in theirs.items():
        if name not in ours and their.state in _LOADED:
            stub.UnloadAddin(addins_pb2.UnloadAddinRequest(name=name))


def _log_levels(stub: logs_pb2_grpc.LogServiceStub) -> None:
    default, own = logsetup.levels()
    stub.SetLogLevel(logs_pb2.SetLogLevelRequest(source="", level=default))  # type: ignore[arg-type]
    for source, level in own.items():
        stub.SetLogLevel(logs_pb2.SetLogLevelRequest(source=source, level=level))  # type: ignore[arg-type]


def _listener(runtime: Runtime, stub: server_pb2_grpc.ServerServiceStub) -> None:
    state = runtime.listeners.state
    if state is ListenerState.PAUSED:
        stub.PauseServer(server_pb2.PauseServerRequest())
    elif state is ListenerState.STOPPED:
        stub.StopServer(server_pb2.StopServerRequest())
