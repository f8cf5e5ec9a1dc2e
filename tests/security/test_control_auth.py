"""Bearer tokens and roles on the control plane, against real pacsd processes.

Every server here has tokens configured, so every call is authenticated (on loopback,
in plaintext: TLS is tests/security/test_control_tls.py). The SDK and pacsctl are the
clients; tokens are made by ``pacsd token create``, the way operators make them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from pacsd.admin.v1 import server_pb2
from pacsd.client import Client, Credentials, CredentialsError, Fleet
from pacsd.client.aio import AsyncClient
from pacsd.client.errors import PermissionDenied, Unauthenticated

from tests.conftest import PacsdProcess, console_script

ROLES = ("viewer", "operator", "admin")
TEST_ADDINS = Path(__file__).resolve().parent.parent / "addins"
EXIT_AUTH = 5


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    secret: str
    sha256: str
    toml: str


def create_token(name: str, role: str) -> Token:
    """``pacsd token create -o json``: the token once, and the table for the settings."""
    proc = subprocess.run(
        [console_script("pacsd"), "token", "create", "--name", name, "--role", role, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    doc = json.loads(proc.stdout)
    return Token(doc["name"], doc["role"], doc["token"], doc["sha256"], doc["toml"])


@pytest.fixture(scope="module")
def tokens() -> dict[str, Token]:
    return {role: create_token(f"{role}-bot", role) for role in ROLES}


@pytest.fixture
def secured(start_pacsd: Any, tmp_path: Path, tokens: dict[str, Token]) -> PacsdProcess:
    """A pacsd that accepts the three tokens, logging to a text and a JSON file too."""
    config = tmp_path / "auth.toml"
    config.write_text(
        f'log_file = "{tmp_path / "pacsd.log"}"\n'
        f'log_json_file = "{tmp_path / "pacsd.jsonl"}"\n' + "".join(t.toml for t in tokens.values())
    )
    server: PacsdProcess = start_pacsd(["--config", str(config)])
    return server


def pacsctl(
    server: PacsdProcess, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSCTL_")}
    if token is not None:
        env["PACSCTL_TOKEN"] = token
    return subprocess.run(
        [console_script("pacsctl"), "-e", server.endpoint, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_token_create_prints_the_token_once_and_only_its_hash_for_the_settings(
    tokens: dict[str, Token],
) -> None:
    viewer = tokens["viewer"]
    assert viewer.secret.startswith("pacsd_") and len(viewer.secret) > 40
    assert viewer.secret not in viewer.toml
    assert f'sha256 = "{viewer.sha256}"' in viewer.toml
    assert 'role = "viewer"' in viewer.toml and 'name = "viewer-bot"' in viewer.toml
    text = subprocess.run(
        [console_script("pacsd"), "token", "create", "--name", "ci", "--role", "operator"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert text.startswith("token: pacsd_") and "[[control_tokens]]" in text
    bad = subprocess.run(
        [console_script("pacsd"), "token", "create", "--name", "a b", "--role", "viewer"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert "invalid --name" in bad.stderr


def test_a_call_without_token_is_unauthenticated(secured: PacsdProcess) -> None:
    with Client(secured.endpoint) as client, pytest.raises(Unauthenticated) as exc:
        client.server.get()
    assert exc.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert exc.value.reason == "UNAUTHENTICATED"
    assert not exc.value.unreachable
    result = pacsctl(secured, "status")
    assert result.returncode == EXIT_AUTH, result.stderr
    assert "(UNAUTHENTICATED/UNAUTHENTICATED)" in result.stderr
    as_json = pacsctl(secured, "-w", "json", "server", "stop")
    assert as_json.returncode == EXIT_AUTH
    assert json.loads(as_json.stderr)["error"]["reason"] == "UNAUTHENTICATED"


def test_a_wrong_token_is_unauthenticated(secured: PacsdProcess, tokens: dict[str, Token]) -> None:
    forged = tokens["admin"].secret[:-2] + "xx"
    with Client(secured.endpoint, token=forged) as client, pytest.raises(Unauthenticated) as exc:
        client.server.get()
    assert exc.value.reason == "TOKEN_INVALID"
    assert forged not in str(exc.value)
    # The hash from the settings file is not a token either.
    hashed = Client(secured.endpoint, token=tokens["admin"].sha256)
    with hashed, pytest.raises(Unauthenticated):
        hashed.server.get()
    result = pacsctl(secured, "server", "stop", token=forged)
    assert result.returncode == EXIT_AUTH
    assert "TOKEN_INVALID" in result.stderr and forged not in result.stderr


def test_a_viewer_can_read_but_not_stop_the_server(
    secured: PacsdProcess, tokens: dict[str, Token]
) -> None:
    viewer = tokens["viewer"].secret
    status = pacsctl(secured, "-w", "json", "status", token=viewer)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["server"]["state"] == "SERVER_STATE_RUNNING"
    stop = pacsctl(secured, "server", "stop", token=viewer)
    assert stop.returncode == EXIT_AUTH
    assert "(PERMISSION_DENIED/PERMISSION_DENIED)" in stop.stderr
    with Client(secured.endpoint, token=viewer) as client:
        with pytest.raises(PermissionDenied) as exc:
            client.server.stop()
        assert exc.value.reason == "PERMISSION_DENIED"
        assert exc.value.metadata == {
            "required_role": "operator",
            "role": "viewer",
            "principal": "token:viewer-bot",
        }
        # Nothing happened: the listener still runs and reads still work.
        assert client.server.get().state == server_pb2.SERVER_STATE_RUNNING
        assert client.health("pacsd.dicom") == "SERVING"
        assert client.logs.levels()
        with pytest.raises(PermissionDenied):
            client.logs.set_level("DEBUG", "core")
        with pytest.raises(PermissionDenied):
            client.shutdown()
    assert secured.proc.poll() is None


def test_an_operator_can_stop_but_not_load_add_ins(
    secured: PacsdProcess, tokens: dict[str, Token]
) -> None:
    stop = pacsctl(secured, "-w", "json", "server", "stop", token=tokens["operator"].secret)
    assert stop.returncode == 0, stop.stderr
    assert json.loads(stop.stdout)["server"]["state"] == "SERVER_STATE_STOPPED"
    with Client(secured.endpoint, token=tokens["operator"].secret) as client:
        assert client.server.start().changed is True
        with pytest.raises(PermissionDenied) as exc:
            client.addins.load(TEST_ADDINS / "spy.py")
    assert exc.value.metadata["required_role"] == "admin"


def test_an_admin_can_load_an_add_in(secured: PacsdProcess, tokens: dict[str, Token]) -> None:
    with Client(secured.endpoint, token=tokens["admin"].secret) as client:
        assert client.addins.load(TEST_ADDINS / "spy.py").changed is True
        assert "spy" in {a.name for a in client.addins.list()}
    unload = pacsctl(secured, "addin", "unload", "spy", token=tokens["admin"].secret)
    assert unload.returncode == 0, unload.stderr


def test_streams_are_guarded_too(secured: PacsdProcess, tokens: dict[str, Token]) -> None:
    with Client(secured.endpoint) as client, pytest.raises(Unauthenticated):
        list(client.logs.stream(tail=5))
    with Client(secured.endpoint, token=tokens["viewer"].secret) as client:
        records = list(client.logs.stream(tail=5))
    assert records
    result = pacsctl(secured, "logs", "--tail", "3")
    assert result.returncode == EXIT_AUTH


def test_health_stays_open_for_probes(secured: PacsdProcess) -> None:
    with Client(secured.endpoint) as client:
        assert client.health() == "SERVING"
        assert client.health("pacsd.dicom") == "SERVING"
    assert pacsctl(secured, "health").returncode == 0


def test_reflection_needs_a_viewer(secured: PacsdProcess, tokens: dict[str, Token]) -> None:
    """grpcurl-style discovery describes the whole API: a read like any other."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    def services(metadata: tuple[tuple[str, str], ...]) -> set[str]:
        with grpc.insecure_channel(secured.endpoint) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            answers = stub.ServerReflectionInfo(iter([request]), timeout=10, metadata=metadata)
            return {s.name for a in answers for s in a.list_services_response.service}

    with pytest.raises(grpc.RpcError) as exc:
        services(())
    assert exc.value.code() is grpc.StatusCode.UNAUTHENTICATED
    bearer = (("authorization", f"Bearer {tokens['viewer'].secret}"),)
    assert "pacsd.admin.v1.ServerService" in services(bearer)


