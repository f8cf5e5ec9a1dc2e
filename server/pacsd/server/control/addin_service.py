"""``pacsd.admin.v1.AddinService``: thin mapping from RPCs to the AddinManager."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import json_format, struct_pb2
from pacsd.admin.v1 import addins_pb2, addins_pb2_grpc, errors_pb2
from pacsd.server.addins.manager import (
    AddinNotFound,
    AddinNotLoaded,
    CommandFailed,
    CommandNotFound,
    SettingsInvalid,
)
from pacsd.server.addins.record import AddinRecord, AddinState
from pacsd.server.addins.registry import AddinLoadError
from pacsd.server.addins.routing import RouteConflictError
from pacsd.server.control.errors import ControlError, rpc
from pacsd.server.control.paging import every_page, page
from pacsd.server.control.structs import to_struct

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime

T = TypeVar("T")

_STATES = {
    AddinState.AVAILABLE: addins_pb2.ADDIN_STATE_AVAILABLE,
    AddinState.ENABLED: addins_pb2.ADDIN_STATE_ENABLED,
    AddinState.DISABLED: addins_pb2.ADDIN_STATE_DISABLED,
    AddinState.FAILED: addins_pb2.ADDIN_STATE_FAILED,
}


def addin_message(record: AddinRecord) -> addins_pb2.Addin:
    stats = record.snapshot_stats()
    msg = addins_pb2.Addin(
        name=record.name,
        version=record.version,
        description=record.description,
        state=_STATES[record.state],
        source=record.source.origin,
        hooks=sorted({name for name, _ in record.hooks}),
        commands=sorted(record.commands),
        healthy=record.healthy,
        error=record.error,
        counters=addins_pb2.AddinCounters(
            calls=stats.calls,
            failures=stats.failures,
            timeouts=stats.timeouts,
            mean_latency_ms=(stats.total_latency / stats.calls * 1000) if stats.calls else 0.0,
            max_latency_ms=stats.max_latency * 1000,
        ),
    )
    for route in record.routes:
        msg.bindings.add(
            service=route.spec.service.value,
            sop_class_uid=route.sop_class,
            transfer_syntaxes=list(route.spec.transfer_syntaxes),
        )
    return msg


def add_worker(mine: addins_pb2.Addin, theirs: addins_pb2.Addin, worker: int) -> None:
    """Fold another engine process's view of the same add-in into ``mine``.

    Each worker counts its own calls: the server's are the sum (the mean weighted by
    calls, the maximum the largest). The add-in is healthy only if it is healthy in
    every process; a worker's reason is kept, naming the worker, since that is where
    the operator has to look.
    """
    c, o = mine.counters, theirs.counters
    total_ms = c.mean_latency_ms * c.calls + o.mean_latency_ms * o.calls
    c.calls += o.calls
    c.failures += o.failures
    c.timeouts += o.timeouts
    c.mean_latency_ms = total_ms / c.calls if c.calls else 0.0
    c.max_latency_ms = max(c.max_latency_ms, o.max_latency_ms)
    if not theirs.healthy:
        mine.healthy = False
        if theirs.error:
            why = f"worker {worker}: {theirs.error}"
            mine.error = f"{mine.error}; {why}" if mine.error else why


def _plain(value: Any) -> Any:
    """Struct numbers are doubles; give integral ones back as ints (ports, counts)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _from_struct(msg: struct_pb2.Struct) -> dict[str, Any]:
    return _plain(json_format.MessageToDict(msg))


def _mapped(call: Callable[[], T]) -> T:
    """Translate manager exceptions into ControlErrors with ErrorInfo reasons."""
    try:
        return call()
    except AddinNotFound as exc:
        raise ControlError(grpc.StatusCode.NOT_FOUND, errors_pb2.ADDIN_NOT_FOUND, str(exc)) from exc
    except AddinNotLoaded as exc:
        raise ControlError(
            grpc.StatusCode.FAILED_PRECONDITION, errors_pb2.ADDIN_NOT_LOADED, str(exc)
        ) from exc
    except RouteConflictError as exc:
        raise ControlError(
            grpc.StatusCode.FAILED_PRECONDITION,
            errors_pb2.ADDIN_CONFLICT,
            str(exc),
            {"addins": ",".join(exc.addins), "service": exc.service, "sop_class": exc.sop_class},
        ) from exc
    except AddinLoadError as exc:
        raise ControlError(
            grpc.StatusCode.FAILED_PRECONDITION,
            errors_pb2.ADDIN_LOAD_FAILED,
            str(exc),
            {"error": str(exc)},
        ) from exc
    except SettingsInvalid as exc:
        raise ControlError(
            grpc.StatusCode.INVALID_ARGUMENT,
            errors_pb2.ADDIN_SETTINGS_INVALID,
            str(exc),
            {"field": exc.field},
        ) from exc
    except CommandNotFound as exc:
        raise ControlError(
            grpc.StatusCode.NOT_FOUND, errors_pb2.COMMAND_NOT_FOUND, str(exc)
        ) from exc
    except CommandFailed as exc:
        raise ControlError(
            grpc.StatusCode.INTERNAL, errors_pb2.COMMAND_FAILED, str(exc), {"error": str(exc)}
        ) from exc


def _need_name(name: str) -> None:
    if not name:
        raise ControlError(
            grpc.StatusCode.INVALID_ARGUMENT,
            errors_pb2.INVALID_ARGUMENT,
            "name is required",
            {"field": "name"},
        )


