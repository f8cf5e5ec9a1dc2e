"""Rollout's health check on a server that only speaks DICOM over TLS: its C-ECHO goes
to the TLS port, verified with the control-plane CA and the client's certificate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pacsd.client import Client
from pacsd.client.rollout import check_health

from tests.security.dicom_tls_peers import make_pki, tls_config


def test_tls_only_server_is_echoed_over_tls(start_pacsd: Any, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    config = tls_config(
        tmp_path,
        pki,
        core={
            "dicom_plain_listener": False,
            "control_tls_cert": str(pki.server.cert),
            "control_tls_key": str(pki.server.key),
        },
        require_client_cert=True,
    )
    server = start_pacsd(["--config", str(config)])
    with Client(server.endpoint, cacert=pki.ca, cert=pki.client.cert, key=pki.client.key) as c:
        report = check_health(c)
        listeners = [item for item in c.server.get().listeners if item.protocol == "dicom"]
    assert report.ok, report.to_dict()
    assert report.echo.status == 0x0000
    assert [(item.tls, item.listening) for item in listeners if item.listening] == [(True, True)]

    # Without a client certificate the TLS listener refuses the C-ECHO: reported, not hidden.
    with Client(server.endpoint, cacert=pki.ca) as client:
        refused = check_health(client)
    assert not refused.ok
    assert refused.echo.error
