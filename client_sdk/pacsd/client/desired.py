"""Declarative state: a file says what each group of servers should run; apply makes it so.

A fleet is configured by stating the result, not the steps: "servers labelled
role=ct have query_retrieve enabled with max_results 500 and know the AE title
ARCHIVE". ``plan`` reads one server's actual state and computes the steps that close
the gap; ``execute`` runs them through the ordinary, idempotent SDK calls. Applying a
second time finds nothing to do, which is what makes apply safe to run from cron,
Ansible or a Kubernetes job.

Scope: server settings that apply at runtime (``[groups.NAME.server]``: log level,
limits, timeouts), add-ins (loaded / enabled / disabled / unloaded, where from,
settings) and AE titles. Server settings are checked by the server itself while
planning (a validate-only update), so a typo, a bad value or a setting that needs a
restart shows up in ``pacsctl diff`` before anything changes.

The file format is documented in docs/fleet.md.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pacsd.admin.v1 import addins_pb2
from pacsd.client.aetitles import PERMISSIONS, permission_names
from pacsd.client.errors import PacsdError
from pacsd.client.fleet import error_to_dict
from pacsd.client.inventory import FleetServer, InventoryError, Selector

if TYPE_CHECKING:
    from pacsd.client.client import Client
    from pacsd.client.fleet import Fleet

__all__ = [
    "AETitleSpec",
    "AddinSpec",
    "DesiredState",
    "DesiredStateError",
    "GroupSpec",
    "ServerApply",
    "ServerSpec",
    "Step",
    "apply",
    "execute",
    "load_desired",
    "plan",
]

ADDIN_STATES = ("enabled", "disabled", "unloaded")

_LOADED = (addins_pb2.ADDIN_STATE_ENABLED, addins_pb2.ADDIN_STATE_DISABLED)


class DesiredStateError(ValueError):
    """The desired-state file cannot be used (syntax, unknown key, conflicting groups);
    the message names the file and the key. Nothing has been changed."""


# -- the model ------------------------------------------------------------------------


@dataclass(frozen=True)
class AddinSpec:
    """What one add-in should be. ``state`` None means "enabled" unless another group
    says otherwise; ``source`` is what to load it from (a name or an absolute path; ""
    loads it by its name); ``settings`` lists only the keys to manage."""

    name: str
    state: str | None = None
    source: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def wanted(self) -> str:
        return self.state or "enabled"


@dataclass(frozen=True)
class AETitleSpec:
    """One AE title: present with these values (fields left None are not managed,
    except that a new entry needs host and port), or ``absent``."""

    ae_title: str
    host: str | None = None
    port: int | None = None
    description: str | None = None
    absent: bool = False
    #: Where the AE may call from (sorted; () allows any address).
    allowed_addresses: tuple[str, ...] | None = None
    #: Permission names in ``PERMISSIONS`` order, or "all".
    permissions: tuple[str, ...] | str | None = None


@dataclass(frozen=True)
class GroupSpec:
    name: str
    selector: Selector
    addins: Mapping[str, AddinSpec]
    ae_titles: Mapping[str, AETitleSpec]
    prune_ae_titles: bool = False
    #: Server settings to hold (``[groups.NAME.server]``), by their settings-file names.
    server: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerSpec:
    """Everything the matching groups say about one server, merged."""

    groups: tuple[str, ...] = ()
    addins: Mapping[str, AddinSpec] = field(default_factory=dict)
    ae_titles: Mapping[str, AETitleSpec] = field(default_factory=dict)
    prune_ae_titles: bool = False
    server: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DesiredState:
    """A parsed desired-state file: groups in file order, and the inventory it names
    (None: the caller supplies the servers)."""

    groups: tuple[GroupSpec, ...]
    inventory: Path | None = None
    path: Path | None = None

    def for_server(self, server: FleetServer) -> ServerSpec:
        """Merge the groups whose selector matches ``server``.

        Two groups may say the same thing twice, but not two different things (an
        add-in enabled by one and disabled by another, a setting or an AE title with
        two values): that is an error, because "the last group wins" would make the
        outcome depend on the order of tables in a file.
        """
        where = str(self.path) if self.path else "desired state"
        groups: list[str] = []
        addins: dict[str, AddinSpec] = {}
        owners: dict[str, str] = {}
        ae_titles: dict[str, AETitleSpec] = {}
        ae_owners: dict[str, str] = {}
        prune = False
        server_settings: dict[str, Any] = {}
        setting_owners: dict[str, str] = {}
        for group in self.groups:
            if not group.selector.matches(server):
                continue
            groups.append(group.name)
            prune = prune or group.prune_ae_titles
            for name, spec in group.addins.items():
                if name not in addins:
                    addins[name], owners[name] = spec, group.name
                    continue
                addins[name] = _merge_addin(
                    addins[name],
                    spec,
                    f"{where}: server {server.name}: add-in {name} "
                    f"(groups {owners[name]} and {group.name})",
                )
            for ae, entry in group.ae_titles.items():
                if ae in ae_titles and ae_titles[ae] != entry:
                    raise DesiredStateError(
                        f"{where}: server {server.name}: AE title {ae} is declared "
                        f"differently by groups {ae_owners[ae]} and {group.name}"
                    )
                ae_titles.setdefault(ae, entry)
                ae_owners.setdefault(ae, group.name)
            for key, value in group.server.items():
                if key in server_settings and server_settings[key] != value:
                    raise DesiredStateError(
                        f"{where}: server {server.name}: server setting {key} = "
                        f"{server_settings[key]!r} (group {setting_owners[key]}) vs "
                        f"{value!r} (group {group.name})"
                    )
                server_settings.setdefault(key, value)
                setting_owners.setdefault(key, group.name)
        return ServerSpec(tuple(groups), addins, ae_titles, prune, server_settings)


def _merge_addin(a: AddinSpec, b: AddinSpec, where: str) -> AddinSpec:
    if a.state and b.state and a.state != b.state:
        raise DesiredStateError(f"{where}: state {a.state!r} vs {b.state!r}")
    if a.source and b.source and a.source != b.source:
        raise DesiredStateError(f"{where}: source {a.source!r} vs {b.source!r}")
    settings = dict(a.settings)
    for key, value in b.settings.items():
        if key in settings and settings[key] != value:
            raise DesiredStateError(f"{where}: setting {key} = {settings[key]!r} vs {value!r}")
        settings[key] = value
    return AddinSpec(a.name, a.state or b.state, a.source or b.source, settings)


# -- reading the file -------------------------------------------------------------------


def load_desired(path: str | Path) -> DesiredState:
    """Read and validate a desired-state file; raises DesiredStateError."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DesiredStateError(f"cannot read {file}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DesiredStateError(f"{file}: not valid TOML: {exc}") from exc
    return parse_desired(data, file)


