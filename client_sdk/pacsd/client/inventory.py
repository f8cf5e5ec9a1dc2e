"""Fleet inventories (``fleet.toml``) and label selectors.

An inventory names the servers of a fleet, where their control planes listen, the
labels they are picked by (site, modality group, tenant...) and which credentials
profile each uses. It is the one file an operator keeps in version control and points
every tool at, so it is validated strictly: an unknown key, a duplicate name or
endpoint, or a reference to a missing credentials profile is an error naming the exact
place, never silently ignored.

Selectors follow Kubernetes' equality- and set-based syntax, which the people who run
fleets already know: ``site=north,role!=test``, ``tier in (a, b)``, ``!canary``.
Every server also carries the implicit label ``name``, so ``name=pacs3`` picks one.

Reading TOML needs only the standard library (``tomllib``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsd.client.credentials import Credentials, CredentialsError

__all__ = [
    "DEFAULT_PARALLELISM",
    "FleetServer",
    "Inventory",
    "InventoryError",
    "Requirement",
    "Selector",
    "check_credentials",
    "load_inventory",
    "parse_endpoints",
]

#: Calls in flight at once unless the inventory or the caller says otherwise: enough to
#: hide network latency across a large fleet, few enough not to swamp the client host.
DEFAULT_PARALLELISM = 32

#: The label every server has implicitly; inventories may not define it themselves.
NAME_LABEL = "name"

_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_./-]*[A-Za-z0-9])?$")
#: Label values: what a selector can spell without quoting (no spaces, commas,
#: parentheses, "=" or "!").
_VALUE = re.compile(r"^[A-Za-z0-9_./:@+-]*$")
_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]*$")


class InventoryError(ValueError):
    """An inventory, selector or endpoint list that cannot be used; the message names
    the file and the key."""


# -- servers --------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetServer:
    """One server of a fleet: a unique ``name``, its control-plane ``endpoint``
    (HOST:PORT), its ``labels`` and the ``credentials`` to reach it with (None:
    plaintext, no token)."""

    name: str
    endpoint: str
    labels: Mapping[str, str] = field(default_factory=dict)
    credentials: Credentials | None = None

    def all_labels(self) -> dict[str, str]:
        """The labels selectors see: the server's own plus the implicit ``name``."""
        return {**self.labels, NAME_LABEL: self.name}

    def describe(self) -> dict[str, Any]:
        """The JSON shape tools print for a server (no secrets: only the profile name)."""
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "labels": dict(sorted(self.labels.items())),
            "credentials": self.credentials.name if self.credentials else "",
        }


