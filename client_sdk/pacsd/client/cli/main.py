"""``pacsctl`` entry point: global options, command registration, error handling."""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click
from pacsd.client.cli import fleet as fleet_cli
from pacsd.client.cli._base import (
    JSON,
    TABLE,
    CliContext,
    FleetOptions,
    Seconds,
    exit_code,
    report,
)
from pacsd.client.cli.addin import COMMANDS as ADDIN_COMMANDS
from pacsd.client.cli.ae import COMMANDS as AE_COMMANDS
from pacsd.client.cli.apply import COMMANDS as APPLY_COMMANDS
from pacsd.client.cli.assoc import COMMANDS as ASSOC_COMMANDS
from pacsd.client.cli.certs import COMMANDS as CERTS_COMMANDS
from pacsd.client.cli.logs import COMMANDS as LOGS_COMMANDS
from pacsd.client.cli.rollout import COMMANDS as ROLLOUT_COMMANDS
from pacsd.client.cli.server import COMMANDS
from pacsd.client.cli.settings import COMMANDS as SETTINGS_COMMANDS
from pacsd.client.cli.storage import COMMANDS as STORAGE_COMMANDS
from pacsd.client.client import DEFAULT_ENDPOINT, DEFAULT_TIMEOUT
from pacsd.client.credentials import Credentials, CredentialsError
from pacsd.client.errors import PacsdError

try:
    VERSION = version("pacsd")
except PackageNotFoundError:  # a source tree that was never installed
    VERSION = "0.0.0+unknown"