def test_async_client_and_fleet_take_a_token(
    secured: PacsdProcess, tokens: dict[str, Token]
) -> None:
    async def read() -> int:
        async with AsyncClient(secured.endpoint, token=tokens["viewer"].secret) as client:
            return int((await client.server.get()).state)

    assert asyncio.run(read()) == server_pb2.SERVER_STATE_RUNNING
    with Fleet.from_endpoints(secured.endpoint, token=tokens["viewer"].secret) as fleet:
        results = fleet.server.get()
    assert results.ok
    assert [s.state for s in results.values().values()] == [server_pb2.SERVER_STATE_RUNNING]
    with Fleet.from_endpoints(secured.endpoint) as fleet:
        results = fleet.server.get()
    assert isinstance(results[0].error, Unauthenticated)


def test_a_token_is_never_sent_in_plaintext_off_loopback() -> None:
    # Refused while building the client: nothing is sent, not even a connection attempt.
    with pytest.raises(CredentialsError, match="plaintext"):
        Client("pacsd.invalid:50051", token="pacsd_secret")
    with pytest.raises(CredentialsError, match="not both"):
        Client("127.0.0.1:1", token="x", credentials=Credentials(name="site"))
    with pytest.raises(CredentialsError, match="empty"):
        Client("127.0.0.1:1", token=" ")


