"""``client.addins`` (pacsd.client.AddinsAPI) against real pacsd processes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2
from pacsd.admin.v1 import addins_pb2
from pacsd.client import (
    AddinChange,
    Client,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    SettingsChange,
)
from pacsd.client.addins import from_struct, to_struct

from tests.client.test_addins_cli import (
    EXAMPLE,
    SC,
    TEST_ADDINS,
    sc_instance,
    store,
    write_echo_args,
)
from tests.client.test_isolation import BLOCKED
from tests.conftest import PacsdProcess


@pytest.fixture
def pacsd(pacsd_no_storage: PacsdProcess) -> PacsdProcess:
    """These tests load add-ins that claim storage SOP classes: no built-in storage."""
    return pacsd_no_storage


@pytest.fixture
def client(pacsd: PacsdProcess) -> Iterator[Client]:
    with Client(pacsd.endpoint, timeout=20) as c:
        yield c


def test_load_get_store_and_invoke(pacsd: PacsdProcess, client: Client) -> None:
    result = client.addins.load(EXAMPLE)  # a Path is accepted as well as a str
    assert isinstance(result, AddinChange)
    assert result.changed is True
    assert isinstance(result.addin, addins_pb2.Addin)
    assert result.addin.name == "example_store"
    assert result.addin.state == addins_pb2.ADDIN_STATE_ENABLED
    assert client.addins.load(str(EXAMPLE)).changed is False

    got = client.addins.get("example_store")
    assert got.source == f"path:{EXAMPLE}"
    assert list(got.commands) == ["stats"]
    assert SC in {b.sop_class_uid for b in got.bindings}

    datasets = [sc_instance() for _ in range(2)]
    assert store(pacsd.dicom_port, *datasets) == [0, 0]
    stats = client.addins.invoke("example_store", "stats")
    assert stats == {
        "stored": 2,
        "associations": 1,
        "last_sop_instance_uid": datasets[-1].SOPInstanceUID,
    }
    assert type(stats["stored"]) is int
    assert client.addins.get("example_store").counters.calls == 2


def test_list_follows_pagination(pacsd: PacsdProcess, client: Client) -> None:
    client.addins.load(EXAMPLE)
    client.addins.load(TEST_ADDINS / "spy.py")
    everything = client.addins.list()
    names = [a.name for a in everything]
    assert names == sorted(names)
    assert {"verification", "example_store", "spy"} <= set(names)
    # One add-in per page: only complete if every next_page_token is followed.
    assert [a.name for a in client.addins.list(page_size=1)] == names
    assert [a.name for a in client.addins.list(page_size=2)] == names
    with pytest.raises(InvalidArgument) as caught:
        client.addins.list(page_size=-1)
    assert caught.value.metadata["field"] == "page_size"


def test_settings_round_trip(pacsd: PacsdProcess, client: Client) -> None:
    client.addins.load(EXAMPLE)
    assert client.addins.get_settings("example_store") == {"folder": "", "max_bytes": 0}

    result = client.addins.update_settings("example_store", max_bytes=10)
    assert result == SettingsChange({"folder": "", "max_bytes": 10}, True)
    assert type(result.settings["max_bytes"]) is int
    assert client.addins.update_settings("example_store", {"max_bytes": 10}).changed is False
    assert store(pacsd.dicom_port, sc_instance()) == [0xA700]

    # dict and keywords combine, keywords winning.
    both = client.addins.update_settings(
        "example_store", {"max_bytes": 5, "folder": "/tmp/unused"}, max_bytes=0
    )
    assert both.settings == {"folder": "/tmp/unused", "max_bytes": 0}
    assert client.addins.get_settings("example_store") == both.settings


def test_idempotent_changes(pacsd: PacsdProcess, client: Client) -> None:
    client.addins.load(EXAMPLE)
    assert client.addins.disable("example_store").changed is True
    again = client.addins.disable("example_store")
    assert again.changed is False and again.addin.state == addins_pb2.ADDIN_STATE_DISABLED
    assert client.addins.enable("example_store").changed is True
    assert client.addins.enable("example_store").changed is False
    reloaded = client.addins.reload("example_store")
    assert reloaded.changed is True and reloaded.addin.state == addins_pb2.ADDIN_STATE_ENABLED
    assert client.addins.unload("example_store").changed is True
    gone = client.addins.unload("example_store")
    assert gone.changed is False and gone.addin.state == addins_pb2.ADDIN_STATE_AVAILABLE


def test_errors_are_typed_with_reasons(pacsd: PacsdProcess, client: Client, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as not_found:
        client.addins.get("nope")
    assert not_found.value.reason == "ADDIN_NOT_FOUND"

    with pytest.raises(FailedPrecondition) as conflict:
        client.addins.load(TEST_ADDINS / "echo_twin.py")
    assert conflict.value.reason == "ADDIN_CONFLICT"
    assert set(conflict.value.metadata["addins"].split(",")) == {"verification", "echo_twin"}

    with pytest.raises(FailedPrecondition) as load_failed:
        client.addins.load(TEST_ADDINS / "broken_start.py")
    assert load_failed.value.reason == "ADDIN_LOAD_FAILED"
    assert load_failed.value.metadata["error"]

    client.addins.load(EXAMPLE)
    with pytest.raises(InvalidArgument) as invalid:
        client.addins.update_settings("example_store", max_bytez=1)
    assert invalid.value.reason == "ADDIN_SETTINGS_INVALID"
    assert invalid.value.metadata["field"] == "max_bytez"

    with pytest.raises(NotFound) as no_command:
        client.addins.invoke("example_store", "nope")
    assert no_command.value.reason == "COMMAND_NOT_FOUND"

    client.addins.load(write_echo_args(tmp_path))
    with pytest.raises(InternalError) as command_failed:
        client.addins.invoke("echo_args", "fail")
    assert command_failed.value.reason == "COMMAND_FAILED"

    client.addins.unload("example_store")
    with pytest.raises(FailedPrecondition) as not_loaded:
        client.addins.invoke("example_store", "stats")
    assert not_loaded.value.reason == "ADDIN_NOT_LOADED"


def test_invoke_args_reach_the_addin(pacsd: PacsdProcess, client: Client, tmp_path: Path) -> None:
    client.addins.load(write_echo_args(tmp_path))
    args: dict[str, Any] = {
        "count": 3,
        "ratio": 0.25,
        "flag": False,
        "none": None,
        "text": "x",
        "nested": {"list": [1, [2, "three"], {}], "empty": {}},
        "tuple": (1, 2),
        "no_items": [],
    }
    result = client.addins.invoke("echo_args", "echo", args)
    assert result["args"] == {**args, "tuple": [1, 2]}
    assert result["types"] == {
        "count": "int",
        "ratio": "float",
        "flag": "bool",
        "none": "NoneType",
        "text": "str",
        "nested": "dict",
        "tuple": "list",
        "no_items": "list",
    }


def test_unsendable_values_fail_before_any_call(client: Client) -> None:
    # Nothing is loaded under these names: the client must refuse before asking.
    for bad in (
        {"x": math.nan},
        {"x": math.inf},
        {"x": 2**60},
        {"x": {1, 2}},
        {"x": b"bytes"},
        {"x": {"nested": object()}},
        {1: "non-string key"},
    ):
        with pytest.raises(InvalidArgument) as caught:
            client.addins.invoke("no_such_addin", "cmd", bad)  # type: ignore[arg-type]
        assert caught.value.reason == "INVALID_ARGUMENT"
        assert caught.value.metadata == {"field": "args"}
        with pytest.raises(InvalidArgument) as caught:
            client.addins.update_settings("no_such_addin", bad)  # type: ignore[arg-type]
        assert caught.value.metadata == {"field": "settings"}


def test_struct_conversion() -> None:
    data: dict[str, Any] = {
        "int": 7,
        "negative": -3,
        "float": 2.5,
        "integral_float": 4.0,
        "limit": 2**53,
        "beyond": 2.0**60,
        "bool": True,
        "null": None,
        "text": "t",
        "empty_dict": {},
        "empty_list": [],
        "deep": {"a": [{"b": 1.0}]},
    }
    struct = to_struct(data)
    assert struct.fields["empty_dict"].WhichOneof("kind") == "struct_value"
    assert struct.fields["empty_list"].WhichOneof("kind") == "list_value"
    assert struct.fields["null"].WhichOneof("kind") == "null_value"
    back = from_struct(struct_pb2.Struct.FromString(struct.SerializeToString()))
    assert back == {**data, "integral_float": 4, "deep": {"a": [{"b": 1}]}}
    assert type(back["int"]) is int and type(back["integral_float"]) is int
    assert type(back["float"]) is float
    assert type(back["beyond"]) is float  # not exactly an int a double can promise
    assert type(back["bool"]) is bool


ISOLATED = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    BLOCKED = tuple(sys.argv[2].split(","))


    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"blocked for this test: {name}")
            return None


    sys.meta_path.insert(0, Blocker())
    from pacsd.client import Client, NotFound

    with Client(sys.argv[1], timeout=20) as client:
        names = [a.name for a in client.addins.list(page_size=1)]
        change = client.addins.load(sys.argv[3])
        settings = client.addins.update_settings("example_store", max_bytes=3).settings
        stats = client.addins.invoke("example_store", "stats")
        try:
            client.addins.get("nope")
            error = None
        except NotFound as exc:
            error = exc.code.name
    print(json.dumps({"names": names, "changed": change.changed, "settings": settings,
                      "stats": stats, "error": error}))
    """
)


def test_addins_api_needs_only_grpcio_and_protobuf(pacsd: PacsdProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-c", ISOLATED, pacsd.endpoint, ",".join(BLOCKED), str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert "verification" in out["names"]
    assert out["changed"] is True
    assert out["settings"] == {"folder": "", "max_bytes": 3}
    assert out["stats"] == {"stored": 0, "associations": 0, "last_sop_instance_uid": ""}
    assert out["error"] == "NOT_FOUND"
