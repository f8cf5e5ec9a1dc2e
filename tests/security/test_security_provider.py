"""The ``security`` base service replaced by another add-in, over real DICOM TLS traffic.

``security`` is an add-in so that a site with its own key management can swap it out
(docs/addins.md). tests/addins/vault_security.py is such a replacement, written against
the ``pacsd.addin.Security`` protocol alone, with a policy of its own (another CA's
certificate, TLS 1.3 only, no client certificates). DCMTK and Python ssl peers must
meet whichever provider is loaded, and the built-in one's behaviour once it is back.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pacsd.client import Client
from pacsd.client.errors import PacsdError

from tests.conftest import PacsdProcess
from tests.security.dicom_tls_peers import (
    Pki,
    anonymous,
    client_context,
    echoscu,
    handshake,
    make_pki,
    served_fingerprint,
    tls_config,
    tls_port,
    with_client_cert,
)

VAULT = Path(__file__).resolve().parent.parent / "addins" / "vault_security.py"


def tls12(pki: Pki) -> ssl.SSLContext:
    return client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)


def test_another_addin_provides_security_and_the_built_in_comes_back(
    start_pacsd: object, tmp_path: Path
) -> None:
    site = make_pki(tmp_path / "site")
    vault = make_pki(tmp_path / "vault")
    config = tls_config(tmp_path, site, require_client_cert=True)
    with config.open("a") as out:
        out.write(
            "[addins.vault_security.settings]\n"
            f'cert_file = "{vault.server.cert}"\nkey_file = "{vault.server.key}"\n'
        )
    server: PacsdProcess = start_pacsd(["--config", str(config)])  # type: ignore[operator]
    assert served_fingerprint(tls_port(server), site) == site.server.fingerprint_sha256

    with Client(server.endpoint) as client:
        # Two providers at once are a load error; the built-in one serves on.
        with pytest.raises(PacsdError) as err:
            client.addins.load(VAULT)
        assert "both provide service 'security'" in str(err.value)
        assert echoscu(tls_port(server), *with_client_cert(site)).returncode == 0

        client.addins.unload("security")
        client.addins.load(VAULT)
        shown = client.security.certificates()
    assert shown.provider == "vault_security"
    assert [c.sha256_fingerprint for c in shown.certificates] == [vault.server.fingerprint_sha256]
    port = tls_port(server)
    # The replacement's certificate, verified by its CA, without a client certificate.
    echo = echoscu(port, *anonymous(vault))
    assert echo.returncode == 0, echo.stdout + echo.stderr
    assert served_fingerprint(port, vault) == vault.server.fingerprint_sha256
    # The site's CA does not vouch for it, and its TLS 1.3 floor refuses TLS 1.2.
    assert echoscu(port, *with_client_cert(site)).returncode != 0
    with pytest.raises(ssl.SSLError):
        handshake(port, tls12(vault)).close()

    with Client(server.endpoint) as client:
        client.addins.unload("vault_security")
        client.addins.load("security")
        assert client.security.certificates().provider == "security"
    port = tls_port(server)
    # The built-in policy again: the site's certificate, client certificates required.
    assert served_fingerprint(port, site) == site.server.fingerprint_sha256
    assert echoscu(port, *with_client_cert(site)).returncode == 0
    assert echoscu(port, *anonymous(site)).returncode != 0
    assert echoscu(port, *anonymous(vault)).returncode != 0
    with handshake(port, tls12(site)) as tls:
        assert tls.version() == "TLSv1.2"
