"""The AE title registry end to end: a real pacsd, the SDK, pacsctl, DCMTK storescp.

CRUD and its idempotency, validation errors naming the field, pagination, persistence
across a restart on the same data directory, and C-ECHO to registered peers.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from pacsd.admin.v1 import aetitles_pb2, aetitles_pb2_grpc
from pacsd.client import AlreadyExists, Client, InvalidArgument, NotFound

from tests.conftest import PacsdProcess, run_pacsctl
from tests.integration.dicom_peers import free_port, storescp


@pytest.fixture
def client(pacsd: PacsdProcess) -> Iterator[Client]:
    with Client(pacsd.endpoint) as c:
        yield c


def pacsctl_json(
    server: PacsdProcess, *args: str, expect: int = 0
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Run ``pacsctl -w json ...``; the parsed stdout (or the stderr error) and the run."""
    run = run_pacsctl(server, "-w", "json", *args)
    assert run.returncode == expect, (run.returncode, run.stdout, run.stderr)
    if expect == 2:  # usage errors are click's text, and nothing was sent
        return {}, run
    text = run.stdout if run.stdout.strip() else run.stderr
    return (json.loads(text) if text.strip() else {}), run


# -- SDK -------------------------------------------------------------------------------


def test_crud_through_the_sdk_is_idempotent(client: Client) -> None:
    api = client.aetitles
    assert api.list() == []

    created = api.create("ARCHIVE", "127.0.0.1", 104, "long-term archive")
    assert created.changed is True
    assert (created.ae_title.ae_title, created.ae_title.host, created.ae_title.port) == (
        "ARCHIVE",
        "127.0.0.1",
        104,
    )
    assert api.create("ARCHIVE", "127.0.0.1", 104, "long-term archive").changed is False
    # Surrounding spaces are not part of an AE title.
    assert api.create(" ARCHIVE ", "127.0.0.1", 104, "long-term archive").changed is False

    with pytest.raises(AlreadyExists) as conflict:
        api.create("ARCHIVE", "10.0.0.9", 104)
    assert conflict.value.reason == "AE_TITLE_EXISTS"
    assert conflict.value.metadata == {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": "104"}

    got = api.get("ARCHIVE")
    assert (got.host, got.port, got.description) == ("127.0.0.1", 104, "long-term archive")

    updated = api.update("ARCHIVE", port=11112)
    assert updated.changed is True
    assert (updated.ae_title.host, updated.ae_title.port) == ("127.0.0.1", 11112)
    assert updated.ae_title.description == "long-term archive"  # untouched
    assert api.update("ARCHIVE", port=11112, host="127.0.0.1").changed is False
    assert api.update("ARCHIVE", description="").ae_title.description == ""

    assert [e.ae_title for e in api.list()] == ["ARCHIVE"]
    assert api.delete("ARCHIVE") is True
    assert api.delete("ARCHIVE") is False
    with pytest.raises(NotFound) as missing:
        api.get("ARCHIVE")
    assert missing.value.reason == "AE_TITLE_NOT_FOUND"
    assert missing.value.metadata == {"ae_title": "ARCHIVE"}
    with pytest.raises(NotFound):
        api.update("ARCHIVE", port=1)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda api: api.create("A" * 17, "h", 104), "ae_title.ae_title"),
        (lambda api: api.create("", "h", 104), "ae_title.ae_title"),
        (lambda api: api.create("BACK\\SLASH", "h", 104), "ae_title.ae_title"),
        (lambda api: api.create("OK", "bad host!", 104), "ae_title.host"),
        (lambda api: api.create("OK", "", 104), "ae_title.host"),
        (lambda api: api.create("OK", "h", 0), "ae_title.port"),
        (lambda api: api.create("OK", "h", 65536), "ae_title.port"),
        (lambda api: api.create("OK", "h", -5), "ae_title.port"),
        (lambda api: api.create("OK", "h", 104, "two\nlines"), "ae_title.description"),
        (lambda api: api.get("    "), "ae_title"),
        (lambda api: api.delete("X" * 20), "ae_title"),
        (lambda api: api.echo("BAD\\AE"), "ae_title"),
        (lambda api: api.list(page_size=-1), "page_size"),
        (lambda api: api.update("OK"), "update_mask"),
    ],
)
def test_invalid_values_name_the_field(
    client: Client, call: Callable[[Any], Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        call(client.aetitles)
    assert info.value.reason == "INVALID_ARGUMENT"
    assert info.value.metadata.get("field") == field
    assert client.aetitles.list() == []


def test_update_validation_and_masks_over_the_wire(pacsd: PacsdProcess, client: Client) -> None:
    client.aetitles.create("PEER", "127.0.0.1", 104)
    with pytest.raises(InvalidArgument) as info:
        client.aetitles.update("PEER", port=70000)
    assert info.value.metadata["field"] == "ae_title.port"
    with grpc.insecure_channel(pacsd.endpoint) as channel:
        stub = aetitles_pb2_grpc.AETitleServiceStub(channel)
        # The AE title is the key: it cannot be "updated" through the mask.
        with pytest.raises(grpc.RpcError) as err:
            stub.UpdateAETitle(
                aetitles_pb2.UpdateAETitleRequest(
                    ae_title=aetitles_pb2.AETitle(ae_title="PEER", host="h"),
                    update_mask={"paths": ["ae_title"]},
                ),
                timeout=5,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # An empty mask replaces every field, as the proto says.
        rsp = stub.UpdateAETitle(
            aetitles_pb2.UpdateAETitleRequest(
                ae_title=aetitles_pb2.AETitle(
                    ae_title="PEER", host="pacs.example.org", port=4242, description="all"
                )
            ),
            timeout=5,
        )
        assert rsp.changed
        assert (rsp.ae_title.host, rsp.ae_title.port, rsp.ae_title.description) == (
            "pacs.example.org",
            4242,
            "all",
        )
    assert client.aetitles.get("PEER").port == 4242


def test_pagination(pacsd: PacsdProcess, client: Client) -> None:
    titles = [f"PEER{i}" for i in range(7)]
    for n, title in enumerate(reversed(titles)):
        client.aetitles.create(title, "127.0.0.1", 1000 + n)
    with grpc.insecure_channel(pacsd.endpoint) as channel:
        stub = aetitles_pb2_grpc.AETitleServiceStub(channel)

        def page(token: str, size: int = 3) -> aetitles_pb2.ListAETitlesResponse:
            request = aetitles_pb2.ListAETitlesRequest(page_size=size, page_token=token)
            return stub.ListAETitles(request, timeout=5)

        first = page("")
        assert [e.ae_title for e in first.ae_titles] == titles[:3]
        assert first.next_page_token
        # An entry removed between pages neither shifts nor repeats the next page.
        client.aetitles.delete("PEER1")
        second = page(first.next_page_token)
        assert [e.ae_title for e in second.ae_titles] == titles[3:6]
        third = page(second.next_page_token)
        assert [e.ae_title for e in third.ae_titles] == titles[6:]
        assert third.next_page_token == ""

        for bad in ("not-a-token", "QUJD", first.next_page_token + "x"):
            with pytest.raises(grpc.RpcError) as err:
                page(bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgument) as info:
        client.aetitles._client._call(
            client.aetitles._stub.ListAETitles,
            aetitles_pb2.ListAETitlesRequest(page_token="bm9wZQ=="),
        )
    assert info.value.reason == "INVALID_PAGE_TOKEN"
    assert info.value.metadata["field"] == "page_token"
    # The SDK follows every page.
    assert [e.ae_title for e in client.aetitles.list(page_size=2)] == [
        t for t in titles if t != "PEER1"
    ]


def test_entries_persist_across_a_restart(start_pacsd: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "persistent"
    first = start_pacsd(args=["--data-dir", str(data_dir)])
    with Client(first.endpoint) as c:
        c.aetitles.create("ARCHIVE", "pacs.example.org", 104, "kept on disk")
        c.shutdown(0)
    assert first.wait(30) == 0
    second = start_pacsd(args=["--data-dir", str(data_dir)])
    with Client(second.endpoint) as c:
        assert c.server.get().data_dir == str(data_dir.resolve())
        entry = c.aetitles.get("ARCHIVE")
    assert (entry.host, entry.port, entry.description) == ("pacs.example.org", 104, "kept on disk")


def test_reflection_lists_the_service(pacsd: PacsdProcess) -> None:
    with grpc.insecure_channel(pacsd.endpoint) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert "pacsd.admin.v1.AETitleService" in services


# -- pacsctl ---------------------------------------------------------------------------


def test_pacsctl_ae_crud_json(pacsd: PacsdProcess) -> None:
    add = ("ae", "add", "ARCHIVE", "127.0.0.1", "104", "--description", "PACS")
    doc, _ = pacsctl_json(pacsd, *add)
    assert doc == {
        "ae_title": {
            "ae_title": "ARCHIVE",
            "host": "127.0.0.1",
            "port": 104,
            "description": "PACS",
            "allowed_addresses": [],
            "permissions": "all",
        },
        "changed": True,
    }
    doc, _ = pacsctl_json(pacsd, *add)
    assert doc["changed"] is False
    doc, _ = pacsctl_json(pacsd, "ae", "add", "ARCHIVE", "127.0.0.1", "105", expect=1)
    assert doc["error"]["reason"] == "AE_TITLE_EXISTS"
    assert doc["error"]["metadata"]["port"] == "104"

    pacsctl_json(pacsd, "ae", "add", "MODALITY", "10.1.2.3", "4006")
    doc, _ = pacsctl_json(pacsd, "ae", "list")
    assert [e["ae_title"] for e in doc["ae_titles"]] == ["ARCHIVE", "MODALITY"]
    doc, _ = pacsctl_json(pacsd, "ae", "get", "MODALITY")
    assert doc["ae_title"]["host"] == "10.1.2.3"

    doc, _ = pacsctl_json(pacsd, "ae", "update", "MODALITY", "--port", "4007")
    assert (doc["changed"], doc["ae_title"]["port"], doc["ae_title"]["host"]) == (
        True,
        4007,
        "10.1.2.3",
    )
    doc, _ = pacsctl_json(pacsd, "ae", "update", "MODALITY", "--port", "4007")
    assert doc["changed"] is False
    doc, _ = pacsctl_json(pacsd, "ae", "update", "MODALITY", "--port", "0", expect=1)
    assert doc["error"]["reason"] == "INVALID_ARGUMENT"
    assert doc["error"]["metadata"]["field"] == "ae_title.port"
    _, run = pacsctl_json(pacsd, "ae", "update", "MODALITY", expect=2)
    assert "at least one of" in run.stderr

    doc, _ = pacsctl_json(pacsd, "ae", "add", "BAD", "not a host", "104", expect=1)
    assert doc["error"]["code"] == "INVALID_ARGUMENT"
    assert doc["error"]["metadata"]["field"] == "ae_title.host"

    doc, _ = pacsctl_json(pacsd, "ae", "remove", "MODALITY")
    assert doc == {"changed": True}
    doc, _ = pacsctl_json(pacsd, "ae", "remove", "MODALITY")
    assert doc == {"changed": False}
    doc, _ = pacsctl_json(pacsd, "ae", "get", "MODALITY", expect=1)
    assert (doc["error"]["code"], doc["error"]["reason"]) == ("NOT_FOUND", "AE_TITLE_NOT_FOUND")


def test_pacsctl_ae_tables(pacsd: PacsdProcess) -> None:
    run = run_pacsctl(pacsd, "ae", "list")
    assert (run.returncode, run.stdout.strip()) == (0, "no AE titles")
    run = run_pacsctl(pacsd, "ae", "add", "ARCHIVE", "127.0.0.1", "104")
    assert run.returncode == 0
    assert run.stdout.strip() == "AE title ARCHIVE added (127.0.0.1:104)"
    run = run_pacsctl(pacsd, "ae", "add", "ARCHIVE", "127.0.0.1", "104")
    assert "already registered" in run.stdout and "(no change)" in run.stdout
    run = run_pacsctl(pacsd, "ae", "list")
    assert run.returncode == 0
    lines = run.stdout.splitlines()
    assert "AE TITLE" in lines[1] and "HOST" in lines[1] and "PORT" in lines[1]
    assert "| ARCHIVE  | 127.0.0.1 | 104  | any          | all         | -           |" in lines
    run = run_pacsctl(pacsd, "ae", "get", "NOPE")
    assert run.returncode == 1
    assert run.stdout == ""
    assert "(NOT_FOUND/AE_TITLE_NOT_FOUND)" in run.stderr


def test_pacsctl_ae_echo_storescp(pacsd: PacsdProcess, tmp_path: Path) -> None:
    with storescp(tmp_path) as scp:
        pacsctl_json(pacsd, "ae", "add", "STORESCP", "127.0.0.1", str(scp.port))
        doc, _ = pacsctl_json(pacsd, "ae", "echo", "STORESCP")
        assert doc["ae_title"] == "STORESCP"
        assert doc["echo"]["success"] is True
        assert doc["echo"]["status"] == 0
        assert doc["echo"]["error"] == ""
        assert doc["echo"]["round_trip_ms"] > 0
        run = run_pacsctl(pacsd, "ae", "echo", "STORESCP", "--peer-timeout", "5")
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("C-ECHO to STORESCP: success (status 0x0000")


def test_pacsctl_ae_echo_of_a_closed_port_fails_with_a_reason(pacsd: PacsdProcess) -> None:
    pacsctl_json(pacsd, "ae", "add", "CLOSED", "127.0.0.1", str(free_port()))
    doc, _ = pacsctl_json(pacsd, "ae", "echo", "CLOSED", expect=1)
    assert doc["echo"]["success"] is False
    assert "cannot connect to CLOSED" in doc["echo"]["error"]
    assert "refused" in doc["echo"]["error"].lower()
    run = run_pacsctl(pacsd, "ae", "echo", "CLOSED")
    assert run.returncode == 1
    assert run.stdout.startswith("C-ECHO to CLOSED failed: cannot connect")


def test_pacsctl_ae_echo_of_an_unknown_title(pacsd: PacsdProcess) -> None:
    doc, run = pacsctl_json(pacsd, "ae", "echo", "NOBODY", expect=1)
    assert run.stdout == ""
    assert doc["error"]["reason"] == "AE_TITLE_NOT_FOUND"
    assert doc["error"]["code"] == "NOT_FOUND"


def test_sdk_echo_reports_the_peer_outcome(client: Client, tmp_path: Path) -> None:
    with storescp(tmp_path) as scp:
        client.aetitles.create("STORESCP", "127.0.0.1", scp.port)
        ok = client.aetitles.echo("STORESCP", peer_timeout=5)
        assert (ok.success, ok.status, ok.error) == (True, 0, "")
    # The same peer, now gone.
    gone = client.aetitles.echo("STORESCP")
    assert gone.success is False
    assert "refused" in gone.error.lower()
