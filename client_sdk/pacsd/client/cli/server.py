"""Commands for ``pacsd.admin.v1.ServerService`` and the process as a whole."""

from __future__ import annotations

import click
from pacsd.client import _health
from pacsd.client._json import message_to_dict
from pacsd.client.cli import render
from pacsd.client.cli._base import EXIT_ERROR, CliContext, Seconds, pass_cli
from pacsd.client.client import Change

GRACE_HELP = (
    "How long running associations may go on before they are aborted "
    "[default: the server's configured grace period]."
)


@click.group()
def server() -> None:
    """Show and change the DICOM listener's state (the control plane stays up)."""


@server.command("get")
@pass_cli
def server_get(cli: CliContext) -> None:
    """Show state, version, listeners and traffic counters."""
    _show_server(cli)


@click.command("status")
@pass_cli
def status(cli: CliContext) -> None:
    """Same as "server get"."""
    _show_server(cli)


def _show_server(cli: CliContext) -> None:
    msg = cli.client().server.get()
    cli.emit({"server": message_to_dict(msg)}, render.server(msg))


def _emit_change(cli: CliContext, action: str, result: Change) -> None:
    cli.emit(
        {"server": message_to_dict(result.server), "changed": result.changed},
        render.change(action, result.server, result.changed),
    )


@server.command("start")
@pass_cli
def server_start(cli: CliContext) -> None:
    """Bind the DICOM listener again after "server stop"."""
    _emit_change(cli, "start", cli.client().server.start())


@server.command("stop")
@click.option("--grace", type=Seconds(), metavar="SECONDS", help=GRACE_HELP)
@pass_cli
def server_stop(cli: CliContext, grace: float | None) -> None:
    """Close the DICOM port; waits until running associations have ended."""
    _emit_change(cli, "stop", cli.client().server.stop(grace))


@server.command("pause")
@pass_cli
def server_pause(cli: CliContext) -> None:
    """Keep listening but reject new associations (transient rejection)."""
    _emit_change(cli, "pause", cli.client().server.pause())


@server.command("resume")
@pass_cli
def server_resume(cli: CliContext) -> None:
    """Accept new associations again after "server pause"."""
    _emit_change(cli, "resume", cli.client().server.resume())


@click.command("shutdown")
@click.option("--grace", type=Seconds(), metavar="SECONDS", help=GRACE_HELP)
@pass_cli
def shutdown(cli: CliContext, grace: float | None) -> None:
    """Ask the pacsd process to exit; returns once the request is accepted."""
    cli.client().shutdown(grace)
    cli.emit({}, "shutdown requested")


@click.command("health")
@click.option(
    "--service",
    default="",
    metavar="NAME",
    help='Health service: "" is the process, "pacsd.dicom" the DICOM listener [default: ""].',
)
@click.pass_context
def health(ctx: click.Context, service: str) -> None:
    """grpc.health.v1 check; exits 1 unless the service is SERVING."""
    cli = ctx.find_object(CliContext)
    assert cli is not None  # the root group always creates it
    status_name = cli.client().health(service)
    cli.emit({"status": status_name, "service": service}, status_name)
    if status_name != _health.STATUS_NAMES[1]:
        ctx.exit(EXIT_ERROR)


COMMANDS: tuple[click.Command, ...] = (server, status, shutdown, health)
