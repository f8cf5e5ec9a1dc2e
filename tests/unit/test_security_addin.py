"""The security add-in's settings and contexts, and the registry's service watchers.

Real certificates (``pacsd.client.certs``) and real OpenSSL contexts; no server.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pacsd.addin import AddinContext
from pacsd.addin.services import CertificateError, Security
from pacsd.builtin.security import (
    BCP195_CIPHERS,
    SecurityAddin,
    SecuritySettings,
    build_context,
)
from pacsd.client.certs import create_ca, issue_certificate
from pacsd.server.services import ServiceRegistry
from pydantic import ValidationError

from tests.security.dicom_tls_peers import Pki, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def settings(pki: Pki, **values: object) -> SecuritySettings:
    base: dict[str, object] = {
        "cert_file": str(pki.server.cert),
        "key_file": str(pki.server.key),
        "ca_file": str(pki.ca),
    }
    return SecuritySettings.model_validate({**base, **values})


def start(settings: SecuritySettings) -> SecurityAddin:
    addin = SecurityAddin()
    addin.start(AddinContext("security", logging.getLogger("test.security"), settings))
    return addin


# -- settings ---------------------------------------------------------------------------


def test_defaults_provide_no_tls_listener() -> None:
    addin = start(SecuritySettings())
    assert isinstance(addin.provide("security"), Security)
    assert addin.tls_endpoint() is None
    assert addin.certificates() == []
    with pytest.raises(CertificateError, match="no cert_file/key_file"):
        addin.server_context()
    with pytest.raises(CertificateError, match="no cert_file/key_file"):
        addin.reload()
    defaults = SecuritySettings()
    assert (defaults.port, defaults.min_version, defaults.require_client_cert) == (
        2762,
        "1.2",
        False,
    )
    assert defaults.ciphers == BCP195_CIPHERS
    # DCMTK 3.6.7's BCP 195 list, every suite AEAD with forward secrecy.
    for suite in ("ECDHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384"):
        assert suite in BCP195_CIPHERS.split(":")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"key_file": ""}, "cert_file and key_file go together"),
        ({"ca_file": "", "require_client_cert": True}, "require_client_cert needs ca_file"),
        ({"min_version": "1.1"}, "min_version"),
        ({"port": 70000}, "port"),
        ({"ciphers": "NO-SUCH-CIPHER"}, "OpenSSL knows none of"),
        ({"tls": True}, "tls"),
    ],
)
def test_invalid_settings_name_the_problem(
    pki: Pki, values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(pki, **values)


def test_ca_file_alone_is_refused(pki: Pki) -> None:
    with pytest.raises(ValidationError, match="ca_file without cert_file"):
        SecuritySettings(ca_file=str(pki.ca))


# -- contexts ---------------------------------------------------------------------------


def test_context_follows_the_settings(pki: Pki) -> None:
    context, certs = build_context(settings(pki))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_OPTIONAL
    assert [c.role for c in certs] == ["server", "ca"]
    assert certs[0].sha256 == pki.server.fingerprint_sha256
    assert certs[0].subject == "CN=pacsd-a" and certs[0].issuer == "CN=test DICOM CA"
    assert certs[0].path == str(pki.server.cert)
    assert certs[0].not_after.tzinfo is not None

    strict, _ = build_context(settings(pki, require_client_cert=True, min_version="1.3"))
    assert strict.verify_mode is ssl.CERT_REQUIRED
    assert strict.minimum_version is ssl.TLSVersion.TLSv1_3
    no_ca, only_server = build_context(settings(pki, ca_file=""))
    assert no_ca.verify_mode is ssl.CERT_NONE
    assert [c.role for c in only_server] == ["server"]


def test_unusable_files_are_named_without_their_contents(pki: Pki, tmp_path: Path) -> None:
    secret = "c2VjcmV0LWtleS1ieXRlcw"
    garbage = tmp_path / "garbage.key"
    garbage.write_text(f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n")
    other = issue_certificate(pki.ca_dir, "other", "other", usage="server")
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        )
    )
    not_pem = tmp_path / "cert.txt"
    not_pem.write_text("hello")
    cases = {
        "missing": ({"cert_file": str(tmp_path / "nope.crt")}, "nope.crt: no such file"),
        "not pem": ({"cert_file": str(not_pem)}, "no PEM certificate in it"),
        "garbage": ({"key_file": str(garbage)}, "no PEM private key in it"),
        "mismatch": ({"key_file": str(other.key)}, "does not match cert_file"),
        "encrypted": ({"key_file": str(encrypted)}, "the key is encrypted"),
        "bad ca": ({"ca_file": str(not_pem)}, "ca_file .*no PEM certificate"),
    }
    for name, (values, message) in cases.items():
        merged = {
            "cert_file": str(pki.server.cert),
            "key_file": str(pki.server.key),
            "ca_file": str(pki.ca),
            **values,
        }
        with pytest.raises(CertificateError, match=message) as err:
            build_context(SecuritySettings.model_construct(**merged))  # type: ignore[arg-type]
        assert secret not in str(err.value), name
        assert "BEGIN" not in str(err.value), name


def test_reload_swaps_the_context_and_keeps_it_on_failure(pki: Pki) -> None:
    addin = start(settings(pki))
    assert addin.tls_endpoint() == ("", 2762)
    first = addin.server_context()
    new = issue_certificate(
        pki.ca_dir, "server", "rotated", ["127.0.0.1"], usage="server", force=True
    )
    certs = addin.reload()
    assert certs[0].sha256 == new.fingerprint_sha256
    second = addin.server_context()
    assert second is not first
    assert addin.certificates()[0].sha256 == new.fingerprint_sha256

    pki.server.key.write_text("not a key")
    with pytest.raises(CertificateError, match="no PEM private key"):
        addin.reload()
    assert addin.server_context() is second
    assert addin.certificates()[0].sha256 == new.fingerprint_sha256


def test_settings_change_rebuilds_the_context(pki: Pki, tmp_path: Path) -> None:
    addin = start(settings(pki))
    first = addin.server_context()
    ca2 = create_ca(tmp_path / "ca2", common_name="second CA")
    changed = settings(pki, ca_file=str(ca2.cert), min_version="1.3", port=2763)
    addin.ctx.settings = changed
    addin.settings_changed(changed)
    assert addin.server_context() is not first
    assert addin.server_context().minimum_version is ssl.TLSVersion.TLSv1_3
    assert addin.tls_endpoint() == ("", 2763)
    assert addin.certificates()[-1].subject == "CN=second CA"


# -- the registry tells the server when "security" changes ------------------------------


def test_watchers_see_each_change_once() -> None:
    registry = ServiceRegistry()
    seen: list[tuple[str, object]] = []
    registry.subscribe("security", lambda name: seen.append((name, registry.get(name))))
    first, second = object(), object()
    registry.override("security", "sec", first)
    assert seen == [("security", first)]
    # A reload: the old instance is released quietly and the new one installed at once,
    # so the server never sees the service vanish (the TLS port stays bound).
    assert registry.release("sec", notify=False) == ["security"]
    registry.override("security", "sec", second)
    assert seen[1:] == [("security", second)]
    registry.changed(["security"])
    assert seen[2:] == [("security", second)]
    registry.release("sec")
    assert seen[3:] == [("security", None)]
    # Other services' changes are not this watcher's business.
    registry.override("aetitles", "book", object())
    assert len(seen) == 4


def test_a_failing_watcher_does_not_undo_the_change(caplog: pytest.LogCaptureFixture) -> None:
    registry = ServiceRegistry()

    def broken(name: str) -> None:
        raise RuntimeError("port taken")

    registry.subscribe("security", broken)
    impl = object()
    registry.override("security", "sec", impl)
    assert registry.get("security") is impl
    assert "reacting to a change of service security failed" in caplog.text