def parse_endpoints(endpoints: str | Iterable[str]) -> list[FleetServer]:
    """``"a:1,b:2"`` (or a list) as servers named after their endpoints, no labels."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    servers: list[FleetServer] = []
    seen: set[str] = set()
    for item in items:
        endpoint = item.strip()
        if not endpoint:
            raise InventoryError(f"empty endpoint in {endpoints!r}")
        if endpoint in seen:
            raise InventoryError(f"endpoint {endpoint} is listed twice")
        seen.add(endpoint)
        servers.append(FleetServer(name=endpoint, endpoint=endpoint))
    if not servers:
        raise InventoryError("no endpoints given")
    return servers


# -- selectors ------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One clause of a selector: ``key=value``, ``key!=value``, ``key in (a,b)``,
    ``key notin (a,b)``, ``key`` (has the label) or ``!key`` (has not)."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        # "!=" and "notin" match servers without the label too, as in Kubernetes.
        return value is None or value not in self.values

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!exists":
            return f"!{self.key}"
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(self.values)})"


_SET = re.compile(r"^(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQ = re.compile(r"^(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)$")


@dataclass(frozen=True)
class Selector:
    """Clauses that must all hold; the empty selector matches every server."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | Selector | None) -> Selector:
        """Parse ``site=north,role in (ct, mr),!canary``; raises InventoryError."""
        if text is None:
            return cls()
        if isinstance(text, Selector):
            return text
        requirements = [_requirement(clause, text) for clause in _clauses(text)]
        return cls(tuple(requirements))

    def matches(self, server: FleetServer | Mapping[str, str]) -> bool:
        labels = server.all_labels() if isinstance(server, FleetServer) else server
        return all(r.matches(labels) for r in self.requirements)

    def __and__(self, other: Selector) -> Selector:
        return Selector(self.requirements + other.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _clauses(text: str) -> list[str]:
    """Split at commas that are not inside parentheses."""
    clauses: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise InventoryError(f"selector {text!r}: unbalanced ')'")
        if char == "," and depth == 0:
            clauses.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise InventoryError(f"selector {text!r}: unbalanced '('")
    clauses.append(current)
    stripped = [c.strip() for c in clauses]
    if text.strip() == "":
        return []
    if any(not c for c in stripped):
        raise InventoryError(f"selector {text!r}: empty clause")
    return stripped


def _requirement(clause: str, text: str) -> Requirement:
    def key_ok(key: str) -> str:
        if not _KEY.match(key):
            raise InventoryError(f"selector {text!r}: {key!r} is not a label key")
        return key

    match = _SET.match(clause)
    if match:
        values = tuple(v.strip() for v in match["values"].split(","))
        if not all(values) or not all(_VALUE.match(v) for v in values):
            raise InventoryError(f"selector {text!r}: bad value list in {clause!r}")
        return Requirement(key_ok(match["key"]), match["op"], values)
    match = _EQ.match(clause)
    if match:
        op = "=" if match["op"] == "==" else match["op"]
        return Requirement(key_ok(match["key"]), op, (match["value"],))
    if clause.startswith("!"):
        return Requirement(key_ok(clause[1:].strip()), "!exists")
    if _KEY.match(clause):
        return Requirement(clause, "exists")
    raise InventoryError(
        f"selector {text!r}: cannot read {clause!r} "
        "(use key=value, key!=value, key in (a,b), key notin (a,b), key or !key)"
    )


# -- the inventory file ------------------------------------------------------------------


@dataclass(frozen=True)
class Inventory:
    """A parsed ``fleet.toml``: servers in file order, plus the defaults it sets."""

    servers: tuple[FleetServer, ...]
    timeout: float | None = None
    parallelism: int | None = None
    path: Path | None = None

    def select(self, selector: str | Selector | None) -> list[FleetServer]:
        """The servers the selector matches, in file order."""
        chosen = Selector.parse(selector)
        return [s for s in self.servers if chosen.matches(s)]


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate ``fleet.toml``; raises InventoryError naming file and key.

    Credential files are resolved against the inventory's folder but are not opened
    here, and token variables are not read: only the servers a command actually
    selects need their credentials (see ``Credentials.check``).
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {file}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{file}: not valid TOML: {exc}") from exc
    return parse_inventory(data, file)


def parse_inventory(data: Mapping[str, Any], file: Path) -> Inventory:
    """Validate an already-parsed inventory (``load_inventory`` without the file)."""
    where = str(file)
    _only(data, {"defaults", "servers", "credentials"}, where)
    base = file.parent.resolve()

    profiles: dict[str, Credentials] = {}
    raw_profiles = _table(data.get("credentials", {}), f"{where}: credentials")
    for name, raw in raw_profiles.items():
        at = f"{where}: credentials.{name}"
        table = _table(raw, at)
        _only(table, {"token_env", "cacert", "cert", "key"}, at)
        try:
            profiles[name] = Credentials(
                name=name,
                token_env=_string(table.get("token_env", ""), f"{at}.token_env"),
                cacert=_file(table.get("cacert"), base, f"{at}.cacert"),
                cert=_file(table.get("cert"), base, f"{at}.cert"),
                key=_file(table.get("key"), base, f"{at}.key"),
            )
        except CredentialsError as exc:
            raise InventoryError(f"{at}: {exc}") from exc

    defaults = _table(data.get("defaults", {}), f"{where}: defaults")
    _only(defaults, {"timeout", "parallelism", "credentials", "labels"}, f"{where}: defaults")
    timeout = defaults.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise InventoryError(f"{where}: defaults.timeout: must be a number of seconds above 0")
    parallelism = defaults.get("parallelism")
    if parallelism is not None and (
        isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1
    ):
        raise InventoryError(f"{where}: defaults.parallelism: must be an integer of 1 or more")
    default_profile = _string(defaults.get("credentials", ""), f"{where}: defaults.credentials")
    default_labels = _labels(defaults.get("labels", {}), f"{where}: defaults.labels")

    raw_servers = data.get("servers", [])
    if not isinstance(raw_servers, list) or not all(isinstance(s, dict) for s in raw_servers):
        raise InventoryError(f"{where}: servers: must be an array of tables ([[servers]])")
    servers: list[FleetServer] = []
    names: set[str] = set()
    endpoints: set[str] = set()
    for index, raw in enumerate(raw_servers):
        at = f"{where}: servers[{index}]"
        _only(raw, {"name", "endpoint", "labels", "credentials"}, at)
        endpoint = _string(raw.get("endpoint"), f"{at}.endpoint", required=True).strip()
        name = _string(raw.get("name", endpoint), f"{at}.name", required=True).strip()
        if not _SERVER_NAME.match(name):
            raise InventoryError(
                f"{at}.name: {name!r} must start with a letter or digit and hold no spaces "
                "or commas"
            )
        if name in names:
            raise InventoryError(f"{at}.name: {name!r} is used by another server")
        if endpoint in endpoints:
            raise InventoryError(f"{at}.endpoint: {endpoint} is listed for another server")
        names.add(name)
        endpoints.add(endpoint)
        labels = {**default_labels, **_labels(raw.get("labels", {}), f"{at}.labels")}
        profile_name = _string(raw.get("credentials", default_profile), f"{at}.credentials")
        credentials = None
        if profile_name:
            credentials = profiles.get(profile_name)
            if credentials is None:
                known = ", ".join(sorted(profiles)) or "none defined"
                raise InventoryError(
                    f"{at}.credentials: no [credentials.{profile_name}] table ({known})"
                )
        servers.append(FleetServer(name, endpoint, labels, credentials))
    if not servers:
        raise InventoryError(f"{where}: no [[servers]] listed")
    return Inventory(
        tuple(servers),
        timeout=float(timeout) if timeout is not None else None,
        parallelism=parallelism,
        path=file,
    )


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InventoryError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InventoryError(f"{where}: must be a table")
    return value


def _string(value: Any, where: str, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        wanted = "a non-empty string" if required else "a string"
        raise InventoryError(f"{where}: must be {wanted}")
    return value


def _file(value: Any, base: Path, where: str) -> Path | None:
    if value is None:
        return None
    text = _string(value, where, required=True)
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _labels(value: Any, where: str) -> dict[str, str]:
    table = _table(value, where)
    labels: dict[str, str] = {}
    for key, item in table.items():
        if key == NAME_LABEL:
            raise InventoryError(f"{where}: {NAME_LABEL!r} is implicit (the server's name)")
        if not _KEY.match(key):
            raise InventoryError(f"{where}: {key!r} is not a label key (letters, digits, -_./)")
        if not isinstance(item, str) or not _VALUE.match(item):
            raise InventoryError(f"{where}.{key}: must be a string of letters, digits and -_./:@+")
        labels[key] = item
    return labels


def check_credentials(servers: Sequence[FleetServer]) -> None:
    """Open every credentials profile the given servers use (files, token variables);
    raises InventoryError for the first that cannot be used."""
    checked: set[str] = set()
    for server in servers:
        creds = server.credentials
        if creds is None:
            continue
        try:
            if creds.name not in checked:
                creds.check()
                checked.add(creds.name)
            creds.call_metadata(server.endpoint)  # plaintext tokens depend on the endpoint
        except CredentialsError as exc:
            raise InventoryError(f"server {server.name}: {exc}") from exc