class AddinServicer(addins_pb2_grpc.AddinServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    @property
    def _m(self):  # type: ignore[no-untyped-def]
        return self._rt.addins

    def _server_wide(self, msgs: list[addins_pb2.Addin]) -> list[addins_pb2.Addin]:
        """``msgs`` (this process's view) with every other worker's counters and health
        added: one server, whichever process served the calls. A worker that does not
        answer (restarting) is left out, as in the server's status."""
        supervisor = self._rt.supervisor
        if supervisor is None or not msgs:
            return msgs
        by_name = {msg.name: msg for msg in msgs}
        for worker, theirs in supervisor.each(
            lambda w: every_page(
                addins_pb2_grpc.AddinServiceStub(w.channel).ListAddins,
                addins_pb2.ListAddinsRequest,
                "addins",
            )
        ):
            for other in theirs:
                mine = by_name.get(other.name)
                if mine is not None:
                    add_worker(mine, other, worker.index)
        return msgs

    @rpc
    def ListAddins(
        self, request: addins_pb2.ListAddinsRequest, context: grpc.ServicerContext
    ) -> addins_pb2.ListAddinsResponse:
        records = self._m.list()
        items, token = page(records, request.page_size, request.page_token)
        return addins_pb2.ListAddinsResponse(
            addins=self._server_wide([addin_message(r) for r in items]), next_page_token=token
        )

    @rpc
    def GetAddin(
        self, request: addins_pb2.GetAddinRequest, context: grpc.ServicerContext
    ) -> addins_pb2.GetAddinResponse:
        _need_name(request.name)
        record = _mapped(lambda: self._m.get(request.name))
        return addins_pb2.GetAddinResponse(addin=self._server_wide([addin_message(record)])[0])

    @rpc
    def LoadAddin(
        self, request: addins_pb2.LoadAddinRequest, context: grpc.ServicerContext
    ) -> addins_pb2.LoadAddinResponse:
        _need_name(request.name)
        record, changed = _mapped(lambda: self._m.load(request.name))
        return addins_pb2.LoadAddinResponse(addin=addin_message(record), changed=changed)

    @rpc
    def UnloadAddin(
        self, request: addins_pb2.UnloadAddinRequest, context: grpc.ServicerContext
    ) -> addins_pb2.UnloadAddinResponse:
        _need_name(request.name)
        grace = self._rt.settings.grace_period
        record, changed = _mapped(lambda: self._m.unload(request.name, grace))
        return addins_pb2.UnloadAddinResponse(addin=addin_message(record), changed=changed)

    @rpc
    def ReloadAddin(
        self, request: addins_pb2.ReloadAddinRequest, context: grpc.ServicerContext
    ) -> addins_pb2.ReloadAddinResponse:
        _need_name(request.name)
        grace = self._rt.settings.grace_period
        record = _mapped(lambda: self._m.reload(request.name, grace))
        return addins_pb2.ReloadAddinResponse(addin=addin_message(record))

    @rpc
    def EnableAddin(
        self, request: addins_pb2.EnableAddinRequest, context: grpc.ServicerContext
    ) -> addins_pb2.EnableAddinResponse:
        _need_name(request.name)
        record, changed = _mapped(lambda: self._m.enable(request.name))
        return addins_pb2.EnableAddinResponse(addin=addin_message(record), changed=changed)

    @rpc
    def DisableAddin(
        self, request: addins_pb2.DisableAddinRequest, context: grpc.ServicerContext
    ) -> addins_pb2.DisableAddinResponse:
        _need_name(request.name)
        record, changed = _mapped(lambda: self._m.disable(request.name))
        return addins_pb2.DisableAddinResponse(addin=addin_message(record), changed=changed)

    @rpc
    def GetAddinSettings(
        self, request: addins_pb2.GetAddinSettingsRequest, context: grpc.ServicerContext
    ) -> addins_pb2.GetAddinSettingsResponse:
        _need_name(request.name)
        settings = _mapped(lambda: self._m.get_settings(request.name))
        return addins_pb2.GetAddinSettingsResponse(settings=to_struct(settings))

    @rpc
    def UpdateAddinSettings(
        self, request: addins_pb2.UpdateAddinSettingsRequest, context: grpc.ServicerContext
    ) -> addins_pb2.UpdateAddinSettingsResponse:
        _need_name(request.name)
        changes = _from_struct(request.settings)
        settings, changed = _mapped(lambda: self._m.update_settings(request.name, changes))
        return addins_pb2.UpdateAddinSettingsResponse(settings=to_struct(settings), changed=changed)

    @rpc
    def InvokeCommand(
        self, request: addins_pb2.InvokeCommandRequest, context: grpc.ServicerContext
    ) -> addins_pb2.InvokeCommandResponse:
        _need_name(request.name)
        if not request.command:
            raise ControlError(
                grpc.StatusCode.INVALID_ARGUMENT,
                errors_pb2.INVALID_ARGUMENT,
                "command is required",
                {"field": "command"},
            )
        args = _from_struct(request.args)
        result = _mapped(lambda: self._m.invoke(request.name, request.command, args))
        try:
            return addins_pb2.InvokeCommandResponse(result=to_struct(result))
        except (ValueError, TypeError) as exc:
            raise ControlError(
                grpc.StatusCode.INTERNAL,
                errors_pb2.COMMAND_FAILED,
                f"command {request.command!r} returned a value that is not JSON-like: {exc}",
                {"error": f"not JSON-like: {exc}"},
            ) from exc
