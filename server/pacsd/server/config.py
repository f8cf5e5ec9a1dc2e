"""Server settings and where they come from.

Precedence, highest first: command-line flag > ``PACSD_*`` environment variable >
TOML file > default. Every source is merged into one dict and validated once by the
``Settings`` model, so an error names the field whichever source it came from.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pacsd.addin.services import ALL_PERMISSIONS, Permission
from pacsd.server.control.tokens import SHA256_HEX, TOKEN_NAME
from pacsd.server.passcodes import InvalidPasscodeHash, parse_hash
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

ENV_PREFIX = "PACSD_"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
#: Control-plane roles, least to most powerful (control/roles.py).
ControlRole = Literal["viewer", "operator", "admin"]


class ConfigError(Exception):
    """Settings could not be read or are invalid; the message is meant for the operator."""


class AddinConfig(BaseModel):
    """Per-add-in configuration: the ``[addins.NAME]`` tables of the settings file."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)


class ControlToken(BaseModel):
    """One ``[[control_tokens]]`` table: a bearer token known only by its SHA-256.

    ``pacsd token create`` prints a new token and this table; the token itself is
    never stored, so a leaked settings file grants nothing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: ControlRole
    sha256: str

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not TOKEN_NAME.match(value):
            raise ValueError(
                "must be 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a "
                "letter or digit"
            )
        return value

    @field_validator("sha256")
    @classmethod
    def _check_digest(cls, value: str) -> str:
        digest = value.strip().lower()
        if not SHA256_HEX.match(digest):
            # Never echo the value: someone may have pasted the token itself here.
            raise ValueError(
                "must be the 64 hex digits of the token's SHA-256 (pacsd token create "
                "prints it), not the token"
            )
        return digest


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask, which containers narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Settings(BaseModel):
    """Everything a pacsd process is configured with. Documented in docs/configuration.md."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    ae_title: str = "PACSD"
    dicom_host: str = "127.0.0.1"
    dicom_port: int = Field(11112, ge=0, le=65535)
    #: Serve plain (unencrypted) DICOM on dicom_port. False with the "security" add-in
    #: configured: DICOM over TLS only (docs/security.md).
    dicom_plain_listener: bool = True
    #: Engine processes sharing the DICOM port(s) with SO_REUSEPORT: this one (which
    #: also hosts the control plane) and workers - 1 more it supervises (docs/workers.md).
    workers: int = Field(default_factory=default_workers, ge=1, le=64)
    control_host: str = "127.0.0.1"
    control_port: int = Field(50051, ge=0, le=65535)
    data_dir: Path = Path("pacsd-data")
    log_level: LogLevel = "INFO"
    #: Seconds running associations may go on after stop/shutdown before they are aborted.
    grace_period: float = Field(10.0, ge=0)
    #: Concurrent associations; the next one is rejected (transient, local limit exceeded).
    max_associations: int = Field(64, ge=1)
    #: Largest P-DATA PDU we announce; 128 KiB keeps per-PDU overhead low with DCMTK peers.
    max_pdu_size: int = Field(131072, ge=4096)
    #: Seconds to wait for an A-ASSOCIATE-RQ or A-RELEASE-RP.
    acse_timeout: float = Field(30.0, gt=0)
    #: Seconds to wait for the next DIMSE message while one is in progress.
    dimse_timeout: float = Field(30.0, gt=0)
    #: Seconds an association may stay idle before it is aborted.
    network_timeout: float = Field(60.0, gt=0)
    #: Where the instance index lives: empty for ``DATA_DIR/index.db`` (SQLite),
    #: ``sqlite:///path`` or ``postgresql://user:pass@host/db`` (shared by several nodes).
    index_url: str = ""
    #: Make the blob store's 4096 bucket folders at startup, in the background, so that
    #: a young store's C-STOREs do not each wait for a new folder and an fsync of its
    #: parent (docs/storage.md). Off: they are made as instances arrive.
    prepare_buckets: bool = True
    #: Size of each engine process's store journal, which makes a C-STORE durable with
    #: one device flush instead of three (docs/reliability.md). 0: no journal; every
    #: C-STORE fsyncs its file, its folder and the index commit.
    store_journal_mb: int = Field(8, ge=0, le=1024)
    #: Seconds an add-in handler may run (per result for FIND/GET/MOVE) unless its
    #: decorator sets its own limit; past it the request is answered with a failure.
    handler_time_limit: float = Field(60.0, gt=0)
    #: Folders searched for add-ins (each .py file or package is one add-in).
    addin_paths: list[Path] = Field(default_factory=list)
    addins: dict[str, AddinConfig] = Field(default_factory=dict)
    #: Add-ins whose failure to load or start makes startup fail.
    required_addins: list[str] = Field(default_factory=list)
    #: Log to standard error, for people (docs/logging.md lists every sink).
    log_console: bool = True
    #: Rotating text log (same lines as the console); unset: none.
    log_file: Path | None = None
    #: Rotating JSON-lines log, one object per record, for log shippers; unset: none.
    log_json_file: Path | None = None
    #: Size at which a log file is rotated (0: never) and how many old files are kept.
    log_file_max_bytes: int = Field(10 * 1024 * 1024, ge=0)
    log_file_backups: int = Field(5, ge=0)
    #: Records kept in memory for ``pacsctl logs --tail``.
    log_tail_size: int = Field(1000, ge=1)
    #: Records queued for each live log or event stream before its oldest are dropped.
    log_stream_queue_size: int = Field(1000, ge=1)
    #: Prometheus text endpoint (GET /metrics); unset: disabled, 0: a free port.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    #: DICOM access policy (docs/security.md): reject callers whose AE title is not in
    #: the AE registry (A-ASSOCIATE-RJ, calling AE title not recognised).
    require_known_calling_ae: bool = False
    #: Reject associations whose called AE title is not ``ae_title``.
    check_called_ae: bool = False
    #: What callers missing from the registry may do, when they are let in.
    unknown_ae_permissions: frozenset[Permission] = ALL_PERMISSIONS
    #: Reject associations that do not identify a user of ``dicom_users``.
    require_user_identity: bool = False
    #: DICOM User Identity accounts: username -> ``pacsd hash-password`` output ("" for a
    #: user who may identify by username only).
    dicom_users: dict[str, str] = Field(default_factory=dict)
    #: Control-plane TLS: server certificate chain and private key (PEM, both or neither).
    control_tls_cert: Path | None = None
    control_tls_key: Path | None = None
    #: CA bundle (PEM) that client certificates must chain to (mutual TLS).
    control_tls_client_ca: Path | None = None
    #: Refuse TLS connections without a client certificate signed by control_tls_client_ca.
    control_require_client_cert: bool = False
    #: Bearer tokens accepted by the control plane, by SHA-256 (docs/security.md).
    control_tokens: list[ControlToken] = Field(default_factory=list)
    #: Client-certificate common name -> role, for mutual-TLS clients without a token.
    control_client_roles: dict[str, ControlRole] = Field(default_factory=dict)

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        # PS3.5 AE VR: 1-16 characters of the default repertoire, no backslash or control codes.
        stripped = value.strip()
        if not stripped or len(value) > 16:
            raise ValueError("must be 1 to 16 characters and not only spaces")
        if any(c == "\\" or not (0x20 <= ord(c) < 0x7F) for c in value):
            raise ValueError("may hold printable ASCII only, without backslash")
        return stripped

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("control_tokens")
    @classmethod
    def _unique_tokens(cls, value: list[ControlToken]) -> list[ControlToken]:
        names = [t.name for t in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"token name(s) used twice: {', '.join(twice)}")
        if len({t.sha256 for t in value}) != len(value):
            raise ValueError("two tokens have the same sha256")
        return value

    @model_validator(mode="after")
    def _control_security(self) -> Settings:
        """TLS and credentials settings that only make sense together.

        Off loopback, the control plane would hand the server to anyone who can reach
        the port, so it needs TLS (nobody reads or alters the traffic) and a way to
        authenticate callers. On loopback with neither tokens nor client certificates,
        calls are not authenticated (local development; docs/security.md).
        """
        if (self.control_tls_cert is None) != (self.control_tls_key is None):
            raise ValueError("control_tls_cert and control_tls_key must be given together")
        tls = self.control_tls_cert is not None
        if self.control_tls_client_ca is not None and not tls:
            raise ValueError("control_tls_client_ca needs control_tls_cert and control_tls_key")
        # gRPC either requires and verifies a client certificate or never asks for one;
        # a CA without the requirement would be silently unused.
        if self.control_tls_client_ca is not None and not self.control_require_client_cert:
            raise ValueError(
                "control_tls_client_ca needs control_require_client_cert = true (gRPC "
                "cannot verify optional client certificates)"
            )
        if self.control_require_client_cert and self.control_tls_client_ca is None:
            raise ValueError("control_require_client_cert needs control_tls_client_ca")
        if self.control_client_roles and not self.control_require_client_cert:
            raise ValueError(
                "control_client_roles needs control_require_client_cert = true and "
                "control_tls_client_ca"
            )
        if not is_loopback(self.control_host):
            authenticated = bool(self.control_tokens) or self.control_require_client_cert
            if not (tls and authenticated):
                missing = []
                if not tls:
                    missing.append("TLS (control_tls_cert and control_tls_key)")
                if not authenticated:
                    missing.append(
                        "authentication (control_tokens, or control_require_client_cert "
                        "with control_tls_client_ca)"
                    )
                raise ValueError(
                    f"control_host {self.control_host} is not loopback: the control plane "
                    f"may listen there only with TLS and authentication; missing "
                    f"{' and '.join(missing)}"
                )
        return self

    @field_validator("unknown_ae_permissions", mode="before")
    @classmethod
    def _split_permissions(cls, value: Any) -> Any:
        # PACSD_UNKNOWN_AE_PERMISSIONS=echo,store; the file gives a list.
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_serializer("unknown_ae_permissions", when_used="json")
    def _sorted_permissions(self, value: frozenset[Permission]) -> list[str]:
        # A set has no order; dumps (GetSettings, diffs) should not change between runs.
        return sorted(p.value for p in value)

    @field_validator("dicom_users")
    @classmethod
    def _check_dicom_users(cls, value: dict[str, str]) -> dict[str, str]:
        for user, stored in value.items():
            if not user or len(user) > 256:
                raise ValueError("user names must be 1 to 256 characters")
            if stored:
                try:
                    parse_hash(stored)
                except InvalidPasscodeHash as exc:
                    # Names the user, never echoes the value.
                    raise ValueError(f"user {user!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _user_identity_needs_users(self) -> Settings:
        if self.require_user_identity and not self.dicom_users:
            raise ValueError("require_user_identity needs at least one user in dicom_users")
        return self

    @field_validator("metrics_host")
    @classmethod
    def _metrics_loopback(cls, value: str) -> str:
        # The endpoint has no authentication; a scraper on another host goes through a
        # proxy or an SSH tunnel the operator sets up on purpose.
        if not is_loopback(value):
            raise ValueError(
                "the metrics endpoint listens on loopback only (127.0.0.0/8, ::1 or localhost)"
            )
        return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Settings that ``PACSD_<NAME>`` may set: every scalar field (tables come from the file).
ENV_FIELDS = tuple(
    name
    for name in Settings.model_fields
    if name
    not in (
        "addins",
        "required_addins",
        "addin_paths",
        "control_tokens",
        "control_client_roles",
        "dicom_users",
    )
)


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: environ[ENV_PREFIX + name.upper()]
        for name in ENV_FIELDS
        if ENV_PREFIX + name.upper() in environ
    }
    if ENV_PREFIX + "REQUIRED_ADDINS" in environ:
        raw = environ[ENV_PREFIX + "REQUIRED_ADDINS"]
        values["required_addins"] = [s.strip() for s in raw.split(",") if s.strip()]
    if ENV_PREFIX + "ADDIN_PATHS" in environ:
        raw = environ[ENV_PREFIX + "ADDIN_PATHS"]
        values["addin_paths"] = [s for s in raw.split(os.pathsep) if s]
    return values


def from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc


def load_settings(
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the sources by precedence and validate the result.

    ``flags`` holds only the options the user actually gave (None values are ignored).
    Without ``config_file``, ``PACSD_CONFIG`` names the file, if set.
    """
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(environ[ENV_PREFIX + "CONFIG"])
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(from_file(config_file))
    merged.update(from_env(environ))
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the setting (``addins.x.enabled: ...``)."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        if not err["loc"] and err["type"] == "value_error":
            # Checks across settings name the settings in their own message.
            parts.append(str(err.get("ctx", {}).get("error", msg)))
            continue
        parts.append(f"{where}: {msg}")
    return "invalid settings: " + "; ".join(parts)
