"""Commands for ``pacsd.admin.v1.AddinService``: ``pacsctl addin ...``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import click
from pacsd.admin.v1 import addins_pb2
from pacsd.client._json import message_to_dict
from pacsd.client.addins import AddinChange, to_struct
from pacsd.client.cli import render
from pacsd.client.cli._base import CliContext, pass_cli
from pacsd.client.errors import PacsdError

_STATE_PREFIX = "ADDIN_STATE_"

#: Past tense of each change, printed when it did something.
_DONE = {
    "load": "loaded",
    "unload": "unloaded",
    "reload": "reloaded",
    "enable": "enabled",
    "disable": "disabled",
}


# -- parsing ----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    # json.loads takes NaN/Infinity; a Struct cannot carry them, so they stay strings.
    raise ValueError(name)


def parse_value(text: str) -> Any:
    """A ``--set``/``--arg`` value: JSON when it parses as JSON, else the text itself.

    ``10`` is a number, ``true`` a bool, ``null`` None, ``"10"`` the string 10,
    ``[1, 2]`` a list; ``/tmp/x`` or ``hello`` are plain strings.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def parse_pairs(pairs: Sequence[str], option: str) -> dict[str, Any]:
    """``key=value`` options as a dict; the last of repeated keys wins."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        out[key] = parse_value(value)
    return out


def _checked(values: dict[str, Any], field: str, option: str) -> dict[str, Any]:
    """Refuse (exit 2) what could not be sent unchanged, before any call is made."""
    try:
        to_struct(values, field)
    except PacsdError as exc:
        raise click.BadParameter(exc.message, param_hint=option) from exc
    return values


def source_argument(name_or_path: str) -> str:
    """Make a path absolute here: the server would resolve it against its own directory.

    Anything that looks like a path to the server (it contains "/" or ends in ".py")
    or to a person (starts with "." or "~") is a path; the rest are add-in names.
    """
    looks_like_path = (
        "/" in name_or_path
        or os.sep in name_or_path
        or name_or_path.endswith(".py")
        or name_or_path.startswith((".", "~"))
    )
    if not looks_like_path:
        return name_or_path
    return os.path.abspath(os.path.expanduser(name_or_path))


# -- rendering ---------------------------------------------------------------------------


def state_name(state: int) -> str:
    """Drop the "ADDIN_STATE_" prefix, as ``render.state_name`` does for the server."""
    try:
        name = addins_pb2.AddinState.Name(state)
    except ValueError:
        return str(state)
    return name.removeprefix(_STATE_PREFIX)


def _text(value: Any) -> str:
    """One table cell: strings as they are (empty ones visible), the rest as JSON."""
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value, allow_nan=False)


def addin_list(addins: Sequence[addins_pb2.Addin]) -> str:
    if not addins:
        return "no add-ins"
    return render.table(
        [
            [
                a.name,
                state_name(a.state),
                a.version or "-",
                render.yes_no(a.healthy),
                str(a.counters.calls),
                str(a.counters.failures),
                a.source or "-",
            ]
            for a in addins
        ],
        header=["NAME", "STATE", "VERSION", "HEALTHY", "CALLS", "FAILURES", "SOURCE"],
    )


def addin_detail(a: addins_pb2.Addin) -> str:
    c = a.counters
    summary = render.table(
        [
            ["NAME", a.name],
            ["STATE", state_name(a.state)],
            ["VERSION", a.version or "-"],
            ["DESCRIPTION", a.description or "-"],
            ["SOURCE", a.source or "-"],
            ["HEALTHY", render.yes_no(a.healthy)],
            [
                "CALLS",
                f"{c.calls} calls / {c.failures} failures / {c.timeouts} timeouts",
            ],
            ["LATENCY", f"{c.mean_latency_ms:.1f} ms mean / {c.max_latency_ms:.1f} ms max"],
            ["HOOKS", ", ".join(a.hooks) or "-"],
            ["COMMANDS", ", ".join(a.commands) or "-"],
            ["ERROR", " ".join(a.error.split()) or "-"],
        ]
    )
    if not a.bindings:
        return f"{summary}\n\nBINDINGS\n(none)"
    bindings = render.table(
        [[b.service, b.sop_class_uid, ", ".join(b.transfer_syntaxes) or "-"] for b in a.bindings],
        header=["SERVICE", "SOP CLASS", "TRANSFER SYNTAXES"],
    )
    return f"{summary}\n\nBINDINGS\n{bindings}"


def key_values(values: dict[str, Any], empty: str) -> str:
    if not values:
        return empty
    return render.table([[key, _text(value)] for key, value in sorted(values.items())])


def change_text(action: str, result: AddinChange) -> str:
    """``add-in example_store loaded`` or ``add-in spy already disabled (no change)``."""
    a = result.addin
    if result.changed:
        text = f"add-in {a.name} {_DONE[action]}"
        if action in ("load", "reload") and a.version:
            text += f" (version {a.version})"
        return text
    if action == "unload":
        return f"add-in {a.name} is not loaded (no change)"
    return f"add-in {a.name} already {_DONE[action]} (no change)"


# -- commands ----------------------------------------------------------------------------


@click.group()
def addin() -> None:
    """List, load, unload, reload, enable, disable and configure add-ins at runtime.

    Changes apply to new associations; running ones finish with the handlers they
    started with. The DICOM listener never restarts.
    """


@addin.command("list")
@pass_cli
def addin_list_cmd(cli: CliContext) -> None:
    """Every add-in the server knows: loaded, discovered but not loaded, failed."""
    addins = cli.client().addins.list()
    cli.emit({"addins": [message_to_dict(a) for a in addins]}, addin_list(addins))


@addin.command("get")
@click.argument("name")
@pass_cli
def addin_get(cli: CliContext, name: str) -> None:
    """State, source, bindings, hooks, commands, health and counters of NAME."""
    msg = cli.client().addins.get(name)
    cli.emit({"addin": message_to_dict(msg)}, addin_detail(msg))


def _emit_change(cli: CliContext, action: str, result: AddinChange) -> None:
    cli.emit(
        {"addin": message_to_dict(result.addin), "changed": result.changed},
        change_text(action, result),
    )


@addin.command("load")
@click.argument("name_or_path", metavar="NAME_OR_PATH")
@pass_cli
def addin_load(cli: CliContext, name_or_path: str) -> None:
    """Load an add-in by name, or from a .py file or package folder.

    A path is made absolute here but opened by the server, so it must exist on the
    server's filesystem. The add-in is named after the file stem.
    """
    _emit_change(cli, "load", cli.client().addins.load(source_argument(name_or_path)))


@addin.command("unload")
@click.argument("name")
@pass_cli
def addin_unload(cli: CliContext, name: str) -> None:
    """Stop routing to NAME, let its calls in flight finish, stop it."""
    _emit_change(cli, "unload", cli.client().addins.unload(name))


@addin.command("reload")
@click.argument("name")
@pass_cli
def addin_reload(cli: CliContext, name: str) -> None:
    """Re-import NAME's code from disk; if the new code fails the old one stays."""
    _emit_change(cli, "reload", cli.client().addins.reload(name))