def _endpoint(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # gRPC would take "" for a target and fail with a C-core log dump on stderr.
    if not value.strip():
        raise click.BadParameter("must not be empty (HOST:PORT)")
    return value.strip()


class PacsctlGroup(click.Group):
    """Turns every PacsdError from any subcommand into one stderr report and an exit
    status, so no expected failure ever shows a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PacsdError as exc:
            cli = ctx.find_object(CliContext)
            report(exc, cli.write_out if cli is not None else TABLE)
            ctx.exit(exit_code(exc))


@click.group(cls=PacsctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="pacsctl")
@click.option(
    "-e",
    "--endpoint",
    default=DEFAULT_ENDPOINT,
    show_default=True,
    envvar="PACSCTL_ENDPOINT",
    show_envvar=True,
    metavar="HOST:PORT",
    callback=_endpoint,
    help="Control-plane address of the pacsd to talk to.",
)
@click.option(
    "-w",
    "--write-out",
    type=click.Choice([TABLE, JSON], case_sensitive=False),
    default=TABLE,
    show_default=True,
    envvar="PACSCTL_WRITE_OUT",
    show_envvar=True,
    help="Output format of results.",
)
@click.option(
    "--timeout",
    type=Seconds(allow_zero=False),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    envvar="PACSCTL_TIMEOUT",
    show_envvar=True,
    metavar="SECONDS",
    help="Deadline of each call.",
)
@click.option(
    "--endpoints",
    envvar="PACSCTL_ENDPOINTS",
    show_envvar=True,
    metavar="HOST:PORT,...",
    help="Run the command on each of these servers (a fleet).",
)
@click.option(
    "--fleet",
    "fleet_file",
    envvar="PACSCTL_FLEET",
    show_envvar=True,
    metavar="FILE",
    help="Run the command on the servers of this inventory (fleet.toml).",
)
@click.option(
    "--selector",
    envvar="PACSCTL_SELECTOR",
    show_envvar=True,
    metavar="EXPR",
    help="With --fleet: only servers whose labels match (e.g. site=north,role!=test).",
)
@click.option(
    "--parallelism",
    type=click.IntRange(min=1),
    envvar="PACSCTL_PARALLELISM",
    show_envvar=True,
    metavar="N",
    help="With a fleet: calls in flight at once [default: the inventory's, else 32].",
)
@click.option(
    "--token",
    envvar="PACSCTL_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="Bearer token for the control plane (prefer the variable: arguments show in ps).",
)
@click.option(
    "--cacert",
    envvar="PACSCTL_CACERT",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CA certificate (PEM) that verifies the server; switches to TLS.",
)
@click.option(
    "--cert",
    envvar="PACSCTL_CERT",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Client certificate (PEM) for mutual TLS; needs --key.",
)
@click.option(
    "--key",
    envvar="PACSCTL_KEY",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Private key (PEM) of --cert.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    endpoint: str,
    write_out: str,
    timeout: float,
    endpoints: str | None,
    fleet_file: str | None,
    selector: str | None,
    parallelism: int | None,
    token: str | None,
    cacert: str | None,
    cert: str | None,
    key: str | None,
) -> None:
    """pacsctl: drive a pacsd server over its gRPC control plane.

    Results go to stdout, errors to stderr. Exit status: 0 ok, 1 error (or not
    SERVING), 2 usage error, 3 no pacsd reachable at the endpoint, 5 credentials
    refused or role insufficient. With --endpoints or --fleet every command runs on
    each server: 0 all succeeded, 4 some failed, 3 none reachable.
    """
    state = CliContext(endpoint=endpoint, write_out=write_out.lower(), timeout=timeout)
    try:
        state.credentials = Credentials.from_options(
            token=token, cacert=cacert, cert=cert, key=key, name="pacsctl"
        )
    except CredentialsError as exc:
        raise click.UsageError(str(exc)) from exc
    state.fleet = _fleet_options(ctx, endpoints, fleet_file, selector, parallelism)
    ctx.obj = state
    ctx.call_on_close(state.close)


def _fleet_options(
    ctx: click.Context,
    endpoints: str | None,
    fleet_file: str | None,
    selector: str | None,
    parallelism: int | None,
) -> FleetOptions | None:
    """The fleet options, checked against each other and the command (usage errors,
    exit 2, before anything is sent); None when no fleet was asked for."""
    endpoints = endpoints.strip() if endpoints else None
    fleet_file = fleet_file.strip() if fleet_file else None
    if not (endpoints or fleet_file):
        if selector:
            raise click.UsageError("--selector needs --fleet")
        return None
    if endpoints and fleet_file:
        raise click.UsageError("give --endpoints or --fleet, not both")
    if ctx.get_parameter_source("endpoint") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give --endpoint or --endpoints/--fleet, not both")
    if selector and not fleet_file:
        raise click.UsageError("--selector needs --fleet (endpoints have no labels)")
    name = ctx.invoked_subcommand or ""
    command = ctx.command.get_command(ctx, name) if isinstance(ctx.command, click.Group) else None
    if name and not fleet_cli.supports_fleet(command):
        raise click.UsageError(f"{name!r} does not support --endpoints/--fleet")
    return FleetOptions(endpoints, fleet_file, selector, parallelism)


#: Commands that run once per server with --endpoints/--fleet (cli/fleet.py). Within
#: them, streams (logs, assoc watch) merge every server's stream, assoc get/abort take
#: SERVER/ID, and certs init/issue (local files) refuse fleet options.
FAN_OUT_COMMANDS = (
    *COMMANDS,
    *ADDIN_COMMANDS,
    *AE_COMMANDS,
    *STORAGE_COMMANDS,
    *LOGS_COMMANDS,
    *SETTINGS_COMMANDS,
    *ASSOC_COMMANDS,
    *CERTS_COMMANDS,
)
fleet_cli.install(FAN_OUT_COMMANDS)

# apply, diff and rollout handle fleets themselves.
for _command in (*FAN_OUT_COMMANDS, *APPLY_COMMANDS, *ROLLOUT_COMMANDS):
    cli.add_command(_command)


def main() -> None:
    try:
        cli.main(prog_name="pacsctl")
    except BrokenPipeError:
        # `pacsctl ... | head` closed our stdout; that is the reader's choice, not an
        # error worth a traceback. Point stdout at devnull so the final flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
