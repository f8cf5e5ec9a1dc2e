"""The control plane over TLS and mutual TLS, and the settings that guard it.

Real pacsd processes with certificates from ``pacsd.client.certs`` (what operators
use), driven by the SDK and pacsctl over loopback. The settings checks run in-process:
they must refuse an exposed control plane before anything is bound.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from pacsd.admin.v1 import server_pb2
from pacsd.client import Client
from pacsd.client.certs import Issued, create_ca, issue_certificate
from pacsd.client.errors import (
    PacsdError,
    PermissionDenied,
    ServerUnavailable,
    Unauthenticated,
)
from pacsd.server.config import ConfigError, Settings, load_settings
from pacsd.server.control.tls import ControlTLS, ControlTLSError
from pacsd.server.control.tokens import hash_token, new_token, toml_entry

from tests.conftest import PacsdProcess, console_script

EXIT_AUTH = 5
EXIT_UNREACHABLE = 3
#: Short: a refused TLS handshake shows as a deadline while gRPC retries to connect.
REFUSED_TIMEOUT = 2.0


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Issued
    operator: Issued  # client certificate mapped to "operator"
    stranger: Issued  # client certificate the server maps to no role
    other_ca: Path
    other_server: Issued  # same names, signed by the other CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("control-pki")
    ca = create_ca(root / "ca", common_name="control test CA")
    other = create_ca(root / "other-ca", common_name="other test CA")
    sans = ["127.0.0.1", "localhost"]
    return Pki(
        ca=ca.cert,
        server=issue_certificate(root / "ca", "server", "pacsd-control", sans, usage="server"),
        operator=issue_certificate(root / "ca", "ops", "ops-host", usage="client"),
        stranger=issue_certificate(root / "ca", "stranger", "stranger", usage="client"),
        other_ca=other.cert,
        other_server=issue_certificate(
            root / "other-ca", "server", "pacsd-control", sans, usage="server"
        ),
    )


def _toml_path(path: Path) -> str:
    return json.dumps(str(path))  # a TOML basic string is a JSON string here


def write_config(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def tls_lines(cert: Path, key: Path) -> list[str]:
    return [f"control_tls_cert = {_toml_path(cert)}", f"control_tls_key = {_toml_path(key)}"]


def pacsctl(server: PacsdProcess, *args: str, env: dict[str, str] | None = None) -> Any:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PACSCTL_")}
    return subprocess.run(
        [console_script("pacsctl"), "-e", server.endpoint, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **(env or {})},
    )


# -- TLS with server verification and a token ------------------------------------------------

ADMIN_TOKEN = new_token()


@pytest.fixture
def tls_server(start_pacsd: Any, tmp_path: Path, pki: Pki) -> PacsdProcess:
    # Files of its own, so a test may rotate them.
    cert, key = tmp_path / "control.crt", tmp_path / "control.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    config = write_config(
        tmp_path / "tls.toml",
        [*tls_lines(cert, key), toml_entry("ops", "admin", hash_token(ADMIN_TOKEN))],
    )
    server: PacsdProcess = start_pacsd(["--config", str(config)])
    return server


def test_tls_with_server_verification(tls_server: PacsdProcess, pki: Pki) -> None:
    with Client(tls_server.endpoint, cacert=pki.ca, token=ADMIN_TOKEN) as client:
        server = client.server.get()
        control = [li for li in server.listeners if li.protocol == "control"]
        assert control[0].tls is True
        assert client.server.pause().changed is True
    result = pacsctl(
        tls_server,
        "--cacert",
        str(pki.ca),
        "-w",
        "json",
        "status",
        env={"PACSCTL_TOKEN": ADMIN_TOKEN},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["server"]["state"] == "SERVER_STATE_PAUSED"
    # TLS alone is not a credential.
    with Client(tls_server.endpoint, cacert=pki.ca) as client, pytest.raises(Unauthenticated):
        client.server.get()


def test_plaintext_and_unknown_ca_clients_get_no_answer(tls_server: PacsdProcess, pki: Pki) -> None:
    for client in (
        Client(tls_server.endpoint, timeout=REFUSED_TIMEOUT, token=ADMIN_TOKEN),
        Client(tls_server.endpoint, timeout=REFUSED_TIMEOUT, cacert=pki.other_ca),
    ):
        with client, pytest.raises(PacsdError) as exc:
            client.server.get()
        assert exc.value.unreachable, repr(exc.value)
    result = pacsctl(
        tls_server, "--timeout", str(REFUSED_TIMEOUT), "--cacert", str(pki.other_ca), "status"
    )
    assert result.returncode == EXIT_UNREACHABLE, result.stderr


def test_a_renewed_certificate_is_used_without_restart(
    tls_server: PacsdProcess, pki: Pki, tmp_path: Path
) -> None:
    """Rotation: new files in place; the next connection gets them, no restart."""
    with Client(tls_server.endpoint, cacert=pki.ca, token=ADMIN_TOKEN) as client:
        pid = client.server.get().pid
    # The key first: in between, the server keeps the old pair (mismatch is refused).
    shutil.copy(pki.other_server.key, tmp_path / "control.key")
    shutil.copy(pki.other_server.cert, tmp_path / "control.crt")
    with Client(tls_server.endpoint, cacert=pki.other_ca, token=ADMIN_TOKEN) as client:
        assert client.server.get().pid == pid
    with (
        Client(
            tls_server.endpoint, cacert=pki.ca, token=ADMIN_TOKEN, timeout=REFUSED_TIMEOUT
        ) as client,
        pytest.raises(ServerUnavailable),
    ):
        client.server.get()
    assert "control-plane TLS certificate reloaded" in tls_server.stderr()


# -- mutual TLS ------------------------------------------------------------------------------


@pytest.fixture
def mtls_server(start_pacsd: Any, tmp_path: Path, pki: Pki) -> PacsdProcess:
    viewer = new_token()
    config = write_config(
        tmp_path / "mtls.toml",
        [
            *tls_lines(pki.server.cert, pki.server.key),
            f"control_tls_client_ca = {_toml_path(pki.ca)}",
            "control_require_client_cert = true",
            toml_entry("watcher", "viewer", hash_token(viewer)),
            "[control_client_roles]",
            '"ops-host" = "operator"',
        ],
    )
    server: PacsdProcess = start_pacsd(["--config", str(config)])
    server.extra["viewer_token"] = viewer
    return server


def test_mutual_tls_maps_the_certificate_to_a_role(mtls_server: PacsdProcess, pki: Pki) -> None:
    ops = {"cacert": pki.ca, "cert": pki.operator.cert, "key": pki.operator.key}
    with Client(mtls_server.endpoint, **ops) as client:  # type: ignore[arg-type]
        assert client.server.stop().changed is True
        assert client.server.start().changed is True
        with pytest.raises(PermissionDenied) as exc:
            client.logs.set_level("DEBUG")
        assert exc.value.metadata["principal"] == "certificate:ops-host"
        assert exc.value.metadata["required_role"] == "admin"
    result = pacsctl(
        mtls_server,
        "--cacert",
        str(pki.ca),
        "--cert",
        str(pki.operator.cert),
        "--key",
        str(pki.operator.key),
        "server",
        "pause",
    )
    assert result.returncode == 0, result.stderr
    # A token over the certificate decides: this viewer may not resume.
    with Client(
        mtls_server.endpoint,
        token=mtls_server.extra["viewer_token"],
        **ops,  # type: ignore[arg-type]
    ) as client:
        assert client.server.get().state == server_pb2.SERVER_STATE_PAUSED
        with pytest.raises(PermissionDenied):
            client.server.resume()
    assert "ServerService.StopServer by certificate:ops-host (" in mtls_server.stderr()


def test_mutual_tls_refuses_clients_without_a_certificate(
    mtls_server: PacsdProcess, pki: Pki
) -> None:
    with (
        Client(
            mtls_server.endpoint,
            cacert=pki.ca,
            token=mtls_server.extra["viewer_token"],
            timeout=REFUSED_TIMEOUT,
        ) as client,
        pytest.raises(ServerUnavailable) as exc,
    ):
        client.server.get()
    assert exc.value.unreachable
    result = pacsctl(
        mtls_server,
        "--timeout",
        str(REFUSED_TIMEOUT),
        "--cacert",
        str(pki.ca),
        "status",
        env={"PACSCTL_TOKEN": mtls_server.extra["viewer_token"]},
    )
    assert result.returncode == EXIT_UNREACHABLE


def test_a_certificate_without_a_role_is_denied(mtls_server: PacsdProcess, pki: Pki) -> None:
    with (
        Client(
            mtls_server.endpoint, cacert=pki.ca, cert=pki.stranger.cert, key=pki.stranger.key
        ) as client,
        pytest.raises(PermissionDenied) as exc,
    ):
        client.server.get()
    assert exc.value.metadata["principal"] == "certificate:stranger"
    # pacsctl's status for a refusal: 5.
    result = pacsctl(
        mtls_server,
        "--cacert",
        str(pki.ca),
        "--cert",
        str(pki.stranger.cert),
        "--key",
        str(pki.stranger.key),
        "status",
    )
    assert result.returncode == EXIT_AUTH
    assert "PERMISSION_DENIED" in result.stderr


# -- startup checks --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("pacsd"), "serve", "--dicom-port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )


def test_exposed_control_plane_without_tls_fails_before_binding(tmp_path: Path) -> None:
    data = tmp_path / "never-created"
    port = _free_port()
    result = _serve(
        ["--control-host", "0.0.0.0", "--control-port", str(port), "--data-dir", str(data)],
        tmp_path,
    )
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pacsd: error: invalid settings: control_host 0.0.0.0 is not")
    assert "TLS (control_tls_cert and control_tls_key)" in lines[0]
    assert "authentication (control_tokens" in lines[0]
    # Validation failed before startup began: no data directory, the port still free.
    assert not data.exists()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_unusable_certificate_files_fail_startup_in_one_line(tmp_path: Path, pki: Pki) -> None:
    config = write_config(
        tmp_path / "bad.toml", tls_lines(pki.server.cert, pki.operator.key)
    )  # a key that belongs to another certificate
    result = _serve(["--control-port", "0", "--config", str(config), "--data-dir", "d"], tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("pacsd: error:")]
    assert errors == [
        f"pacsd: error: control_tls_key {pki.operator.key} does not belong to the "
        f"certificate in {pki.server.cert}"
    ]
    assert "Traceback" not in result.stderr
    assert "PRIVATE KEY" not in result.stderr


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"control_host": "0.0.0.0"}, "missing TLS (control_tls_cert and control_tls_key) and "),
        (
            {"control_host": "::", "control_tls_cert": "c", "control_tls_key": "k"},
            "missing authentication",
        ),
        (
            {
                "control_host": "10.0.0.5",
                "control_tokens": [{"name": "a", "role": "admin", "sha256": "a" * 64}],
            },
            "missing TLS",
        ),
        ({"control_tls_cert": "c"}, "control_tls_cert and control_tls_key must be given together"),
        ({"control_tls_client_ca": "ca"}, "control_tls_client_ca needs control_tls_cert"),
        (
            {"control_tls_cert": "c", "control_tls_key": "k", "control_tls_client_ca": "ca"},
            "needs control_require_client_cert = true",
        ),
        (
            {"control_tls_cert": "c", "control_tls_key": "k", "control_require_client_cert": True},
            "control_require_client_cert needs control_tls_client_ca",
        ),
        ({"control_client_roles": {"x": "admin"}}, "control_client_roles needs"),
        ({"control_client_roles": {"x": "root"}}, "control_client_roles.x"),
        (
            {"control_tokens": [{"name": "a", "role": "admin", "sha256": ADMIN_TOKEN}]},
            "control_tokens.0.sha256: Value error, must be the 64 hex digits",
        ),
        (
            {"control_tokens": [{"name": "a", "role": "boss", "sha256": "a" * 64}]},
            "control_tokens.0.role",
        ),
        (
            {
                "control_tokens": [
                    {"name": "a", "role": "admin", "sha256": "a" * 64},
                    {"name": "a", "role": "viewer", "sha256": "b" * 64},
                ]
            },
            "token name(s) used twice: a",
        ),
    ],
)
def test_settings_refuse_unsafe_or_incomplete_control_security(
    values: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(values, environ={})
    assert needle in str(exc.value)
    assert ADMIN_TOKEN not in str(exc.value)


def test_settings_accept_an_exposed_control_plane_with_tls_and_credentials() -> None:
    tokens = [{"name": "a", "role": "admin", "sha256": "A" * 64}]
    settings = Settings.model_validate(
        {
            "control_host": "0.0.0.0",
            "control_tls_cert": "c",
            "control_tls_key": "k",
            "control_tokens": tokens,
        }
    )
    assert settings.control_tokens[0].sha256 == "a" * 64
    mtls = Settings.model_validate(
        {
            "control_host": "::",
            "control_tls_cert": "c",
            "control_tls_key": "k",
            "control_tls_client_ca": "ca",
            "control_require_client_cert": True,
            "control_client_roles": {"ops-host": "operator"},
        }
    )
    assert mtls.control_client_roles == {"ops-host": "operator"}
    # Environment variables reach the TLS settings; tables come from the file only.
    from_env = load_settings(
        {}, environ={"PACSD_CONTROL_TLS_CERT": "c", "PACSD_CONTROL_TLS_KEY": "k"}
    )
    assert from_env.control_tls_cert == Path("c")


# -- ControlTLS: what gRPC's per-handshake fetch sees as files change -------------------------


@pytest.fixture
def tls_files(tmp_path: Path, pki: Pki) -> Iterator[tuple[Path, Path]]:
    cert, key = tmp_path / "c.crt", tmp_path / "c.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    yield cert, key


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_fetch_rereads_only_changed_and_consistent_files(
    tls_files: tuple[Path, Path], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tls_files
    tls = ControlTLS(cert, key)
    assert isinstance(tls.server_credentials(), grpc.ServerCredentials)
    assert tls.fetch() is None  # unchanged
    # Half a rotation: a new certificate with the old key is kept out.
    shutil.copy(pki.other_server.cert, cert)
    _touch_later(cert)
    with caplog.at_level(logging.WARNING, logger="pacsd.core.control"):
        assert tls.fetch() is None
        assert tls.fetch() is None
    warnings = [r for r in caplog.records if "keeping the current" in r.getMessage()]
    assert len(warnings) == 1  # once per change, not once per connection
    assert "does not belong" in warnings[0].getMessage()
    shutil.copy(pki.other_server.key, key)
    _touch_later(key)
    assert isinstance(tls.fetch(), grpc.ServerCertificateConfiguration)
    assert tls.fetch() is None
    # reload() re-reads even when the times did not change.
    tls.reload()
    assert tls.fetch() is not None


def test_control_tls_refuses_bad_files(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = tls_files
    with pytest.raises(ControlTLSError, match="cannot be read"):
        ControlTLS(cert, tmp_path / "missing.key")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ControlTLSError, match="holds no PEM certificate"):
        ControlTLS(garbage, key)
    with pytest.raises(ControlTLSError, match="holds no PEM private key"):
        ControlTLS(cert, garbage)
    with pytest.raises(ControlTLSError, match="control_tls_client_ca"):
        ControlTLS(cert, key, garbage, require_client_cert=True)
