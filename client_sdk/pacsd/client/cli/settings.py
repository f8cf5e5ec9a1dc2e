"""``pacsctl settings``: read the server's settings, change those that apply at runtime."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click
from pacsd.client.cli._base import CliContext


def _cli(ctx: click.Context) -> CliContext:
    cli = ctx.find_object(CliContext)
    assert cli is not None  # the root group always creates it
    return cli


def parse_assignment(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``; VALUE is read as JSON when it parses (numbers, true, lists),
    otherwise taken as a string, so ``log_level=DEBUG`` needs no quotes."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="SETTING")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


def settings_text(values: Mapping[str, Any], runtime: Sequence[str] = ()) -> str:
    width = max((len(k) for k in values), default=0)
    lines = []
    for key, value in values.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        mark = "  (runtime)" if key in runtime else ""
        lines.append(f"{key:<{width}}  {shown}{mark}")
    return "\n".join(lines)


@click.group("settings")
def settings() -> None:
    """Server settings: show them, or change those that apply without a restart."""


@settings.command("get")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.pass_context
def settings_get(ctx: click.Context, names: Sequence[str]) -> None:
    """Show every setting in force (or only NAMEs). Secrets read "***"; settings
    marked (runtime) can be changed with `pacsctl settings set`."""
    cli = _cli(ctx)
    result = cli.client().server.settings()
    values = result.settings
    if names:
        unknown = [n for n in names if n not in values]
        if unknown:
            raise click.BadParameter(f"unknown setting(s): {', '.join(unknown)}")
        values = {n: values[n] for n in names}
    cli.emit(
        {"settings": values, "runtime_settings": list(result.runtime_settings)},
        settings_text(values, result.runtime_settings),
    )


@settings.command("set")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@click.option("--dry-run", is_flag=True, help="Validate and show what would change.")
@click.pass_context
def settings_set(ctx: click.Context, assignments: Sequence[str], dry_run: bool) -> None:
    """Change settings that apply at runtime, e.g. `log_level=DEBUG max_associations=128`.

    All values are validated before any is applied. Values already in force are no
    change (re-running is safe). Changes last until the server restarts.
    """
    cli = _cli(ctx)
    changes = dict(parse_assignment(a) for a in assignments)
    result = cli.client().server.update_settings(changes, validate_only=dry_run)
    if result.changed:
        verb = "would change" if dry_run else "changed"
        text = "\n".join(
            f"{verb} {name} to {json.dumps(result.settings.get(name))}"
            for name in result.changed_fields
        )
    else:
        text = "no change"
    cli.emit(
        {
            "changed": result.changed,
            "changed_fields": list(result.changed_fields),
            "dry_run": dry_run,
            "settings": {k: result.settings.get(k) for k in changes},
        },
        text,
    )


#: Safe to run on every server of a fleet (--endpoints / --fleet).
COMMANDS: tuple[click.Command, ...] = (settings,)
