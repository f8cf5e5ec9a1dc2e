"""``pacsctl`` entry point: global options, command registration, error handling."""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click
from pacsd.client.cli._base import JSON, TABLE, CliContext, Seconds, exit_code, report
from pacsd.client.cli.addin import COMMANDS as ADDIN_COMMANDS
from pacsd.client.cli.ae import COMMANDS as AE_COMMANDS
from pacsd.client.cli.server import COMMANDS
from pacsd.client.cli.storage import COMMANDS as STORAGE_COMMANDS
from pacsd.client.client import DEFAULT_ENDPOINT, DEFAULT_TIMEOUT
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
@click.pass_context
def cli(ctx: click.Context, endpoint: str, write_out: str, timeout: float) -> None:
    """pacsctl: drive a pacsd server over its gRPC control plane.

    Results go to stdout, errors to stderr. Exit status: 0 ok, 1 error (or not
    SERVING), 2 usage error, 3 no pacsd reachable at the endpoint.
    """
    state = CliContext(endpoint=endpoint, write_out=write_out.lower(), timeout=timeout)
    ctx.obj = state
    ctx.call_on_close(state.close)


for _command in (*COMMANDS, *ADDIN_COMMANDS, *AE_COMMANDS, *STORAGE_COMMANDS):
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
