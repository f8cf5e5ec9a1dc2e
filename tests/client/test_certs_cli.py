"""``pacsctl certs init`` / ``certs issue`` as an operator runs them: no server, real
files, and DCMTK's TLS (BCP 195 profile) as the independent judge of the certificates."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import console_script, dcmtk, dcmtk_env


def pacsctl(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PACSCTL_")}
    return subprocess.run(
        [console_script("pacsctl"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**environ, **(env or {})},
    )


def ok_json(cwd: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = pacsctl(cwd, "-w", "json", *args, env=env)
    assert result.returncode == 0, result
    assert result.stderr == "", result
    document: dict[str, Any] = json.loads(result.stdout)
    assert set(document) == {"certificate"}
    certificate: dict[str, Any] = document["certificate"]
    return certificate


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_and_issue_json(tmp_path: Path) -> None:
    ca = ok_json(tmp_path, "certs", "init")
    assert ca["cert"] == "pacsd-ca/ca.crt"  # the default directory, relative to the cwd
    assert ca["key"] == "pacsd-ca/ca.key"
    assert ca["ca_cert"] == ca["cert"]
    assert ca["subject"] == ca["issuer"] == "CN=pacsd development CA"
    assert ca["is_ca"] is True
    assert ca["key_type"] == "rsa2048"
    assert mode(tmp_path / "pacsd-ca" / "ca.key") == 0o600

    leaf = ok_json(
        tmp_path, "certs", "issue", "--cn", "pacs.test", "--san", "127.0.0.1",
        "--san", "pacs.test", "--usage", "server", "--key-type", "ec", "--days", "30",
    )  # fmt: skip
    assert set(leaf) == {
        "cert", "key", "ca_cert", "subject", "issuer", "serial", "not_before", "not_after",
        "fingerprint_sha256", "sans", "is_ca", "usages", "key_type",
    }  # fmt: skip
    assert leaf["cert"] == "pacsd-ca/pacs.test.crt"
    assert leaf["ca_cert"] == "pacsd-ca/ca.crt"
    assert leaf["subject"] == "CN=pacs.test"
    assert leaf["issuer"] == "CN=pacsd development CA"
    assert leaf["sans"] == ["IP:127.0.0.1", "DNS:pacs.test"]
    assert leaf["usages"] == ["serverAuth"]
    assert leaf["is_ca"] is False
    assert leaf["key_type"] == "ec-secp256r1"
    assert leaf["not_after"].endswith("Z")
    assert len(leaf["fingerprint_sha256"].split(":")) == 32
    assert mode(tmp_path / leaf["key"]) == 0o600


def test_name_out_and_env_ca_dir(tmp_path: Path) -> None:
    env = {"PACSCTL_CA_DIR": str(tmp_path / "pki")}
    ok_json(tmp_path, "certs", "init", "--cn", "Site CA", "--key-type", "ec", env=env)
    person = ok_json(
        tmp_path, "certs", "issue", "--cn", "operator alice", "--usage", "client",
        "--key-type", "ec", "--out", "creds", env=env,
    )  # fmt: skip
    # The file stem comes from the common name; a person's name gets no SAN.
    assert person["cert"] == "creds/operator-alice.crt"
    assert person["ca_cert"] == str(tmp_path / "pki" / "ca.crt")
    assert person["issuer"] == "CN=Site CA"
    assert person["sans"] == []
    assert person["usages"] == ["clientAuth"]
    named = ok_json(
        tmp_path, "certs", "issue", "--cn", "10.0.0.7", "--name", "node7",
        "--dir", str(tmp_path / "pki"), "--key-type", "ec",
    )  # fmt: skip
    assert named["cert"] == str(tmp_path / "pki" / "node7.crt")
    assert named["sans"] == ["IP:10.0.0.7"]
    assert named["usages"] == ["serverAuth", "clientAuth"]


def test_table_output(tmp_path: Path) -> None:
    result = pacsctl(tmp_path, "certs", "init", "--key-type", "ec")
    assert result.returncode == 0, result
    assert result.stdout.startswith("created CA in pacsd-ca\n")
    for label in ("CERTIFICATE", "KEY", "SUBJECT", "NOT AFTER", "SHA-256"):
        assert f"| {label} " in result.stdout
    assert "PRIVATE KEY" not in result.stdout


def test_overwriting_needs_force(tmp_path: Path) -> None:
    first = ok_json(tmp_path, "certs", "init", "--key-type", "ec")
    key_before = (tmp_path / "pacsd-ca" / "ca.key").read_bytes()

    again = pacsctl(tmp_path, "certs", "init", "--key-type", "ec")
    assert again.returncode == 1
    assert again.stdout == ""
    assert again.stderr == (
        "pacsctl: error: pacsd-ca/ca.crt already exists; use --force to replace it "
        "(ALREADY_EXISTS/CERTS_EXISTS)\n"
    )
    as_json = pacsctl(tmp_path, "-w", "json", "certs", "init", "--key-type", "ec")
    assert as_json.returncode == 1
    assert json.loads(as_json.stderr) == {
        "error": {
            "code": "ALREADY_EXISTS",
            "reason": "CERTS_EXISTS",
            "message": "pacsd-ca/ca.crt already exists; use --force to replace it",
            "metadata": {"path": "pacsd-ca/ca.crt"},
        }
    }
    assert (tmp_path / "pacsd-ca" / "ca.key").read_bytes() == key_before

    forced = ok_json(tmp_path, "certs", "init", "--key-type", "ec", "--force")
    assert forced["fingerprint_sha256"] != first["fingerprint_sha256"]

    ok_json(tmp_path, "certs", "issue", "--cn", "a.test", "--key-type", "ec")
    leaf_again = pacsctl(tmp_path, "certs", "issue", "--cn", "a.test", "--key-type", "ec")
    assert leaf_again.returncode == 1
    assert "(ALREADY_EXISTS/CERTS_EXISTS)" in leaf_again.stderr
    ok_json(tmp_path, "certs", "issue", "--cn", "a.test", "--key-type", "ec", "--force")


def test_errors_and_exit_statuses(tmp_path: Path) -> None:
    no_ca = pacsctl(tmp_path, "certs", "issue", "--cn", "x.test")
    assert no_ca.returncode == 1
    assert no_ca.stdout == ""
    assert "create one with 'pacsctl certs init'" in no_ca.stderr
    assert no_ca.stderr.endswith("(NOT_FOUND/CERTS_CA_NOT_FOUND)\n")
    assert not (tmp_path / "pacsd-ca").exists()

    ok_json(tmp_path, "certs", "init", "--key-type", "ec")
    # Bad values are usage errors: exit 2 and nothing written.
    for args in (
        ("--cn", "x.test", "--san", "not a name"),
        ("--cn", "Alice Operator", "--usage", "server"),
        ("--cn", "x.test", "--name", "../x"),
        ("--cn", "x.test", "--days", "0"),
        ("--cn", "x.test", "--key-type", "dsa"),
        ("--san", "x.test"),
    ):
        result = pacsctl(tmp_path, "certs", "issue", *args)
        assert result.returncode == 2, (args, result)
        assert result.stdout == ""
        assert "Error:" in result.stderr
    assert sorted(p.name for p in (tmp_path / "pacsd-ca").iterdir()) == ["ca.crt", "ca.key"]

    fleet = pacsctl(tmp_path, "--endpoints", "127.0.0.1:1", "certs", "init")
    assert fleet.returncode == 2
    assert "does not support --endpoints/--fleet" in fleet.stderr


# -- DCMTK ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def storescp_tls(pki: Path, name: str, workdir: Path) -> Iterator[int]:
    """DCMTK's storescp with TLS (default: non-downgrading BCP 195 profile), presenting
    NAME.crt and requiring a client certificate from the CA in ``pki``."""
    port = free_port()
    proc = subprocess.Popen(
        [dcmtk("storescp"), "+tls", str(pki / f"{name}.key"), str(pki / f"{name}.crt"),
         "+cf", str(pki / "ca.crt"), "-od", str(workdir), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dcmtk_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "storescp exited"
            try:
                # Only checks that it listens; storescp logs the aborted handshake.
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "storescp did not listen"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def echoscu_tls(pki: Path, key: Path, cert: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("echoscu"), "-v", "+tls", str(key), str(cert), "+cf", str(pki / "ca.crt"),
         "127.0.0.1", str(port)],
        capture_output=True, text=True, timeout=30, env=dcmtk_env(),
    )  # fmt: skip


def test_dcmtk_accepts_the_certificates_over_bcp195_tls(tmp_path: Path) -> None:
    pki = tmp_path / "pacsd-ca"
    ok_json(tmp_path, "certs", "init")
    ok_json(tmp_path, "certs", "issue", "--cn", "scp", "--san", "127.0.0.1", "--usage", "server")
    ok_json(tmp_path, "certs", "issue", "--cn", "scu", "--usage", "client")
    ok_json(tmp_path, "certs", "issue", "--cn", "wrong", "--san", "127.0.0.1", "--usage", "client")
    ok_json(tmp_path, "certs", "init", "--dir", "other")
    ok_json(tmp_path, "certs", "issue", "--dir", "other", "--cn", "stranger", "--usage", "client")

    with storescp_tls(pki, "scp", tmp_path) as port:
        good = echoscu_tls(pki, pki / "scu.key", pki / "scu.crt", port)
        assert good.returncode == 0, good
        assert "Received Echo Response (Success)" in good.stdout + good.stderr
        # A client certificate from another CA is refused by storescp.
        other = tmp_path / "other"
        stranger = echoscu_tls(pki, other / "stranger.key", other / "stranger.crt", port)
        assert stranger.returncode != 0
    # A certificate issued for clients only is refused as a server certificate.
    with storescp_tls(pki, "wrong", tmp_path) as port:
        refused = echoscu_tls(pki, pki / "scu.key", pki / "scu.crt", port)
        assert refused.returncode != 0
        assert "certificate verify failed" in refused.stdout + refused.stderr
