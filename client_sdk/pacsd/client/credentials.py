"""How a client proves who it is to a control plane: a bearer token and/or TLS.

A token travels as ``authorization: Bearer`` metadata on every call (streams too);
certificate files switch the channel to TLS (``cacert`` verifies the server, ``cert``
and ``key`` are the client's own for mutual TLS). Fleet inventories name a profile per
server; ``Client(token=..., cacert=...)`` and pacsctl's ``--token``/``--cacert``/
``--cert``/``--key`` build one with ``Credentials.from_options``. What the server
checks is in docs/security.md.

Only grpcio is needed; nothing here is imported unless credentials are used.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc

__all__ = ["Credentials", "CredentialsError", "endpoint_host", "is_loopback", "resolve"]


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

    ``bearer`` is the token itself, for programs that hold it already
    (``Client(token=...)``, pacsctl's ``--token``); it is left out of ``repr``.
    """

    name: str = ""
    token_env: str = ""
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    bearer: str = field(default="", repr=False)

    @classmethod
    def from_options(
        cls,
        *,
        token: str | None = None,
        cacert: str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        name: str = "options",
    ) -> Credentials | None:
        """A profile from direct arguments; None when none is given (plaintext, no
        token). Raises CredentialsError for an empty token or cert without key."""
        if token is None and cacert is None and cert is None and key is None:
            return None
        if token is not None and not token.strip():
            raise CredentialsError(f"credentials {name!r}: the token is empty")
        return cls(
            name=name,
            bearer=(token or "").strip(),
            cacert=Path(cacert) if cacert is not None else None,
            cert=Path(cert) if cert is not None else None,
            key=Path(key) if key is not None else None,
        )

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
        if self.bearer:
            return self.bearer
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


PathArg = str | os.PathLike[str] | None


def resolve(
    credentials: Credentials | None,
    *,
    token: str | None = None,
    cacert: PathArg = None,
    cert: PathArg = None,
    key: PathArg = None,
) -> Credentials | None:
    """The profile a client uses: ``credentials`` or one built from the direct
    arguments, which may not be mixed (which would win is not obvious)."""
    direct = Credentials.from_options(token=token, cacert=cacert, cert=cert, key=key)
    if direct is not None and credentials is not None:
        raise CredentialsError("give credentials= or token=/cacert=/cert=/key=, not both")
    return direct if direct is not None else credentials


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
