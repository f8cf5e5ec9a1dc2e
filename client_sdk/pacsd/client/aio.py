"""The SDK on asyncio (grpc.aio): ``AsyncClient`` and ``AsyncFleet``.

Same surface as ``Client`` and ``Fleet``, with ``await`` in front: services that already
run an event loop (a web backend, an orchestration agent watching hundreds of nodes) can
drive pacsd without a thread per call. ``AsyncClient`` has every namespace of
``Client`` (``server``, ``addins``, ``aetitles``, ``storage``, ``logs``,
``associations``, ``security``) with the methods, arguments, results and errors of the
synchronous ones (``tests/fleet/test_aio.py`` checks that the signatures match).
Unary calls are coroutines; ``iter_studies`` is an async generator, and the streams
(``logs.stream``, ``associations.watch``) are plain calls returning an ``AsyncStream``,
an async iterator that is also an async context manager::

    async with client.logs.stream(follow=True, level="WARNING") as records:
        async for record in records:
            print(record.source, record.message)

    import asyncio
    from pacsd.client.aio import AsyncFleet

    async def main() -> None:
        async with AsyncFleet.from_endpoints("127.0.0.1:50051,127.0.0.1:50052") as fleet:
            for r in await fleet.server.get():
                print(r.server.name, r.value.state if r.ok else r.error)

    asyncio.run(main())

Create clients inside the event loop that uses them (grpc.aio channels belong to one
loop); ``AsyncFleet`` opens its clients on first use, so it may be built anywhere.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio
from pacsd.admin.v1 import (
    addins_pb2,
    addins_pb2_grpc,
    aetitles_pb2,
    aetitles_pb2_grpc,
    associations_pb2,
    associations_pb2_grpc,
    logs_pb2,
    logs_pb2_grpc,
    security_pb2,
    security_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    storage_pb2,
    storage_pb2_grpc,
)
from pacsd.client import _health
from pacsd.client import associations as _associations
from pacsd.client import logs as _logs
from pacsd.client._paging import PageTokens
from pacsd.client._stream import DropCallback, StreamItems
from pacsd.client.addins import AddinChange, SettingsChange, from_struct, to_struct
from pacsd.client.aetitles import (
    _ECHO_SLACK,
    AETitleChange,
    PermissionsArg,
    create_message,
    update_request,
)
from pacsd.client.client import (
    DEFAULT_ENDPOINT,
    DEFAULT_TIMEOUT,
    Change,
    ServerSettings,
    SettingsUpdate,
    _set_grace,
)
from pacsd.client.credentials import Credentials, PathArg, resolve
from pacsd.client.errors import InvalidArgument, PacsdError, from_rpc_error
from pacsd.client.fleet import FleetBase, FleetResults, ServerResult
from pacsd.client.inventory import DEFAULT_PARALLELISM, FleetServer, Selector
from pacsd.client.logs import LevelChange, LogLevels
from pacsd.client.storage import (
    Deletion,
    StudiesPage,
    StudyList,
    _check_limit,
    _deletion,
    _int32,
    _page_size,
)

__all__ = [
    "AsyncAETitlesAPI",
    "AsyncAddinsAPI",
    "AsyncAssociationsAPI",
    "AsyncBroadcast",
    "AsyncClient",
    "AsyncFleet",
    "AsyncLogsAPI",
    "AsyncSecurityAPI",
    "AsyncServerAPI",
    "AsyncStorageAPI",
    "AsyncStream",
]

T = TypeVar("T")


class AsyncClient:
    """``Client`` on grpc.aio: one channel to one control plane, every call awaited.

    Construction never touches the network; the first call fails with
    ``ServerUnavailable`` when nothing answers. Errors are the same ``PacsdError``
    subclasses as the synchronous client's, ``unreachable`` included.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: Credentials | None = None,
        token: str | None = None,
        cacert: PathArg = None,
        cert: PathArg = None,
        key: PathArg = None,
    ) -> None:
        if not endpoint.strip():
            raise ValueError("endpoint must not be empty")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        credentials = resolve(credentials, token=token, cacert=cacert, cert=cert, key=key)
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.credentials = credentials
        self._metadata = credentials.call_metadata(endpoint) if credentials else None
        secure = credentials.channel_credentials() if credentials else None
        self._channel = (
            grpc.aio.secure_channel(endpoint, secure)
            if secure is not None
            else grpc.aio.insecure_channel(endpoint)
        )
        self._closed = False
        self.server = AsyncServerAPI(self)
        self.addins = AsyncAddinsAPI(self)
        self.aetitles = AsyncAETitlesAPI(self)
        self.storage = AsyncStorageAPI(self)
        self.logs = AsyncLogsAPI(self)
        self.associations = AsyncAssociationsAPI(self)
        self.security = AsyncSecurityAPI(self)
        self._health_check = self._channel.unary_unary(
            _health.CHECK_METHOD,
            request_serializer=_health.HealthCheckRequest.SerializeToString,
            response_deserializer=_health.HealthCheckResponse.FromString,
        )

    async def close(self) -> None:
        """Release the channel; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient(endpoint={self.endpoint!r}, timeout={self.timeout!r})"

    async def shutdown(
        self, grace_period: float | None = None, *, timeout: float | None = None
    ) -> None:
        """As ``Client.shutdown``."""
        request = server_pb2.ShutdownRequest()
        _set_grace(request, grace_period)
        await self._call(self.server._stub.Shutdown, request, timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """As ``Client.health``: "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" or "UNKNOWN"."""
        try:
            response = await self._call(
                self._health_check, _health.HealthCheckRequest(service=service), timeout
            )
        except PacsdError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            raise
        return _health.STATUS_NAMES.get(int(response.status), "UNKNOWN")

    async def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        """One unary call with a deadline; every gRPC failure becomes a PacsdError."""
        if self._closed:
            raise ValueError("this AsyncClient is closed")
        deadline = self.timeout if timeout is None else timeout
        try:
            if self._metadata is None:
                return await method(request, timeout=deadline)
            return await method(request, timeout=deadline, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: grpc.RpcError) -> PacsdError:
        # As in Client: a DEADLINE_EXCEEDED on a channel that never got ready means
        # nothing usable is there (unreachable), not a slow server.
        state = self._channel.get_state(try_to_connect=False)
        connected = state is grpc.ChannelConnectivity.READY
        return from_rpc_error(exc, self.endpoint, connected=connected)

    def _open_stream(self, method: Any, request: Any, timeout: float | None) -> Any:
        """Start a server-streaming call with the client's call metadata."""
        if self._closed:
            raise ValueError("this AsyncClient is closed")
        if self._metadata is None:
            return method(request, timeout=timeout)
        return method(request, timeout=timeout, metadata=self._metadata)


