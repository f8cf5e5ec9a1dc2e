"""fleet.toml, label selectors and credentials references: parsing and validation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pacsd.client import Credentials, CredentialsError, Fleet, InventoryError, Selector
from pacsd.client.credentials import endpoint_host
from pacsd.client.inventory import FleetServer, load_inventory, parse_endpoints

INVENTORY = textwrap.dedent(
    """
    [defaults]
    timeout = 3.5
    parallelism = 4
    labels = { env = "prod" }

    [[servers]]
    name = "ct-north"
    endpoint = "127.0.0.1:50051"
    labels = { site = "north", role = "ct" }
    credentials = "site-a"

    [[servers]]
    name = "mr-north"
    endpoint = "127.0.0.1:50052"
    labels = { site = "north", role = "mr", env = "test" }

    [[servers]]
    endpoint = "127.0.0.1:50053"
    labels = { site = "south", role = "ct", canary = "yes" }

    [credentials.site-a]
    token_env = "PACSCTL_TOKEN_SITE_A"
    cacert = "certs/ca.pem"
    cert = "certs/client.pem"
    key = "/abs/client.key"
    """
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_inventory_is_read_with_defaults_labels_and_credentials(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, INVENTORY))
    assert [s.name for s in inv.servers] == ["ct-north", "mr-north", "127.0.0.1:50053"]
    assert inv.timeout == 3.5
    assert inv.parallelism == 4
    ct, mr, south = inv.servers
    assert dict(ct.labels) == {"env": "prod", "site": "north", "role": "ct"}
    assert mr.labels["env"] == "test"  # a server's own label beats the default
    assert south.endpoint == "127.0.0.1:50053"
    creds = ct.credentials
    assert creds is not None and creds.name == "site-a"
    assert creds.token_env == "PACSCTL_TOKEN_SITE_A"
    # Relative paths are taken from the inventory's folder, not the working directory.
    assert creds.cacert == tmp_path.resolve() / "certs" / "ca.pem"
    assert creds.key == Path("/abs/client.key")
    assert mr.credentials is None
    assert ct.describe()["credentials"] == "site-a"  # the profile name, never a secret


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", ["ct-north", "mr-north", "127.0.0.1:50053"]),
        ("site=north", ["ct-north", "mr-north"]),
        ("site==north,role=ct", ["ct-north"]),
        ("role!=ct", ["mr-north"]),
        ("site in (south, east)", ["127.0.0.1:50053"]),
        ("role notin (mr),site=north", ["ct-north"]),
        ("canary", ["127.0.0.1:50053"]),
        ("!canary", ["ct-north", "mr-north"]),
        ("name=mr-north", ["mr-north"]),
        ("env=prod", ["ct-north", "127.0.0.1:50053"]),
        ("site=west", []),
    ],
)
def test_selectors(tmp_path: Path, selector: str, expected: list[str]) -> None:
    inv = load_inventory(write(tmp_path, INVENTORY))
    assert [s.name for s in inv.select(selector)] == expected


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("site=north,", "empty clause"),
        ("site in (a,b", "unbalanced"),
        ("site in (a,b))", "unbalanced"),
        ("site in ()", "bad value list"),
        ("=north", "cannot read"),
        ("si te=x", "cannot read"),
        ("-site=x", "not a label key"),
    ],
)
def test_bad_selectors_are_refused(selector: str, message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        Selector.parse(selector)


def test_selector_round_trips_as_text() -> None:
    text = "site=north,role!=mr,tier in (a,b),!canary,gpu"
    assert str(Selector.parse(text)) == text
    assert Selector.parse("site=a") & Selector.parse("role=b") == Selector.parse("site=a,role=b")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[servers]]\nendpoint = "a:1"\nport = 2\n', r"unknown key\(s\) port"),
        ("[[servers]]\nname = 'x'\n", "endpoint: must be a non-empty string"),
        ('[[servers]]\nendpoint = "a:1"\n[[servers]]\nendpoint = "a:1"\n', "another server"),
        (
            '[[servers]]\nname = "x"\nendpoint = "a:1"\n'
            '[[servers]]\nname = "x"\nendpoint = "b:1"\n',
            "is used by another server",
        ),
        ('[[servers]]\nname = "bad name"\nendpoint = "a:1"\n', "no spaces"),
        ('[[servers]]\nendpoint = "a:1"\ncredentials = "nope"\n', r"no \[credentials.nope\]"),
        ('[[servers]]\nendpoint = "a:1"\nlabels = { name = "x" }\n', "implicit"),
        ('[[servers]]\nendpoint = "a:1"\nlabels = { site = "a b" }\n', "must be a string of"),
        ('[[servers]]\nendpoint = "a:1"\nlabels = { site = 3 }\n', "must be a string of"),
        ("[credentials.x]\ncert = 'c.pem'\n[[servers]]\nendpoint = 'a:1'\n", "together"),
        ("[credentials.x]\npassword = 'p'\n[[servers]]\nendpoint = 'a:1'\n", "password"),
        ("[defaults]\ntimeout = 0\n[[servers]]\nendpoint = 'a:1'\n", "defaults.timeout"),
        ("[defaults]\nparallelism = 0\n[[servers]]\nendpoint = 'a:1'\n", "parallelism"),
        ("", r"no \[\[servers\]\]"),
        ("servers = 3\n", "array of tables"),
        ("[[servers]\n", "not valid TOML"),
    ],
)
def test_bad_inventories_name_the_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(InventoryError, match=message) as info:
        load_inventory(write(tmp_path, body))
    assert "fleet.toml" in str(info.value)


def test_missing_inventory_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read inventory"):
        load_inventory(tmp_path / "nope.toml")


def test_endpoint_lists() -> None:
    servers = parse_endpoints(" a:1, b:2 ")
    assert [(s.name, s.endpoint) for s in servers] == [("a:1", "a:1"), ("b:2", "b:2")]
    for bad in ("", "a:1,,b:2", "a:1,a:1"):
        with pytest.raises(InventoryError):
            parse_endpoints(bad)


def test_credentials_are_checked_only_for_the_servers_a_fleet_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PACSCTL_TOKEN_SITE_A", raising=False)
    inventory = write(tmp_path, INVENTORY)
    # mr-north has no credentials: selecting only it needs neither token nor files.
    with Fleet.from_inventory(inventory, selector="role=mr") as fleet:
        assert [s.name for s in fleet] == ["mr-north"]
        assert fleet.timeout == 3.5 and fleet.parallelism == 4
    # ct-north's certificate files do not exist: refused before any call.
    with pytest.raises(InventoryError, match=r"server ct-north: .*cacert .* is not a file"):
        Fleet.from_inventory(inventory, selector="name=ct-north")


def test_token_needs_its_variable_and_tls_beyond_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = Credentials(name="site-a", token_env="PACSCTL_TOKEN_SITE_A")
    monkeypatch.delenv("PACSCTL_TOKEN_SITE_A", raising=False)
    with pytest.raises(CredentialsError, match="PACSCTL_TOKEN_SITE_A is not set"):
        creds.call_metadata("127.0.0.1:50051")
    monkeypatch.setenv("PACSCTL_TOKEN_SITE_A", "s3cret")
    assert creds.call_metadata("127.0.0.1:50051") == (("authorization", "Bearer s3cret"),)
    assert creds.call_metadata("localhost:50051") == (("authorization", "Bearer s3cret"),)
    assert creds.call_metadata("[::1]:50051") == (("authorization", "Bearer s3cret"),)
    with pytest.raises(CredentialsError, match="plaintext"):
        creds.call_metadata("10.1.2.3:50051")
    ca = tmp_path / "ca.pem"
    ca.write_text("not used before a call")
    with_tls = Credentials(name="tls", token_env="PACSCTL_TOKEN_SITE_A", cacert=ca)
    assert with_tls.call_metadata("10.1.2.3:50051") == (("authorization", "Bearer s3cret"),)
    assert Credentials(name="none").call_metadata("10.1.2.3:50051") is None
    with pytest.raises(CredentialsError, match="together"):
        Credentials(name="half", cert=ca)


def test_endpoint_host() -> None:
    assert endpoint_host("127.0.0.1:50051") == "127.0.0.1"
    assert endpoint_host("[::1]:50051") == "::1"
    assert endpoint_host("pacs.example.org:50051") == "pacs.example.org"
    assert endpoint_host("dns:///pacs.example.org:50051") == "pacs.example.org"


def test_fleet_construction_checks_its_arguments() -> None:
    with pytest.raises(InventoryError, match="used twice"):
        Fleet([FleetServer("a", "h:1"), FleetServer("a", "h:2")])
    with pytest.raises(ValueError, match="timeout"):
        Fleet(["h:1"], timeout=0)
    with pytest.raises(ValueError, match="parallelism"):
        Fleet(["h:1"], parallelism=0)
    with Fleet(["h:1", FleetServer("b", "h:2", {"x": "y"})]) as fleet:
        assert [s.name for s in fleet] == ["h:1", "b"]
        assert fleet["b"].labels == {"x": "y"}
        with pytest.raises(KeyError):
            fleet["nope"]