def parse_desired(data: Mapping[str, Any], file: Path) -> DesiredState:
    where = str(file)
    base = file.parent.resolve()
    _only(data, {"inventory", "groups"}, where)
    inventory = None
    if "inventory" in data:
        text = _str(data["inventory"], f"{where}: inventory", required=True)
        inventory = Path(_absolute(text, base))
    raw_groups = _table(data.get("groups", {}), f"{where}: groups")
    if not raw_groups:
        raise DesiredStateError(f"{where}: no [groups.NAME] table")
    groups = [
        _group(name, _table(raw, f"{where}: groups.{name}"), f"{where}: groups.{name}", base)
        for name, raw in raw_groups.items()
    ]
    return DesiredState(tuple(groups), inventory, file)


def _group(name: str, raw: Mapping[str, Any], at: str, base: Path) -> GroupSpec:
    _only(raw, {"selector", "addins", "ae_titles", "prune_ae_titles", "server"}, at)
    try:
        selector = Selector.parse(_str(raw.get("selector", ""), f"{at}.selector"))
    except InventoryError as exc:
        raise DesiredStateError(f"{at}.selector: {exc}") from exc
    prune = raw.get("prune_ae_titles", False)
    if not isinstance(prune, bool):
        raise DesiredStateError(f"{at}.prune_ae_titles: must be true or false")
    addins = {
        addin: _addin(addin, _table(spec, f"{at}.addins.{addin}"), f"{at}.addins.{addin}", base)
        for addin, spec in _table(raw.get("addins", {}), f"{at}.addins").items()
    }
    ae_titles = {}
    for ae, spec in _table(raw.get("ae_titles", {}), f"{at}.ae_titles").items():
        entry = _ae_title(ae, _table(spec, f"{at}.ae_titles.{ae}"), f"{at}.ae_titles.{ae}")
        ae_titles[entry.ae_title] = entry
    server = _table(raw.get("server", {}), f"{at}.server")
    for key, value in server.items():
        if isinstance(value, dict):
            raise DesiredStateError(f"{at}.server.{key}: server settings are single values")
    return GroupSpec(name, selector, addins, ae_titles, prune, dict(server))


