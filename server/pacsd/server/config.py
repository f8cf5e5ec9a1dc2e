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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "PACSD_"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class ConfigError(Exception):
    """Settings could not be read or are invalid; the message is meant for the operator."""


class AddinConfig(BaseModel):
    """Per-add-in configuration: the ``[addins.NAME]`` tables of the settings file."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)


class Settings(BaseModel):
    """Everything a pacsd process is configured with. Documented in docs/configuration.md."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    ae_title: str = "PACSD"
    dicom_host: str = "127.0.0.1"
    dicom_port: int = Field(11112, ge=0, le=65535)
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

    @field_validator("control_host")
    @classmethod
    def _control_loopback(cls, value: str) -> str:
        # Until the control plane speaks TLS with credentials, it must not leave the host.
        if not is_loopback(value):
            raise ValueError(
                "the control plane listens on loopback only (127.0.0.0/8, ::1 or localhost) "
                "until TLS and credentials are configured"
            )
        return value

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
    if name not in ("addins", "required_addins", "addin_paths")
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
        parts.append(f"{where}: {msg}")
    return "invalid settings: " + "; ".join(parts)