class AsyncStream(StreamItems[T]):
    """``Stream`` on grpc.aio: the items of one server stream, as an async iterator.

    Every gRPC failure arrives as a ``PacsdError``; ``cancel()`` (or leaving an
    ``async with`` block) ends it quietly; the server's "dropped N" notices are counted
    in ``dropped`` and handed to ``on_dropped`` rather than mixed with the items.
    """

    def __init__(
        self,
        client: AsyncClient,
        call: Any,
        split: Callable[[Any], tuple[T | None, Any]],
        on_dropped: DropCallback | None = None,
    ) -> None:
        super().__init__(split, on_dropped)
        self._client = client
        self._call = call
        self._cancelled = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        while True:
            if self._cancelled:
                raise StopAsyncIteration
            try:
                response = await self._call.read()
            except asyncio.CancelledError:
                # grpc.aio reports a call cancelled here as CancelledError; a
                # cancellation of the task reading it must still propagate.
                if self._cancelled:
                    raise StopAsyncIteration from None
                raise
            except grpc.RpcError as exc:
                if self._cancelled and exc.code() is grpc.StatusCode.CANCELLED:
                    raise StopAsyncIteration from None
                raise self._client._error(exc) from exc
            if response is grpc.aio.EOF:
                raise StopAsyncIteration
            item = self._item(response)
            if item is not None:
                return item

    def cancel(self) -> None:
        """End the stream; iteration stops without an error. Safe to call twice."""
        self._cancelled = True
        self._call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


