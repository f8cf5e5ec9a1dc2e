"""What every pacsctl command shares: global settings, output, errors and exit codes.

The contract with scripts lives here: stdout carries only the command's result (one
JSON document with ``-w json``), stderr carries diagnostics, and the exit status says
which kind of failure happened without parsing any text.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import click
import grpc
from pacsd.client.client import Client
from pacsd.client.credentials import Credentials, CredentialsError
from pacsd.client.errors import PacsdError

#: Exit statuses; documented in docs/cli.md, which scripts rely on.
EXIT_OK = 0
#: The server answered with an error, or a health check was not SERVING.
EXIT_ERROR = 1
#: Bad command line (click's own status for usage errors).
EXIT_USAGE = 2
#: No pacsd answered at the endpoint (with a fleet: at none of the endpoints).
EXIT_UNREACHABLE = 3
#: Fleet commands only: some servers failed (or were unreachable), others succeeded.
EXIT_PARTIAL = 4
#: The server refused the credentials (UNAUTHENTICATED) or the role (PERMISSION_DENIED).
EXIT_AUTH = 5

TABLE = "table"
JSON = "json"


@dataclass(frozen=True)
class FleetOptions:
    """The global ``--endpoints`` / ``--fleet`` / ``--selector`` / ``--parallelism``
    options; present on CliContext only when one of them was given (see cli/fleet.py)."""

    endpoints: str | None = None
    inventory: str | None = None
    selector: str | None = None
    parallelism: int | None = None


@dataclass
class CliContext:
    endpoint: str
    write_out: str
    timeout: float
    _client: Client | None = field(default=None, repr=False)
    fleet: FleetOptions | None = None
    #: From --token/--cacert/--cert/--key (or their PACSCTL_* variables); None: none.
    credentials: Credentials | None = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        return self.write_out == JSON

    def client(self) -> Client:
        """One channel per invocation, opened only by commands that need it."""
        if self._client is None:
            try:
                self._client = Client(
                    self.endpoint, timeout=self.timeout, credentials=self.credentials
                )
            except CredentialsError as exc:  # e.g. a token in plaintext to another host
                raise click.UsageError(str(exc)) from exc
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def emit(self, document: dict[str, Any], text: str) -> None:
        """Write the result: ``document`` as JSON, or ``text`` for people."""
        if self.json:
            click.echo(json.dumps(document, indent=2, allow_nan=False))
        else:
            click.echo(text)


pass_cli = click.make_pass_decorator(CliContext)


_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def exit_code(error: PacsdError) -> int:
    if error.unreachable:
        return EXIT_UNREACHABLE
    return EXIT_AUTH if error.code in _AUTH_CODES else EXIT_ERROR


def one_line(text: str) -> str:
    # gRPC's connection errors can span lines; stderr promises one line per error.
    return " ".join(text.split())


def report(error: PacsdError, write_out: str) -> None:
    """Describe ``error`` on stderr, as one line of text or one line of JSON."""
    if write_out == JSON:
        click.echo(json.dumps({"error": error.to_dict()}), err=True)
        return
    message = error.message
    if error.unreachable:
        message = f"cannot reach pacsd at {error.endpoint}: {message}"
    tag = f"{error.code.name}/{error.reason}" if error.reason else error.code.name
    click.echo(f"pacsctl: error: {one_line(message)} ({tag})", err=True)


class Seconds(click.ParamType):
    """A finite number of seconds; click's FloatRange would let "nan" and "inf" through."""

    name = "seconds"

    def __init__(self, *, allow_zero: bool = True) -> None:
        self.allow_zero = allow_zero

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            seconds = value
        else:
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        low_ok = seconds >= 0 if self.allow_zero else seconds > 0
        if not (math.isfinite(seconds) and low_ok):
            bound = "0 or more" if self.allow_zero else "more than 0"
            self.fail(f"{value!r} is not a number of seconds ({bound})", param, ctx)
        return seconds
