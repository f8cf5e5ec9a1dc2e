"""Repeat state-changing control calls on every worker, after the first process.

A call is applied by the process that hosts the control plane first, exactly as with
one process: its validation, its errors and its response are what the caller sees.
Only when it succeeded is the same request sent to each worker. A worker that fails
to apply it no longer matches the others; the supervisor restarts it, and a restarted
worker is brought to the current state before it serves (sync.py), so the server
never keeps serving with engines that disagree.

Calls are serialised with worker (re)starts by the supervisor's lock, so a worker
either gets a change replicated or starts after it and syncs it; never neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from pacsd.server.control.method_handlers import Behaviour, wrapped

if TYPE_CHECKING:
    from pacsd.server.workers.supervisor import Supervisor

_PACKAGE = "/pacsd.admin.v1."

#: Calls that change what an engine process does. Not here, on purpose: reads;
#: AE titles and storage (one database shared by every process); Shutdown (the
#: supervisor stops its workers as part of it); InvokeCommand (an add-in command runs
#: once, in the first process: commands act on shared resources or report, and
#: running one N times would repeat its side effects).
REPLICATED = frozenset(
    _PACKAGE + name
    for name in (
        "ServerService/StartServer",
        "ServerService/StopServer",
        "ServerService/PauseServer",
        "ServerService/ResumeServer",
        "ServerService/UpdateSettings",
        "AddinService/LoadAddin",
        "AddinService/UnloadAddin",
        "AddinService/ReloadAddin",
        "AddinService/EnableAddin",
        "AddinService/DisableAddin",
        "AddinService/UpdateAddinSettings",
        "LogService/SetLogLevel",
        "SecurityService/ReloadCertificates",
    )
)


#: The other state-changing calls, and why each is applied once, by the first process
#: (a unit test checks that every state-changing method is in one of the two sets).
APPLIED_ONCE = frozenset(
    _PACKAGE + name
    for name in (
        "ServerService/Shutdown",  # stops the workers itself (supervisor.stop)
        "AddinService/InvokeCommand",  # see above
        "AETitleService/CreateAETitle",  # AE titles: pacsd.db, shared
        "AETitleService/UpdateAETitle",
        "AETitleService/DeleteAETitle",
        "StorageService/DeleteStudy",  # the index and blob store are shared
        "StorageService/DeleteSeries",
        "StorageService/DeleteInstance",
        "AssociationService/AbortAssociation",  # sent to the process serving it
    )
)


class ReplicationInterceptor(grpc.ServerInterceptor):
    """Wraps each replicated method: apply here, then on every running worker."""

    def __init__(self, supervisor: Callable[[], Supervisor | None]) -> None:
        self._supervisor = supervisor

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or handler.unary_unary is None or method not in REPLICATED:
            return handler

        def replicate(inner: Behaviour) -> Behaviour:
            def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
                supervisor = self._supervisor()
                if supervisor is None:
                    return inner(request, context)
                with supervisor.changing():
                    # A failed call aborts (raises) here and is not repeated anywhere.
                    response = inner(request, context)
                    if _is_change(request):
                        supervisor.replicate(method, request.SerializeToString())
                    return response

            return behaviour

        return wrapped(handler, replicate)


def _is_change(request: Any) -> bool:
    """False for an UpdateSettings that only validates (nothing to repeat)."""
    return not getattr(request, "validate_only", False)
