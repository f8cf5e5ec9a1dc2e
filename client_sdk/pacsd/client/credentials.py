"""How a client proves who it is to a control plane: a bearer token and/or TLS.

The control plane does not check either yet (it listens on loopback in plaintext; the
security issue adds TLS and tokens on the server side). Fleet inventories already name
credentials per server, so the client side is built now: the reference is parsed and
validated when the inventory is read, a token travels as ``authorization: Bearer``
metadata on every call, and certificate files switch the channel to TLS. When the server
side arrives, inventories written today keep working unchanged.

Only grpcio is needed; nothing here is imported unless credentials are used.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["Credentials", "CredentialsError", "endpoint_host", "is_loopback"]


class CredentialsError(ValueError):
    """A credentials profile cannot be used: a token variable is unset, a file is
    missing, or a token would travel in plaintext to another host."""


@dataclass(frozen=True)
class Credentials:
    """One credentials profile, e.g. ``[credentials.site-a]`` in ``fleet.toml``.

    ``token_env`` names the environment variable holding the bearer token (the token
    itself never sits in an inventory file, which is usually in version control).
    ``cacert`` verifies the server (TLS); ``cert`` and ``key`` together are the client's
    own certificate (mutual TLS). Paths are used as given; the inventory loader makes
    them absolute against the inventory's folder.
    """

    name: str = ""
    token_env: str = ""
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise CredentialsError(
                f"credentials {self.name!r}: cert and key must be given together"
            )

    @property
    def tls(self) -> bool:
        """Whether the channel is TLS (any certificate file given)."""
        return self.cacert is not None or self.cert is not None

    def token(self) -> str | None:
        """The bearer token from ``token_env``; None when the profile has no token.

        An unset or empty variable is an error rather than "no token": a profile that
        names a token means the operator expects one to be sent.
        """
        if not self.token_env:
            return None
        value = os.environ.get(self.token_env, "").strip()
        if not value:
            raise CredentialsError(
                f"credentials {self.name!r}: environment variable {self.token_env} is not set"
            )
        return value

    def check(self) -> None:
        """Fail now, not at the first call, when a file or the token is missing."""
        for label, path in (("cacert", self.cacert), ("cert", self.cert), ("key", self.key)):
            if path is not None and not path.is_file():
                raise CredentialsError(f"credentials {self.name!r}: {label} {path} is not a file")
        self.token()

    def call_metadata(self, endpoint: str) -> tuple[tuple[str, str], ...] | None:
        """Metadata sent with every call (the token), or None when there is none.

        A token over plaintext is refused unless the endpoint is loopback: on any other
        network it would be readable by whoever sees the traffic.
        """
        token = self.token()
        if token is None:
            return None
        if not self.tls and not is_loopback(endpoint_host(endpoint)):
            raise CredentialsError(
                f"credentials {self.name!r}: refusing to send a token in plaintext to "
                f"{endpoint}; give cacert to use TLS"
            )
        return (("authorization", f"Bearer {token}"),)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS channel credentials, or None for a plaintext channel."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.cacert),
            private_key=_read(self.key),
            certificate_chain=_read(self.cert),
        )


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}") from exc


def endpoint_host(endpoint: str) -> str:
    """The host part of ``HOST:PORT``, ``[v6]:PORT`` or a bare host."""
    text = endpoint.strip()
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        text = text.removeprefix(scheme)
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text[1:]
    if text.count(":") == 1:
        return text.rsplit(":", 1)[0]
    return text


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
