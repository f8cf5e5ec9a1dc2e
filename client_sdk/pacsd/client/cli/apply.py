"""``pacsctl apply -f desired.toml [--dry-run]`` and ``pacsctl diff -f desired.toml``.

The desired-state file says, per group of servers, which server settings are in force
(``[groups.NAME.server]``: log level, limits and the other settings that apply at
runtime), which add-ins are loaded and enabled with which settings and which AE titles
exist (docs/fleet.md). Both commands
read every server's actual state and print, per server, the changes that would bring it
there; ``apply`` then makes them. Applying twice reports no changes the second time.

Servers come from ``--fleet``/``--endpoints`` (with ``--selector``), else from the file's
own ``inventory = "fleet.toml"``, else the single ``--endpoint``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click
from pacsd.client.cli._base import JSON, CliContext
from pacsd.client.cli.fleet import FLEET_NATIVE, build_fleet, error_line, fleet_exit_code
from pacsd.client.desired import DesiredStateError, ServerApply, apply, load_desired

FILE_HELP = "Desired-state file (TOML; format in docs/fleet.md)."


def _cli(ctx: click.Context) -> CliContext:
    cli = ctx.find_object(CliContext)
    assert cli is not None  # the root group always creates it
    return cli


def _run(ctx: click.Context, path: str, dry_run: bool) -> None:
    cli = _cli(ctx)
    try:
        desired = load_desired(path)
    except DesiredStateError as exc:
        raise click.BadParameter(str(exc), param_hint="-f") from exc
    with build_fleet(cli, default_inventory=desired.inventory) as fleet:
        try:
            outcomes = apply(fleet, desired, dry_run=dry_run)
        except DesiredStateError as exc:  # groups that conflict on some server
            raise click.BadParameter(str(exc), param_hint="-f") from exc
    if cli.write_out == JSON:
        click.echo(json.dumps(document(outcomes, dry_run), indent=2, allow_nan=False))
    else:
        click.echo(text(outcomes, dry_run))
        for o in outcomes:
            if o.error is not None:
                click.echo(error_line(o.server.name, o.error), err=True)
    ctx.exit(fleet_exit_code(outcomes))


def document(outcomes: Sequence[ServerApply], dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "changed": any(o.steps for o in outcomes) if dry_run else any(o.applied for o in outcomes),
        "servers": [o.to_dict(dry_run) for o in outcomes],
        "summary": _counts(outcomes, dry_run),
    }


def _counts(outcomes: Sequence[ServerApply], dry_run: bool) -> dict[str, int]:
    return {
        "servers": len(outcomes),
        "in_sync": sum(1 for o in outcomes if o.ok and not o.steps),
        "to_change" if dry_run else "changed": sum(1 for o in outcomes if o.ok and o.steps),
        "changes": sum(len(o.steps) for o in outcomes)
        if dry_run
        else sum(o.applied for o in outcomes),
        "failed": sum(1 for o in outcomes if not o.ok),
        "unreachable": sum(1 for o in outcomes if o.unreachable),
    }


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def text(outcomes: Sequence[ServerApply], dry_run: bool) -> str:
    """One block per server: a headline, then one line per change."""
    lines: list[str] = []
    for o in outcomes:
        head = f"{o.server.name} ({o.server.endpoint})"
        if not o.spec.groups:
            lines.append(f"{head}: no group matches (not contacted)")
            continue
        groups = ", ".join(o.spec.groups)
        if o.error is not None:
            state = "unreachable" if o.unreachable else "failed"
            lines.append(f"{head} [{groups}]: {state} (see stderr)")
        elif not o.steps:
            lines.append(f"{head} [{groups}]: no changes")
        else:
            lines.append(f"{head} [{groups}]: {plural(len(o.steps), 'change')}")
        for index, step in enumerate(o.steps):
            line = f"  {step.text()}"
            if not dry_run:
                done = o.changed[index] if index < len(o.changed) else None
                if done is None:
                    line += "  (not applied)"
                elif not done:
                    line += "  (no change)"
            lines.append(line)
    counts = _counts(outcomes, dry_run)
    if dry_run:
        tail = (
            f"{plural(counts['changes'], 'change')} to make on "
            f"{plural(counts['to_change'], 'server')}; {counts['in_sync']} in sync"
        )
    else:
        tail = (
            f"applied {plural(counts['changes'], 'change')} on "
            f"{plural(counts['changed'], 'server')}; {counts['in_sync']} already in sync"
        )
    if counts["failed"]:
        tail += f"; {counts['failed']} failed ({counts['unreachable']} unreachable)"
    lines.append(tail)
    return "\n".join(lines)


@click.command("apply")
@click.option("-f", "--filename", "path", required=True, metavar="FILE", help=FILE_HELP)
@click.option("--dry-run", is_flag=True, help="Print the changes without making them.")
@click.pass_context
def apply_cmd(ctx: click.Context, path: str, dry_run: bool) -> None:
    """Bring servers to the state FILE describes: server settings that apply at
    runtime (log level, limits), add-ins (state, source, settings) and AE titles.

    Prints the changes per server, then makes them; a second apply reports no
    changes. Exit status 0 when every server succeeded, 4 when some failed, 3 when
    none could be reached.
    """
    _run(ctx, path, dry_run)


@click.command("diff")
@click.option("-f", "--filename", "path", required=True, metavar="FILE", help=FILE_HELP)
@click.pass_context
def diff_cmd(ctx: click.Context, path: str) -> None:
    """Show what "apply -f FILE" would change on each server (changes nothing)."""
    _run(ctx, path, dry_run=True)


for _command in (apply_cmd, diff_cmd):
    setattr(_command, FLEET_NATIVE, True)

COMMANDS: tuple[click.Command, ...] = (apply_cmd, diff_cmd)