def test_tokens_never_reach_the_logs(
    secured: PacsdProcess, tokens: dict[str, Token], tmp_path: Path
) -> None:
    forged = "pacsd_" + "A" * 43
    calls: list[Callable[[Client], Any]] = [
        lambda c: c.server.get(),
        lambda c: c.server.stop(),
        lambda c: c.server.start(),
        lambda c: c.aetitles.create("PEER", "127.0.0.1", 104),
        lambda c: c.addins.load(TEST_ADDINS / "spy.py"),
    ]
    for secret in (*[t.secret for t in tokens.values()], forged):
        with Client(secured.endpoint, token=secret) as client:
            for call in calls:
                with contextlib.suppress(PermissionDenied, Unauthenticated):
                    call(client)
    with Client(secured.endpoint, token=tokens["admin"].secret) as client:
        client.shutdown(grace_period=0)
    secured.wait()
    logs = {
        "stderr": secured.stderr(),
        "log_file": (tmp_path / "pacsd.log").read_text(),
        "json_log": (tmp_path / "pacsd.jsonl").read_text(),
    }
    for where, text in logs.items():
        for secret in (*[t.secret for t in tokens.values()], forged):
            assert secret not in text, f"a token leaked into {where}"
    # What the audit does say: who, by name, for allowed and refused calls alike.
    records = [json.loads(line) for line in logs["json_log"].splitlines()]
    audit = [r["extras"] for r in records if r["level"] == "AUDIT"]
    who = {(r.get("rpc"), r.get("principal"), r.get("code")) for r in audit}
    assert ("pacsd.admin.v1.ServerService/StopServer", "token:operator-bot", "OK") in who
    assert (
        "pacsd.admin.v1.ServerService/StopServer",
        "token:viewer-bot",
        "PERMISSION_DENIED",
    ) in who
    assert ("pacsd.admin.v1.ServerService/StopServer", "", "UNAUTHENTICATED") in who
    assert "StopServer by token:operator-bot (ipv4:127.0.0.1:" in logs["log_file"]


def test_the_token_flag_works_alone_and_wins_over_the_variable(
    secured: PacsdProcess, tokens: dict[str, Token], tmp_path: Path
) -> None:
    """``--token`` is what scripts without an environment use; when both are given the
    flag is the more specific choice, so it must be the credential sent."""
    viewer, operator = tokens["viewer"].secret, tokens["operator"].secret
    forged = "pacsd_" + "B" * 43
    alone = pacsctl(secured, "--token", viewer, "-w", "json", "status")
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["server"]["state"] == "SERVER_STATE_RUNNING"
    # A forged variable does not matter when the flag holds a good token...
    stop = pacsctl(secured, "--token", operator, "-w", "json", "server", "stop", token=forged)
    assert stop.returncode == 0, stop.stderr
    assert json.loads(stop.stdout)["server"]["state"] == "SERVER_STATE_STOPPED"
    # ... and an operator's variable lends nothing to a viewer's flag.
    start = pacsctl(secured, "--token", viewer, "server", "start", token=operator)
    assert start.returncode == EXIT_AUTH
    assert "(PERMISSION_DENIED/PERMISSION_DENIED)" in start.stderr
    wrong = pacsctl(secured, "--token", forged, "server", "start", token=operator)
    assert wrong.returncode == EXIT_AUTH
    assert "TOKEN_INVALID" in wrong.stderr and forged not in wrong.stderr
    with Client(secured.endpoint, token=operator) as client:
        assert client.server.get().state == server_pb2.SERVER_STATE_STOPPED
        client.server.start()
    # A shut-down server has written all its logs.
    with Client(secured.endpoint, token=tokens["admin"].secret) as client:
        client.shutdown(grace_period=0)
    secured.wait()
    for text in (secured.stderr(), (tmp_path / "pacsd.log").read_text()):
        # The audit names who the flag's token was, never the token.
        assert "StopServer by token:operator-bot (ipv4:127.0.0.1:" in text
        assert "StartServer by token:viewer-bot (ipv4:127.0.0.1:" in text
        assert "UNAUTHENTICATED/TOKEN_INVALID" in text
        for secret in (viewer, operator, forged):
            assert secret not in text
