"""Python SDK for the pacsd control plane (gRPC ``pacsd.admin.v1``).

Needs only grpcio and protobuf; googleapis-common-protos, when installed, adds the
server's error reasons to exceptions. The ``pacsctl`` command line lives in
``pacsd.client.cli`` and is the only part that needs click.

    from pacsd.client import Client

    with Client("127.0.0.1:50051") as client:
        print(client.server.get().state)
        client.server.pause()
        client.addins.load("/srv/pacsd/addins/example_store.py")
        print(client.addins.invoke("example_store", "stats"))

Many servers at once: ``Fleet`` (and ``AsyncFleet`` on asyncio, with ``AsyncClient``)
runs any call on every server of an inventory (``fleet.toml``) or endpoint list and
returns one result or error per server; see docs/fleet.md.
"""

from typing import TYPE_CHECKING, Any

from pacsd.client._json import message_to_dict, message_to_json
from pacsd.client.addins import AddinChange, AddinsAPI, SettingsChange
from pacsd.client.associations import AssociationsAPI
from pacsd.client.client import DEFAULT_ENDPOINT, DEFAULT_TIMEOUT, Change, Client, ServerAPI
from pacsd.client.credentials import Credentials, CredentialsError
from pacsd.client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    PacsdError,
    PermissionDenied,
    ServerUnavailable,
    Unauthenticated,
    Unimplemented,
    from_rpc_error,
)
from pacsd.client.fleet import Fleet, FleetResults, ServerResult
from pacsd.client.inventory import (
    FleetServer,
    Inventory,
    InventoryError,
    Selector,
    load_inventory,
)
from pacsd.client.logs import LevelChange, LogLevels, LogsAPI
from pacsd.client.storage import Deletion, StorageAPI, StudiesPage, StudyList

if TYPE_CHECKING:
    from pacsd.client.aio import AsyncClient, AsyncFleet

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_TIMEOUT",
    "AddinChange",
    "AddinsAPI",
    "AlreadyExists",
    "AssociationsAPI",
    "AsyncClient",
    "AsyncFleet",
    "Change",
    "Client",
    "Credentials",
    "CredentialsError",
    "DeadlineExceeded",
    "Deletion",
    "FailedPrecondition",
    "Fleet",
    "FleetResults",
    "FleetServer",
    "InternalError",
    "InvalidArgument",
    "Inventory",
    "InventoryError",
    "LevelChange",
    "LogLevels",
    "LogsAPI",
    "NotFound",
    "PacsdError",
    "PermissionDenied",
    "Selector",
    "ServerAPI",
    "ServerResult",
    "ServerUnavailable",
    "SettingsChange",
    "StorageAPI",
    "StudiesPage",
    "StudyList",
    "Unauthenticated",
    "Unimplemented",
    "from_rpc_error",
    "load_inventory",
    "message_to_dict",
    "message_to_json",
]


def __getattr__(name: str) -> Any:
    # The asyncio half is imported on first use: pacsctl and synchronous scripts never
    # pay for asyncio and grpc.aio.
    if name in ("AsyncClient", "AsyncFleet"):
        from pacsd.client import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'pacsd.client' has no attribute {name!r}")