class AsyncServerAPI:
    """As ``ServerAPI``, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = server_pb2_grpc.ServerServiceStub(client._channel)

    async def get(self, *, timeout: float | None = None) -> server_pb2.Server:
        response = await self._client._call(
            self._stub.GetServer, server_pb2.GetServerRequest(), timeout
        )
        return response.server

    async def start(self, *, timeout: float | None = None) -> Change:
        response = await self._client._call(
            self._stub.StartServer, server_pb2.StartServerRequest(), timeout
        )
        return Change(response.server, response.changed)

    async def stop(
        self, grace_period: float | None = None, *, timeout: float | None = None
    ) -> Change:
        request = server_pb2.StopServerRequest()
        _set_grace(request, grace_period)
        response = await self._client._call(self._stub.StopServer, request, timeout)
        return Change(response.server, response.changed)

    async def pause(self, *, timeout: float | None = None) -> Change:
        response = await self._client._call(
            self._stub.PauseServer, server_pb2.PauseServerRequest(), timeout
        )
        return Change(response.server, response.changed)

    async def resume(self, *, timeout: float | None = None) -> Change:
        response = await self._client._call(
            self._stub.ResumeServer, server_pb2.ResumeServerRequest(), timeout
        )
        return Change(response.server, response.changed)

    async def settings(self, *, timeout: float | None = None) -> ServerSettings:
        response = await self._client._call(
            self._stub.GetSettings, server_pb2.GetSettingsRequest(), timeout
        )
        return ServerSettings(from_struct(response.settings), tuple(response.runtime_settings))

    async def update_settings(
        self,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        validate_only: bool = False,
        timeout: float | None = None,
        **more: Any,
    ) -> SettingsUpdate:
        merged = {**(changes or {}), **more}
        request = server_pb2.UpdateSettingsRequest(
            settings=to_struct(merged, "settings"), validate_only=validate_only
        )
        response = await self._client._call(self._stub.UpdateSettings, request, timeout)
        return SettingsUpdate(
            from_struct(response.settings), tuple(response.changed_fields), response.changed
        )


class AsyncAddinsAPI:
    """As ``AddinsAPI``, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = addins_pb2_grpc.AddinServiceStub(client._channel)

    async def list(self, *, page_size: int = 0, timeout: float | None = None) -> _AddinList:
        addins: _AddinList = []
        token = ""
        tokens = PageTokens("ListAddins", self._client.endpoint)
        while True:
            request = addins_pb2.ListAddinsRequest(page_size=page_size, page_token=token)
            response = await self._client._call(self._stub.ListAddins, request, timeout)
            addins.extend(response.addins)
            token = response.next_page_token
            if not tokens.follow(token):
                return addins

    async def get(self, name: str, *, timeout: float | None = None) -> addins_pb2.Addin:
        response = await self._client._call(
            self._stub.GetAddin, addins_pb2.GetAddinRequest(name=name), timeout
        )
        return response.addin

    async def load(
        self, name_or_path: str | os.PathLike[str], *, timeout: float | None = None
    ) -> AddinChange:
        request = addins_pb2.LoadAddinRequest(name=os.fspath(name_or_path))
        response = await self._client._call(self._stub.LoadAddin, request, timeout)
        return AddinChange(response.addin, response.changed)

    async def unload(self, name: str, *, timeout: float | None = None) -> AddinChange:
        response = await self._client._call(
            self._stub.UnloadAddin, addins_pb2.UnloadAddinRequest(name=name), timeout
        )
        return AddinChange(response.addin, response.changed)

    async def reload(self, name: str, *, timeout: float | None = None) -> AddinChange:
        response = await self._client._call(
            self._stub.ReloadAddin, addins_pb2.ReloadAddinRequest(name=name), timeout
        )
        return AddinChange(response.addin, True)

    async def enable(self, name: str, *, timeout: float | None = None) -> AddinChange:
        response = await self._client._call(
            self._stub.EnableAddin, addins_pb2.EnableAddinRequest(name=name), timeout
        )
        return AddinChange(response.addin, response.changed)

    async def disable(self, name: str, *, timeout: float | None = None) -> AddinChange:
        response = await self._client._call(
            self._stub.DisableAddin, addins_pb2.DisableAddinRequest(name=name), timeout
        )
        return AddinChange(response.addin, response.changed)

    async def get_settings(self, name: str, *, timeout: float | None = None) -> dict[str, Any]:
        response = await self._client._call(
            self._stub.GetAddinSettings, addins_pb2.GetAddinSettingsRequest(name=name), timeout
        )
        return from_struct(response.settings)

    async def update_settings(
        self,
        name: str,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        **more: Any,
    ) -> SettingsChange:
        merged = {**(changes or {}), **more}
        request = addins_pb2.UpdateAddinSettingsRequest(
            name=name, settings=to_struct(merged, "settings")
        )
        response = await self._client._call(self._stub.UpdateAddinSettings, request, timeout)
        return SettingsChange(from_struct(response.settings), response.changed)

    async def invoke(
        self,
        name: str,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        request = addins_pb2.InvokeCommandRequest(
            name=name, command=command, args=to_struct(args or {}, "args")
        )
        response = await self._client._call(self._stub.InvokeCommand, request, timeout)
        return from_struct(response.result)


_AddinList = list[addins_pb2.Addin]
_AETitleList = list[aetitles_pb2.AETitle]


class AsyncAETitlesAPI:
    """As ``AETitlesAPI``, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = aetitles_pb2_grpc.AETitleServiceStub(client._channel)

    async def list(self, *, page_size: int = 0, timeout: float | None = None) -> _AETitleList:
        entries: _AETitleList = []
        token = ""
        tokens = PageTokens("ListAETitles", self._client.endpoint)
        while True:
            request = aetitles_pb2.ListAETitlesRequest(page_size=page_size, page_token=token)
            response = await self._client._call(self._stub.ListAETitles, request, timeout)
            entries.extend(response.ae_titles)
            token = response.next_page_token
            if not tokens.follow(token):
                return entries

    async def get(self, ae_title: str, *, timeout: float | None = None) -> aetitles_pb2.AETitle:
        response = await self._client._call(
            self._stub.GetAETitle, aetitles_pb2.GetAETitleRequest(ae_title=ae_title), timeout
        )
        return response.ae_title

    async def create(
        self,
        ae_title: str,
        host: str,
        port: int,
        description: str = "",
        *,
        allowed_addresses: Iterable[str] = (),
        permissions: PermissionsArg = None,
        timeout: float | None = None,
    ) -> AETitleChange:
        entry = create_message(ae_title, host, port, description, allowed_addresses, permissions)
        response = await self._client._call(
            self._stub.CreateAETitle, aetitles_pb2.CreateAETitleRequest(ae_title=entry), timeout
        )
        return AETitleChange(response.ae_title, response.changed)

    async def update(
        self,
        ae_title: str,
        *,
        host: str | None = None,
        port: int | None = None,
        description: str | None = None,
        allowed_addresses: Iterable[str] | None = None,
        permissions: PermissionsArg = None,
        timeout: float | None = None,
    ) -> AETitleChange:
        request = update_request(ae_title, host, port, description, allowed_addresses, permissions)
        response = await self._client._call(self._stub.UpdateAETitle, request, timeout)
        return AETitleChange(response.ae_title, response.changed)

    async def delete(self, ae_title: str, *, timeout: float | None = None) -> bool:
        response = await self._client._call(
            self._stub.DeleteAETitle,
            aetitles_pb2.DeleteAETitleRequest(ae_title=ae_title),
            timeout,
        )
        return bool(response.changed)

    async def echo(
        self,
        ae_title: str,
        *,
        peer_timeout: float | None = None,
        timeout: float | None = None,
    ) -> aetitles_pb2.EchoAETitleResponse:
        request = aetitles_pb2.EchoAETitleRequest(ae_title=ae_title)
        if peer_timeout is not None:
            if not (math.isfinite(peer_timeout) and peer_timeout > 0):
                raise InvalidArgument(
                    f"peer_timeout must be a positive number of seconds, not {peer_timeout!r}",
                    reason="INVALID_ARGUMENT",
                    metadata={"field": "timeout"},
                )
            request.timeout = peer_timeout
            deadline = self._client.timeout if timeout is None else timeout
            timeout = max(deadline, peer_timeout + _ECHO_SLACK)
        response: aetitles_pb2.EchoAETitleResponse = await self._client._call(
            self._stub.EchoAETitle, request, timeout
        )
        return response


class AsyncStorageAPI:
    """As ``StorageAPI``, awaited; ``iter_studies`` is an async iterator."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = storage_pb2_grpc.StorageServiceStub(client._channel)

    async def stats(self, *, timeout: float | None = None) -> storage_pb2.StorageStats:
        response = await self._client._call(
            self._stub.GetStorageStats, storage_pb2.GetStorageStatsRequest(), timeout
        )
        return response.stats

    async def studies(
        self,
        *,
        patient_id: str = "",
        date_from: str = "",
        date_to: str = "",
        modality: str = "",
        limit: int | None = None,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> StudyList:
        result = StudyList()
        number = 0
        async for page in self._pages(
            patient_id, date_from, date_to, modality, limit, page_size, timeout
        ):
            if number == 0:
                result.total_size = page.total_size
            number += 1
            result.extend(page.studies)
        return result

    async def iter_studies(
        self,
        *,
        patient_id: str = "",
        date_from: str = "",
        date_to: str = "",
        modality: str = "",
        limit: int | None = None,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[storage_pb2.Study]:
        async for page in self._pages(
            patient_id, date_from, date_to, modality, limit, page_size, timeout
        ):
            for study in page.studies:
                yield study

    async def _pages(
        self,
        patient_id: str,
        date_from: str,
        date_to: str,
        modality: str,
        limit: int | None,
        page_size: int,
        timeout: float | None,
    ) -> AsyncIterator[StudiesPage]:
        _check_limit(limit)
        token = ""
        tokens = PageTokens("ListStudies", self._client.endpoint)
        got = 0
        while limit is None or got < limit:
            size = _page_size(limit, got, page_size)
            page = await self.studies_page(
                patient_id=patient_id,
                date_from=date_from,
                date_to=date_to,
                modality=modality,
                page_size=size,
                page_token=token,
                timeout=timeout,
            )
            if limit is not None and got + len(page.studies) > limit:
                page = StudiesPage(
                    page.studies[: limit - got], page.next_page_token, page.total_size
                )
            got += len(page.studies)
            yield page
            token = page.next_page_token
            if not tokens.follow(token):
                return

    async def studies_page(
        self,
        *,
        patient_id: str = "",
        date_from: str = "",
        date_to: str = "",
        modality: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> StudiesPage:
        request = storage_pb2.ListStudiesRequest(
            patient_id=patient_id,
            study_date_from=date_from,
            study_date_to=date_to,
            modality=modality,
            page_size=_int32(page_size, "page_size"),
            page_token=page_token,
        )
        response = await self._client._call(self._stub.ListStudies, request, timeout)
        return StudiesPage(
            list(response.studies), response.next_page_token, int(response.total_size)
        )

    async def delete_study(
        self, study_instance_uid: str, *, timeout: float | None = None
    ) -> Deletion:
        response = await self._client._call(
            self._stub.DeleteStudy,
            storage_pb2.DeleteStudyRequest(study_instance_uid=study_instance_uid),
            timeout,
        )
        return _deletion(response)

    async def delete_series(
        self, series_instance_uid: str, *, timeout: float | None = None
    ) -> Deletion:
        response = await self._client._call(
            self._stub.DeleteSeries,
            storage_pb2.DeleteSeriesRequest(series_instance_uid=series_instance_uid),
            timeout,
        )
        return _deletion(response)

    async def delete_instance(
        self, sop_instance_uid: str, *, timeout: float | None = None
    ) -> Deletion:
        response = await self._client._call(
            self._stub.DeleteInstance,
            storage_pb2.DeleteInstanceRequest(sop_instance_uid=sop_instance_uid),
            timeout,
        )
        return _deletion(response)


class AsyncLogsAPI:
    """As ``LogsAPI``, awaited; ``stream`` returns an ``AsyncStream``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = logs_pb2_grpc.LogServiceStub(client._channel)

    def stream(
        self,
        *,
        follow: bool = False,
        tail: int = 0,
        level: str | int | None = None,
        sources: Iterable[str] = (),
        association_id: str = "",
        ae_title: str = "",
        on_dropped: DropCallback | None = None,
        timeout: float | None = None,
    ) -> AsyncStream[logs_pb2.LogRecord]:
        """As ``LogsAPI.stream``: ``async for record in client.logs.stream(...)``."""
        request = _logs.stream_request(follow, tail, level, sources, association_id, ae_title)
        deadline = timeout if timeout is not None or follow else self._client.timeout
        call = self._client._open_stream(self._stub.StreamLogs, request, deadline)
        return AsyncStream(self._client, call, _logs._split, on_dropped)

    async def tail(self, count: int = 100, **filters: object) -> list[logs_pb2.LogRecord]:
        """As ``LogsAPI.tail``: the last ``count`` records kept in memory."""
        async with self.stream(tail=count, **filters) as records:  # type: ignore[arg-type]
            return [record async for record in records]

    async def levels(self, *, timeout: float | None = None) -> LogLevels:
        response = await self._client._call(
            self._stub.GetLogLevels, logs_pb2.GetLogLevelsRequest(), timeout
        )
        return LogLevels.of(response.levels)

    async def set_level(
        self, level: str | int | None, source: str = "", *, timeout: float | None = None
    ) -> LevelChange:
        """As ``LogsAPI.set_level``."""
        request = _logs.level_request(level, source)
        response = await self._client._call(self._stub.SetLogLevel, request, timeout)
        return LevelChange(LogLevels.of(response.levels), response.changed)


_AssociationList = list[associations_pb2.Association]


class AsyncAssociationsAPI:
    """As ``AssociationsAPI``, awaited; ``watch`` returns an ``AsyncStream``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = associations_pb2_grpc.AssociationServiceStub(client._channel)

    async def list(self, *, page_size: int = 0, timeout: float | None = None) -> _AssociationList:
        out: _AssociationList = []
        token = ""
        tokens = PageTokens("ListAssociations", self._client.endpoint)
        while True:
            request = associations_pb2.ListAssociationsRequest(
                page_size=page_size, page_token=token
            )
            response = await self._client._call(self._stub.ListAssociations, request, timeout)
            out.extend(response.associations)
            token = response.next_page_token
            if not tokens.follow(token):
                return out

    async def get(
        self, association_id: str, *, timeout: float | None = None
    ) -> associations_pb2.Association:
        response = await self._client._call(
            self._stub.GetAssociation,
            associations_pb2.GetAssociationRequest(id=association_id),
            timeout,
        )
        return response.association

    async def abort(
        self, association_id: str, *, timeout: float | None = None
    ) -> associations_pb2.Association:
        response = await self._client._call(
            self._stub.AbortAssociation,
            associations_pb2.AbortAssociationRequest(id=association_id),
            timeout,
        )
        return response.association

    def watch(
        self,
        *,
        association_id: str = "",
        ae_title: str = "",
        lifecycle_only: bool = False,
        on_dropped: DropCallback | None = None,
        timeout: float | None = None,
    ) -> AsyncStream[associations_pb2.AssociationEvent]:
        """As ``AssociationsAPI.watch``: ``async for event in client.associations.watch()``."""
        request = associations_pb2.WatchEventsRequest(
            association_id=association_id, ae_title=ae_title, lifecycle_only=lifecycle_only
        )
        call = self._client._open_stream(self._stub.WatchEvents, request, timeout)
        return AsyncStream(self._client, call, _associations._split, on_dropped)


class AsyncSecurityAPI:
    """As ``SecurityAPI``, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = security_pb2_grpc.SecurityServiceStub(client._channel)

    async def certificates(self, *, timeout: float | None = None) -> security_pb2.TlsStatus:
        response = await self._client._call(
            self._stub.GetCertificates, security_pb2.GetCertificatesRequest(), timeout
        )
        return response.tls

    async def reload(self, *, timeout: float | None = None) -> security_pb2.TlsStatus:
        response = await self._client._call(
            self._stub.ReloadCertificates, security_pb2.ReloadCertificatesRequest(), timeout
        )
        return response.tls


# -- the fleet ----------------------------------------------------------------------------


class AsyncFleet(FleetBase):
    """``Fleet`` on asyncio: ``await fleet.run(fn)`` awaits ``fn(client)`` on every
    server, at most ``parallelism`` at once, and returns the same ``FleetResults``."""

    def __init__(
        self,
        servers: Iterable[FleetServer | str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        parallelism: int = DEFAULT_PARALLELISM,
        credentials: Credentials | None = None,
        token: str | None = None,
        cacert: PathArg = None,
        cert: PathArg = None,
        key: PathArg = None,
    ) -> None:
        super().__init__(
            servers,
            timeout=timeout,
            parallelism=parallelism,
            credentials=credentials,
            token=token,
            cacert=cacert,
            cert=cert,
            key=key,
        )
        self._clients: dict[str, AsyncClient] = {}
        self._closed = False

    def client(self, name: str) -> AsyncClient:
        """The client of one server, opened on first use (inside the running loop)."""
        server = self[name]
        if self._closed:
            raise ValueError("this AsyncFleet is closed")
        client = self._clients.get(name)
        if client is None:
            client = AsyncClient(
                server.endpoint, timeout=self.timeout, credentials=server.credentials
            )
            self._clients[name] = client
        return client

    async def close(self) -> None:
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.close() for c in clients))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncFleet({[s.name for s in self.servers]!r}, timeout={self.timeout!r})"

    async def run(
        self,
        fn: Callable[[AsyncClient], Awaitable[T]],
        *,
        selector: str | Selector | None = None,
        names: Iterable[str] | None = None,
    ) -> FleetResults[T]:
        """As ``Fleet.run``, with ``fn`` a coroutine function."""
        return await self.each(lambda _server, client: fn(client), selector=selector, names=names)

    async def each(
        self,
        fn: Callable[[FleetServer, AsyncClient], Awaitable[T]],
        *,
        selector: str | Selector | None = None,
        names: Iterable[str] | None = None,
    ) -> FleetResults[T]:
        """As ``Fleet.each``: ``await fn(server, client)`` on every target."""
        return await self.map_servers(
            lambda server: fn(server, self.client(server.name)), selector=selector, names=names
        )

    async def map_servers(
        self,
        fn: Callable[[FleetServer], Awaitable[T]],
        *,
        selector: str | Selector | None = None,
        names: Iterable[str] | None = None,
    ) -> FleetResults[T]:
        """As ``Fleet.map_servers``: ``await fn(server)``, no client opened first."""
        targets = self._targets(selector, names)
        gate = asyncio.Semaphore(self.parallelism)

        async def one(server: FleetServer) -> ServerResult[T]:
            async with gate:
                start = time.monotonic()
                try:
                    value = await fn(server)
                except Exception as exc:  # one server's failure is its result
                    return ServerResult(server, error=exc, seconds=time.monotonic() - start)
                return ServerResult(server, value, seconds=time.monotonic() - start)

        return FleetResults(await asyncio.gather(*(one(s) for s in targets)))

    async def health(self, service: str = "", *, timeout: float | None = None) -> FleetResults[str]:
        return await self.run(lambda c: c.health(service, timeout=timeout))

    async def shutdown(
        self, grace_period: float | None = None, *, timeout: float | None = None
    ) -> FleetResults[None]:
        return await self.run(lambda c: c.shutdown(grace_period, timeout=timeout))

    @property
    def server(self) -> AsyncBroadcast:
        return AsyncBroadcast(self, ("server",))

    @property
    def addins(self) -> AsyncBroadcast:
        return AsyncBroadcast(self, ("addins",))

    @property
    def aetitles(self) -> AsyncBroadcast:
        return AsyncBroadcast(self, ("aetitles",))

    @property
    def storage(self) -> AsyncBroadcast:
        return AsyncBroadcast(self, ("storage",))

    @property
    def logs(self) -> AsyncBroadcast:
        return AsyncBroadcast(self, ("logs",))

    @property
    def associations(self) -> AsyncBroadcast:
        return AsyncBroadcast(self, ("associations",))

    @property
    def security(self) -> AsyncBroadcast:
        return AsyncBroadcast(self, ("security",))

    def broadcast(self, *path: str) -> AsyncBroadcast:
        return AsyncBroadcast(self, path)


class AsyncBroadcast:
    """``await fleet.addins.reload("x")``: as ``Broadcast``, returning an awaitable."""

    def __init__(self, fleet: AsyncFleet, path: tuple[str, ...]) -> None:
        self._fleet = fleet
        self._path = path

    def __getattr__(self, name: str) -> AsyncBroadcast:
        if name.startswith("_"):
            raise AttributeError(name)
        return AsyncBroadcast(self._fleet, (*self._path, name))

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[FleetResults[Any]]:
        path = self._path

        async def call(client: AsyncClient) -> Any:
            target: Any = client
            for part in path:
                target = getattr(target, part)
            return await target(*args, **kwargs)

        return self._fleet.run(call)

    def __repr__(self) -> str:
        return f"<async broadcast of client.{'.'.join(self._path)} to {len(self._fleet)} servers>"
