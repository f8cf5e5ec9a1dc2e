"""``pacsctl rollout --addin NAME [--reload | --load PATH] --batch N``.

Changes one add-in on the fleet's servers a batch at a time and checks every server of
the batch (gRPC health, DICOM listener health, a C-ECHO on its DICOM port) before the
next batch; the first failure stops the rollout (pacsd.client.rollout). In table mode
each batch is printed as soon as it is done, so an operator watching a long rollout sees
where it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import click
from pacsd.client.cli._base import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNREACHABLE,
    JSON,
    CliContext,
    Seconds,
)
from pacsd.client.cli.addin import source_argument
from pacsd.client.cli.fleet import FLEET_NATIVE, build_fleet, error_line
from pacsd.client.dicom_echo import DEFAULT_CALLING_AE
from pacsd.client.rollout import (
    DEFAULT_ECHO_TIMEOUT,
    RolloutReport,
    ServerRollout,
    rollout,
)


def server_line(s: ServerRollout, action: str) -> str:
    """``  pacs2: add-in x reloaded (version 1.1); healthy (C-ECHO 0x0000 in 2.1 ms)``."""
    name = s.server.name
    if s.status == "failed":
        done = "changed, then " if s.change is not None and s.change.changed else ""
        return f"  {name}: FAILED: {done}{' '.join(s.problem().split())}"
    what = "no change"
    if s.change is not None:
        addin = s.change.addin
        if s.change.changed:
            what = f"add-in {addin.name} {action}ed"
            if addin.version:
                what += f" (version {addin.version})"
        else:
            what = f"add-in {addin.name} already loaded (no change)"
    healthy = "healthy"
    if s.health is not None:
        echo = s.health.echo
        healthy = f"healthy (C-ECHO 0x{echo.status:04X} in {echo.round_trip_ms:.1f} ms)"
    return f"  {name}: {what}; {healthy}"


def summary_text(report: RolloutReport) -> str:
    def names(items: Sequence[str]) -> str:
        return ", ".join(items) or "none"

    if report.ok:
        noun = "batch" if report.batches == 1 else "batches"
        head = f"rollout complete: {report.batches} {noun}"
    else:
        head = f"rollout stopped at batch {report.stopped_at} of {report.batches}"
    parts = [f"changed: {names(report.changed)}"]
    if report.failed:
        parts.insert(0, f"failed: {names(report.failed)}")
    if report.skipped:
        parts.append(f"not touched: {names(report.skipped)}")
    return f"{head}; " + "; ".join(parts)


def rollout_exit_code(report: RolloutReport) -> int:
    if report.ok:
        return EXIT_OK
    tried = [s for s in report.servers if s.status != "skipped"]
    if tried and all(s.status == "failed" and s.unreachable for s in tried):
        return EXIT_UNREACHABLE
    return EXIT_PARTIAL


@click.command("rollout")
@click.option("--addin", "addin", required=True, metavar="NAME", help="The add-in to change.")
@click.option("--reload", "reload_", is_flag=True, help="Re-import its code (the default).")
@click.option(
    "--load",
    "load",
    metavar="NAME_OR_PATH",
    help="Load it instead, by name or from a path on the servers.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Servers changed at once; each batch is checked before the next.",
)
@click.option(
    "--calling-ae",
    default=DEFAULT_CALLING_AE,
    show_default=True,
    metavar="AE",
    help="Calling AE title of the health-check C-ECHO.",
)
@click.option(
    "--echo-timeout",
    type=Seconds(allow_zero=False),
    default=DEFAULT_ECHO_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="How long each step of the C-ECHO may take.",
)
@click.pass_context
def rollout_cmd(
    ctx: click.Context,
    addin: str,
    reload_: bool,
    load: str | None,
    batch: int,
    calling_ae: str,
    echo_timeout: float,
) -> None:
    """Reload (or load) add-in NAME on the fleet, batch by batch.

    After each batch every changed server must pass gRPC health, DICOM listener health
    and a C-ECHO on its DICOM port; the first failure stops the rollout and later
    servers are not touched. Exit status 0 when it completed, 4 when it stopped, 3 when
    no server could be reached.
    """
    if reload_ and load is not None:
        raise click.UsageError("give --reload or --load, not both")
    cli = ctx.find_object(CliContext)
    assert cli is not None  # the root group always creates it
    action = "load" if load is not None else "reload"
    source = source_argument(load) if load is not None else ""
    with build_fleet(cli) as fleet:
        total = -(-len(fleet) // batch)

        def progress(number: int, done: list[ServerRollout]) -> None:
            if cli.write_out == JSON:
                return
            names = ", ".join(s.server.name for s in done)
            click.echo(f"batch {number}/{total}: {names}")
            for s in done:
                click.echo(server_line(s, action))

        try:
            report = rollout(
                fleet,
                addin,
                action=action,
                source=source,
                batch=batch,
                calling_ae=calling_ae,
                echo_timeout=echo_timeout,
                on_batch=progress,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    if cli.write_out == JSON:
        click.echo(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        click.echo(summary_text(report))
        for s in report.servers:
            if s.status == "failed" and s.error is not None:
                click.echo(error_line(s.server.name, s.error), err=True)
            elif s.status == "failed":
                click.echo(f"pacsctl: error: [{s.server.name}] {s.problem()}", err=True)
    ctx.exit(rollout_exit_code(report))


setattr(rollout_cmd, FLEET_NATIVE, True)

COMMANDS: tuple[click.Command, ...] = (rollout_cmd,)