def _addin(name: str, raw: Mapping[str, Any], at: str, base: Path) -> AddinSpec:
    _only(raw, {"state", "source", "settings"}, at)
    state = raw.get("state")
    if state is not None and state not in ADDIN_STATES:
        raise DesiredStateError(f"{at}.state: must be one of {', '.join(ADDIN_STATES)}")
    source = _str(raw.get("source", ""), f"{at}.source")
    if source and looks_like_path(source):
        source = _absolute(source, base)
        if Path(source).stem != name:
            raise DesiredStateError(
                f"{at}.source: the server names an add-in loaded from {source} "
                f"{Path(source).stem!r}, not {name!r}"
            )
    settings = _table(raw.get("settings", {}), f"{at}.settings")
    if settings and state == "unloaded":
        raise DesiredStateError(f"{at}: settings of an unloaded add-in cannot be applied")
    return AddinSpec(name, state, source, dict(settings))


def _ae_title(ae: str, raw: Mapping[str, Any], at: str) -> AETitleSpec:
    _only(raw, {"host", "port", "description", "absent", "allowed_addresses", "permissions"}, at)
    title = ae.strip()
    if not 1 <= len(title) <= 16 or "\\" in title or not all(32 <= ord(c) < 127 for c in title):
        raise DesiredStateError(f"{at}: {ae!r} is not an AE title (1-16 printable ASCII)")
    absent = raw.get("absent", False)
    if not isinstance(absent, bool):
        raise DesiredStateError(f"{at}.absent: must be true or false")
    if absent:
        if len(raw) > 1:
            raise DesiredStateError(f"{at}: an absent AE title takes no other keys")
        return AETitleSpec(title, absent=True)
    host = _str(raw.get("host"), f"{at}.host", required=True)
    port = raw.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise DesiredStateError(f"{at}.port: must be an integer from 1 to 65535")
    description = raw.get("description")
    if description is not None:
        description = _str(description, f"{at}.description")
    addresses = raw.get("allowed_addresses")
    if addresses is not None:
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise DesiredStateError(f"{at}.allowed_addresses: must be a list of strings")
        addresses = tuple(sorted(set(addresses)))
    return AETitleSpec(
        title,
        host,
        port,
        description,
        allowed_addresses=addresses,
        permissions=_permissions(raw.get("permissions"), f"{at}.permissions"),
    )


def _permissions(raw: Any, where: str) -> tuple[str, ...] | str | None:
    if raw is None or raw == "all":
        return raw
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise DesiredStateError(f'{where}: must be "all" or a list of permission names')
    unknown = sorted(set(raw) - set(PERMISSIONS))
    if unknown:
        raise DesiredStateError(
            f"{where}: {', '.join(unknown)} not a permission ({', '.join(PERMISSIONS)})"
        )
    return tuple(p for p in PERMISSIONS if p in raw)