@addin.command("enable")
@click.argument("name")
@pass_cli
def addin_enable(cli: CliContext, name: str) -> None:
    """Route traffic to a loaded add-in again."""
    _emit_change(cli, "enable", cli.client().addins.enable(name))


@addin.command("disable")
@click.argument("name")
@pass_cli
def addin_disable(cli: CliContext, name: str) -> None:
    """Keep NAME loaded but route nothing to it."""
    _emit_change(cli, "disable", cli.client().addins.disable(name))


@addin.command("settings")
@click.argument("name")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change one setting (repeatable). VALUE is JSON if it parses, else a string.",
)
@pass_cli
def addin_settings(cli: CliContext, name: str, assignments: tuple[str, ...]) -> None:
    """Show NAME's settings, or change some with --set (the others keep their values)."""
    if not assignments:
        settings = cli.client().addins.get_settings(name)
        cli.emit({"settings": settings}, key_values(settings, "(no settings)"))
        return
    changes = _checked(parse_pairs(assignments, "--set"), "settings", "--set")
    result = cli.client().addins.update_settings(name, changes)
    headline = f"settings of {name} " + ("updated" if result.changed else "unchanged (no change)")
    cli.emit(
        {"settings": result.settings, "changed": result.changed},
        f"{headline}\n{key_values(result.settings, '(no settings)')}",
    )


@addin.command("invoke")
@click.argument("name")
@click.argument("command")
@click.option(
    "--arg",
    "arg_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="One argument (repeatable). VALUE is JSON if it parses, else a string.",
)
@click.option(
    "--args-json",
    metavar="JSON",
    help="All arguments as one JSON object; --arg values override its keys.",
)
@pass_cli
def addin_invoke(
    cli: CliContext,
    name: str,
    command: str,
    arg_pairs: tuple[str, ...],
    args_json: str | None,
) -> None:
    """Run COMMAND, a command that add-in NAME declares, and show its result."""
    args: dict[str, Any] = {}
    if args_json is not None:
        try:
            parsed = json.loads(args_json, parse_constant=_reject_constant)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--args-json") from exc
        if not isinstance(parsed, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--args-json")
        args.update(parsed)
    args.update(parse_pairs(arg_pairs, "--arg"))
    _checked(args, "args", "--arg/--args-json")
    result = cli.client().addins.invoke(name, command, args)
    cli.emit({"result": result}, key_values(result, "(empty result)"))


COMMANDS: tuple[click.Command, ...] = (addin,)
