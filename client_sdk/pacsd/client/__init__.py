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
"""

from pacsd.client._json import message_to_dict, message_to_json
from pacsd.client.addins import AddinChange, AddinsAPI, SettingsChange
from pacsd.client.client import DEFAULT_ENDPOINT, DEFAULT_TIMEOUT, Change, Client, ServerAPI
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
from pacsd.client.storage import Deletion, StorageAPI, StudiesPage, StudyList

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_TIMEOUT",
    "AddinChange",
    "AddinsAPI",
    "AlreadyExists",
    "Change",
    "Client",
    "DeadlineExceeded",
    "Deletion",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "PacsdError",
    "PermissionDenied",
    "ServerAPI",
    "ServerUnavailable",
    "SettingsChange",
    "StorageAPI",
    "StudiesPage",
    "StudyList",
    "Unauthenticated",
    "Unimplemented",
    "from_rpc_error",
    "message_to_dict",
    "message_to_json",
]
