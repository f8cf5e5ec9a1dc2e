"""``client.addins``: the SDK side of ``pacsd.admin.v1.AddinService``.

Add-ins are loaded, unloaded, reloaded, enabled and disabled at runtime, without
restarting the DICOM listener. Settings, command arguments and command results travel
as ``google.protobuf.Struct``; this module hands them to callers as plain dicts, with
integral numbers given back as ints (a Struct only knows doubles), so ``max_bytes``
is ``10``, not ``10.0``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf import struct_pb2
from pacsd.admin.v1 import addins_pb2, addins_pb2_grpc
from pacsd.client._paging import PageTokens
from pacsd.client.errors import InvalidArgument

if TYPE_CHECKING:
    from pacsd.client.client import Client

__all__ = ["AddinChange", "AddinsAPI", "SettingsChange", "from_struct", "to_struct"]

#: Integers a Struct (an IEEE double) carries exactly; larger ones would arrive changed.
_EXACT_INT = 2**53


@dataclass(frozen=True)
class AddinChange:
    """Result of an add-in change (load, unload, reload, enable, disable).

    ``addin`` is the add-in as it is after the change; ``changed`` is False when it
    already was in the requested state, as with ``Change`` for the server.
    """

    addin: addins_pb2.Addin
    changed: bool


@dataclass(frozen=True)
class SettingsChange:
    """Result of ``update_settings``: every setting after the update, and whether any
    value actually changed."""

    settings: dict[str, Any]
    changed: bool


class AddinsAPI:
    """``pacsd.admin.v1.AddinService``: the add-ins of one server.

    Names are add-in names as ``list()`` shows them (the file stem for an add-in loaded
    from a path). Errors carry the server's reason: ``NotFound``/ADDIN_NOT_FOUND for an
    unknown name, ``FailedPrecondition``/ADDIN_NOT_LOADED when the operation needs a
    loaded add-in, ADDIN_LOAD_FAILED and ADDIN_CONFLICT from ``load``/``reload``,
    ``InvalidArgument``/ADDIN_SETTINGS_INVALID (metadata "field") from
    ``update_settings``, ``NotFound``/COMMAND_NOT_FOUND and ``InternalError``/
    COMMAND_FAILED from ``invoke``.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = addins_pb2_grpc.AddinServiceStub(client._channel)

    # -- reading -----------------------------------------------------------------------

    def list(self, *, page_size: int = 0, timeout: float | None = None) -> _AddinList:
        """Every add-in the server knows (loaded, discovered, failed), sorted by name.

        Follows ``next_page_token`` until the last page, so the result is complete;
        ``page_size`` (0: the server's default) only sets how many come per call and
        ``timeout`` applies to each call.
        """
        addins: _AddinList = []
        token = ""
        tokens = PageTokens("ListAddins", self._client.endpoint)
        while True:
            request = addins_pb2.ListAddinsRequest(page_size=page_size, page_token=token)
            response = self._client._call(self._stub.ListAddins, request, timeout)
            addins.extend(response.addins)
            token = response.next_page_token
            if not tokens.follow(token):
                return addins

    def get(self, name: str, *, timeout: float | None = None) -> addins_pb2.Addin:
        """One add-in: state, source, bindings, hooks, commands, health and counters."""
        response = self._client._call(
            self._stub.GetAddin, addins_pb2.GetAddinRequest(name=name), timeout
        )
        return response.addin

    # -- changes -----------------------------------------------------------------------

    def load(
        self, name_or_path: str | os.PathLike[str], *, timeout: float | None = None
    ) -> AddinChange:
        """Import, start and route to an add-in; ``changed`` is False if it was loaded.

        ``name_or_path`` is a discovered add-in's name, or a path to a ``.py`` file or a
        package folder **on the server's filesystem** (the add-in is then named after
        the file stem). The server resolves a relative path against its own working
        directory, so pass absolute paths (``pacsctl addin load`` does that for you).
        """
        request = addins_pb2.LoadAddinRequest(name=os.fspath(name_or_path))
        response = self._client._call(self._stub.LoadAddin, request, timeout)
        return AddinChange(response.addin, response.changed)

    def unload(self, name: str, *, timeout: float | None = None) -> AddinChange:
        """Stop routing to the add-in, let calls in flight finish, stop it.

        The add-in stays listed (AVAILABLE) and can be loaded again by name.
        """
        response = self._client._call(
            self._stub.UnloadAddin, addins_pb2.UnloadAddinRequest(name=name), timeout
        )
        return AddinChange(response.addin, response.changed)

    def reload(self, name: str, *, timeout: float | None = None) -> AddinChange:
        """Re-import the add-in's code from disk and swap instances.

        If the new code fails, the running instance stays and the error is raised.
        ``changed`` is always True: a reload always replaces the instance.
        """
        response = self._client._call(
            self._stub.ReloadAddin, addins_pb2.ReloadAddinRequest(name=name), timeout
        )
        return AddinChange(response.addin, True)

    def enable(self, name: str, *, timeout: float | None = None) -> AddinChange:
        """Route traffic to a loaded add-in again (ADDIN_NOT_LOADED if it is not loaded)."""
        response = self._client._call(
            self._stub.EnableAddin, addins_pb2.EnableAddinRequest(name=name), timeout
        )
        return AddinChange(response.addin, response.changed)

    def disable(self, name: str, *, timeout: float | None = None) -> AddinChange:
        """Keep the add-in loaded but route nothing to it."""
        response = self._client._call(
            self._stub.DisableAddin, addins_pb2.DisableAddinRequest(name=name), timeout
        )
        return AddinChange(response.addin, response.changed)

    # -- settings and commands ---------------------------------------------------------

    def get_settings(self, name: str, *, timeout: float | None = None) -> dict[str, Any]:
        """The add-in's current settings, every field included."""
        response = self._client._call(
            self._stub.GetAddinSettings, addins_pb2.GetAddinSettingsRequest(name=name), timeout
        )
        return from_struct(response.settings)

    def update_settings(
        self,
        name: str,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        **more: Any,
    ) -> SettingsChange:
        """Validate and apply new values; settings not given keep theirs.

        ``update_settings("example_store", max_bytes=10)`` or, for names that are not
        Python identifiers (or are ``timeout``), ``update_settings("x", {"timeout": 5})``;
        both may be combined, keywords winning. Invalid values raise ``InvalidArgument``
        with reason ADDIN_SETTINGS_INVALID and metadata "field" and change nothing.
        """
        merged = {**(changes or {}), **more}
        request = addins_pb2.UpdateAddinSettingsRequest(
            name=name, settings=to_struct(merged, "settings")
        )
        response = self._client._call(self._stub.UpdateAddinSettings, request, timeout)
        return SettingsChange(from_struct(response.settings), response.changed)

    def invoke(
        self,
        name: str,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run a command the add-in declares with ``@command`` and return its result."""
        request = addins_pb2.InvokeCommandRequest(
            name=name, command=command, args=to_struct(args or {}, "args")
        )
        response = self._client._call(self._stub.InvokeCommand, request, timeout)
        return from_struct(response.result)


#: ``AddinsAPI.list`` shadows the builtin inside the class body, so annotate through this.
_AddinList = list[addins_pb2.Addin]


# -- Struct <-> dict ----------------------------------------------------------------------


def to_struct(data: Mapping[str, Any], field: str = "settings") -> struct_pb2.Struct:
    """A JSON-like mapping as a Struct.

    Accepts str keys and None, bool, int, float, str, mappings, lists and tuples as
    values. Anything a Struct cannot carry unchanged (other types, NaN/Infinity, ints
    beyond 2**53) raises ``InvalidArgument`` naming ``field`` before anything is sent.
    """
    struct = struct_pb2.Struct()
    try:
        _fill_struct(struct, data, field)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            str(exc), reason="INVALID_ARGUMENT", metadata={"field": field}
        ) from exc
    return struct


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a plain dict; integral numbers that a double holds exactly are ints.

    Keys come sorted: a Struct is a map, whose order the wire does not keep, and sorted
    keys give the same output for the same values every time.
    """
    return {key: _from_value(struct.fields[key]) for key in sorted(struct.fields)}


def _fill_struct(struct: struct_pb2.Struct, data: Mapping[str, Any], path: str) -> None:
    if not isinstance(data, Mapping):
        raise TypeError(f"{path} must be a mapping, not {type(data).__name__}")
    for key, item in data.items():
        if not isinstance(key, str):
            raise TypeError(f"{path} has a key that is not a string: {key!r}")
        _fill_value(struct.fields[key], item, f"{path}.{key}")


def _fill_value(value: struct_pb2.Value, item: Any, path: str) -> None:
    if item is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(item, bool):
        value.bool_value = item
    elif isinstance(item, int):
        if abs(item) > _EXACT_INT:
            raise ValueError(f"{path}: {item} is too large to be sent exactly (limit 2**53)")
        value.number_value = float(item)
    elif isinstance(item, float):
        if not math.isfinite(item):
            raise ValueError(f"{path}: {item!r} is not a finite number")
        value.number_value = item
    elif isinstance(item, str):
        value.string_value = item
    elif isinstance(item, Mapping):
        value.struct_value.SetInParent()  # so that {} is still a struct, not an unset value
        _fill_struct(value.struct_value, item, path)
    elif isinstance(item, list | tuple):
        values = value.list_value
        values.SetInParent()
        for index, element in enumerate(item):
            _fill_value(values.values.add(), element, f"{path}[{index}]")
    else:
        raise TypeError(f"{path}: {type(item).__name__} values cannot be sent ({item!r})")


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= _EXACT_INT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [_from_value(item) for item in value.list_value.values]
    return None  # null_value, or a Value with no kind set