def looks_like_path(text: str) -> bool:
    """The same rule as ``pacsctl addin load``: a path, not an add-in name."""
    return "/" in text or os.sep in text or text.endswith(".py") or text.startswith((".", "~"))


def _absolute(text: str, base: Path) -> str:
    # normpath, not resolve: the path is opened on the server, whose symlinks may differ.
    path = Path(text).expanduser()
    return os.path.normpath(path if path.is_absolute() else (base / path))


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise DesiredStateError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DesiredStateError(f"{where}: must be a table")
    return value


def _str(value: Any, where: str, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise DesiredStateError(f"{where}: must be {'a non-empty' if required else 'a'} string")
    return value


# -- planning ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One change to one server. ``before`` and ``after`` are JSON-ready; ``before`` is
    None when the value cannot be known until an earlier step ran (settings of an
    add-in that is not loaded yet)."""

    target: str  # "server_settings", "addin", "addin_settings" or "ae_title"
    name: str
    action: str  # load, replace, unload, enable, disable, settings, create, update, delete
    before: Any = None
    after: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "name": self.name,
            "action": self.action,
            "before": self.before,
            "after": self.after,
        }

    def text(self) -> str:
        """One line for people: ``+`` adds, ``-`` removes, ``~`` changes."""
        if self.target == "server_settings":
            fields = ", ".join(
                f"{k} {_show(self.before.get(k))} -> {_show(v)}" for k, v in self.after.items()
            )
            return f"~ server settings: {fields}"
        if self.target == "ae_title":
            if self.action == "create":
                a = self.after
                desc = f" {_quote(a['description'])}" if a.get("description") else ""
                return f"+ ae_title {self.name}: {a['host']}:{a['port']}{desc}"
            if self.action == "delete":
                b = self.before
                return f"- ae_title {self.name} (was {b['host']}:{b['port']})"
            fields = ", ".join(
                f"{k} {_show(self.before[k])} -> {_show(v)}" for k, v in self.after.items()
            )
            return f"~ ae_title {self.name}: {fields}"
        if self.target == "addin_settings":

            def was(key: str) -> str:
                if self.before is None:
                    return "(unknown until loaded)"
                return _show(self.before[key]) if key in self.before else "(unset)"

            fields = ", ".join(f"{k} {was(k)} -> {_show(v)}" for k, v in self.after.items())
            return f"~ addin {self.name} settings: {fields}"
        sign = {"load": "+", "unload": "-"}.get(self.action, "~")
        if self.action == "replace":
            return f"~ addin {self.name}: load from {self.after} (replacing {self.before})"
        return f"{sign} addin {self.name}: {self.action} ({self.before} -> {self.after})"


def _show(value: Any) -> str:
    return _quote(value) if isinstance(value, str) else repr(value)


def _quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def _state(addin: addins_pb2.Addin | None) -> str:
    if addin is None:
        return "ABSENT"
    return addins_pb2.AddinState.Name(addin.state).removeprefix("ADDIN_STATE_")


def _same_source(actual: str, wanted: str) -> bool:
    # The server resolves symlinks (Path.resolve) before naming the source.
    return actual in (f"path:{wanted}", f"path:{os.path.realpath(wanted)}")


def plan(client: Client, spec: ServerSpec) -> list[Step]:
    """The steps that bring one server to ``spec``, from its current state.

    Order: AE titles; then add-ins being unloaded or disabled (which frees the SOP
    classes they route, so an add-in replacing them can be enabled without a
    conflict); then loads, settings and enables.
    """
    steps: list[Step] = []
    if spec.server:
        steps += _plan_server_settings(client, spec)
    if spec.ae_titles or spec.prune_ae_titles:
        steps += _plan_ae_titles(client, spec)
    if not spec.addins:
        return steps
    current = {a.name: a for a in client.addins.list()}
    first: list[Step] = []
    later: list[Step] = []
    for name, want in spec.addins.items():
        have = current.get(name)
        loaded = have is not None and have.state in _LOADED
        state = _state(have)
        if want.wanted == "unloaded":
            if loaded:
                first.append(Step("addin", name, "unload", state, "AVAILABLE"))
            continue
        replace = bool(
            loaded
            and have is not None
            and want.source
            and looks_like_path(want.source)
            and not _same_source(have.source, want.source)
        )
        fresh = replace or not loaded
        if replace:
            assert have is not None
            later.append(Step("addin", name, "replace", have.source, want.source))
        elif not loaded:
            later.append(Step("addin", name, "load", state, "ENABLED"))
        if want.wanted == "disabled":
            if fresh:
                later.append(Step("addin", name, "disable", "ENABLED", "DISABLED"))
            elif state == "ENABLED":
                first.append(Step("addin", name, "disable", state, "DISABLED"))
        if want.settings:
            before = None if fresh else client.addins.get_settings(name)
            differs = {
                k: v for k, v in want.settings.items() if before is None or before.get(k) != v
            }
            if differs:
                shown = None if before is None else {k: before[k] for k in differs if k in before}
                later.append(Step("addin_settings", name, "settings", shown, differs))
        if want.wanted == "enabled" and not fresh and state == "DISABLED":
            later.append(Step("addin", name, "enable", state, "ENABLED"))
    return steps + first + later


def _plan_server_settings(client: Client, spec: ServerSpec) -> list[Step]:
    # The server decides what differs (it normalises "debug" to "DEBUG", 64.0 to 64)
    # and refuses unknown names, bad values and restart-only settings now, so a dry
    # run reports them rather than the apply that follows.
    check = client.server.update_settings(dict(spec.server), validate_only=True)
    if not check.changed:
        return []
    current = client.server.settings().settings
    before = {k: current.get(k) for k in check.changed_fields}
    after = {k: check.settings.get(k) for k in check.changed_fields}
    return [Step("server_settings", "server", "settings", before, after)]


def _plan_ae_titles(client: Client, spec: ServerSpec) -> list[Step]:
    steps: list[Step] = []
    current = {e.ae_title: e for e in client.aetitles.list()}
    for ae, want in spec.ae_titles.items():
        have = current.get(ae)
        if want.absent:
            if have is not None:
                steps.append(Step("ae_title", ae, "delete", _entry(have), None))
            continue
        if have is None:
            after = {
                "host": want.host,
                "port": want.port,
                "description": want.description or "",
                "allowed_addresses": list(want.allowed_addresses or ()),
                "permissions": _listed(want.permissions or "all"),
            }
            steps.append(Step("ae_title", ae, "create", None, after))
            continue
        wanted = {
            "host": want.host,
            "port": want.port,
            "description": want.description,
            "allowed_addresses": _listed(want.allowed_addresses),
            "permissions": _listed(want.permissions),
        }
        actual = _entry(have)
        changes = {k: v for k, v in wanted.items() if v is not None and actual[k] != v}
        if changes:
            before = {k: actual[k] for k in changes}
            steps.append(Step("ae_title", ae, "update", before, changes))
    if spec.prune_ae_titles:
        for ae, have in sorted(current.items()):
            if ae not in spec.ae_titles:
                steps.append(Step("ae_title", ae, "delete", _entry(have), None))
    return steps


def _entry(entry: Any) -> dict[str, Any]:
    names = permission_names(entry)
    return {
        "host": entry.host,
        "port": int(entry.port),
        "description": entry.description,
        # Compared as sets: the order an operator lists addresses in means nothing.
        "allowed_addresses": sorted(entry.allowed_addresses),
        "permissions": "all" if names is None else names,
    }


def _listed(value: tuple[str, ...] | str | None) -> list[str] | str | None:
    """A spec value in the shape ``_entry`` gives (lists, "all"), None when unmanaged."""
    return list(value) if isinstance(value, tuple) else value


def execute(client: Client, step: Step, spec: ServerSpec) -> bool:
    """Run one step; returns whether the server reported a change."""
    if step.target == "server_settings":
        return client.server.update_settings(step.after).changed
    if step.target == "ae_title":
        if step.action == "create":
            a = step.after
            return client.aetitles.create(
                step.name,
                a["host"],
                a["port"],
                a["description"],
                allowed_addresses=a["allowed_addresses"],
                permissions=a["permissions"],
            ).changed
        if step.action == "update":
            return client.aetitles.update(step.name, **step.after).changed
        return client.aetitles.delete(step.name)
    if step.target == "addin_settings":
        return client.addins.update_settings(step.name, step.after).changed
    want = spec.addins[step.name]
    if step.action == "load":
        return client.addins.load(want.source or step.name).changed
    if step.action == "replace":
        client.addins.unload(step.name)
        client.addins.load(want.source)
        return True
    if step.action == "unload":
        return client.addins.unload(step.name).changed
    if step.action == "enable":
        return client.addins.enable(step.name).changed
    if step.action == "disable":
        return client.addins.disable(step.name).changed
    raise ValueError(f"unknown step {step.action!r}")


# -- applying to a fleet ------------------------------------------------------------------


@dataclass
class ServerApply:
    """What apply (or a dry run) did on one server: the planned ``steps``, for each
    whether it ``changed`` something (None: not run), and the ``error`` that stopped
    the server's remaining steps, if any."""

    server: FleetServer
    spec: ServerSpec
    steps: list[Step] = field(default_factory=list)
    changed: list[bool | None] = field(default_factory=list)
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def unreachable(self) -> bool:
        return isinstance(self.error, PacsdError) and self.error.unreachable

    @property
    def applied(self) -> int:
        """Steps that changed something."""
        return sum(1 for c in self.changed if c)

    def to_dict(self, dry_run: bool) -> dict[str, Any]:
        changes = []
        for index, step in enumerate(self.steps):
            item = step.to_dict()
            if not dry_run:
                item["changed"] = self.changed[index] if index < len(self.changed) else None
            changes.append(item)
        return {
            "server": self.server.name,
            "endpoint": self.server.endpoint,
            "groups": list(self.spec.groups),
            "ok": self.ok,
            "in_sync": self.ok and not self.steps,
            "changes": changes,
            "error": error_to_dict(self.error) if self.error is not None else None,
        }


def apply(
    fleet: Fleet,
    desired: DesiredState,
    *,
    dry_run: bool = False,
    on_server: Callable[[ServerApply], None] | None = None,
) -> list[ServerApply]:
    """Plan every server of ``fleet`` against ``desired`` and, unless ``dry_run``, run
    the steps. Servers are handled concurrently; on each, steps run in order and the
    first error stops that server (the others go on). Never raises for a server's
    failure; raises DesiredStateError (before contacting anyone) when groups conflict.
    ``on_server`` is called as each server finishes (in completion order).
    """
    specs = {s.name: desired.for_server(s) for s in fleet.servers}

    def one(server: FleetServer) -> ServerApply:
        outcome = ServerApply(server, specs[server.name])
        if not outcome.spec.groups:
            return outcome  # no group covers it: nothing to say, nothing to ask
        try:
            client = fleet.client(server.name)
            outcome.steps = plan(client, outcome.spec)
            if not dry_run:
                for step in outcome.steps:
                    outcome.changed.append(execute(client, step, outcome.spec))
        except Exception as exc:  # the server's result, not the fleet's
            outcome.error = exc
        if on_server is not None:
            on_server(outcome)
        return outcome

    return [
        r.value
        if r.value is not None
        else ServerApply(r.server, specs[r.server.name], error=r.error)
        for r in fleet.map_servers(one)
    ]
