"""The control plane's role table and the credential checks behind the auth interceptor.

The first test walks the generated descriptors, so an RPC added to any proto without a
line in ``roles.METHOD_ROLES`` fails here instead of silently becoming admin-only.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import grpc
import pacsd.admin.v1
import pytest
from pacsd.server.config import ControlToken
from pacsd.server.control.auth import Authenticator
from pacsd.server.control.errors import ControlError
from pacsd.server.control.principal import Principal
from pacsd.server.control.roles import METHOD_ROLES, Role, required_role
from pacsd.server.control.tokens import TOKEN_PREFIX, hash_token, new_token

_READ_PREFIXES = ("Get", "List", "Watch", "Stream")


def _methods() -> Iterator[tuple[str, str, str]]:
    """(service short name, method name, full gRPC path) of every generated RPC."""
    for module_info in pkgutil.iter_modules(pacsd.admin.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"pacsd.admin.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield service.name, method.name, f"/{service.full_name}/{method.name}"


ALL_METHODS = sorted(_methods())


def test_the_descriptors_hold_the_known_services() -> None:
    services = {s for s, _, _ in ALL_METHODS}
    assert {"ServerService", "AddinService", "StorageService", "LogService"} <= services


@pytest.mark.parametrize(("service", "method", "path"), ALL_METHODS)
def test_every_rpc_has_an_explicit_role(service: str, method: str, path: str) -> None:
    assert method in METHOD_ROLES.get(service, {}), (
        f"{service}.{method} has no line in pacsd.server.control.roles.METHOD_ROLES; "
        "decide which role may call it"
    )
    role = METHOD_ROLES[service][method]
    assert required_role(path) is role
    if method.startswith(_READ_PREFIXES):
        assert role is Role.VIEWER, f"{method} reads; viewers may call every read"


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("/pacsd.admin.v1.ServerService/StopServer", Role.OPERATOR),
        ("/pacsd.admin.v1.ServerService/Shutdown", Role.OPERATOR),
        ("/pacsd.admin.v1.ServerService/UpdateSettings", Role.ADMIN),
        ("/pacsd.admin.v1.AETitleService/EchoAETitle", Role.VIEWER),
        ("/pacsd.admin.v1.AETitleService/CreateAETitle", Role.OPERATOR),
        ("/pacsd.admin.v1.AssociationService/AbortAssociation", Role.OPERATOR),
        ("/pacsd.admin.v1.AddinService/LoadAddin", Role.ADMIN),
        ("/pacsd.admin.v1.AddinService/InvokeCommand", Role.ADMIN),
        ("/pacsd.admin.v1.StorageService/DeleteStudy", Role.ADMIN),
        ("/pacsd.admin.v1.LogService/SetLogLevel", Role.ADMIN),
        ("/pacsd.admin.v1.SecurityService/ReloadCertificates", Role.ADMIN),
        # Fail closed: what the table does not know is admin-only.
        ("/pacsd.admin.v1.ServerService/SomethingNew", Role.ADMIN),
        ("/pacsd.admin.v1.NewService/GetThing", Role.ADMIN),
        ("/other.v1.Service/Get", Role.ADMIN),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Role.VIEWER),
        ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Role.VIEWER),
    ],
)
def test_required_roles(path: str, role: Role) -> None:
    assert required_role(path) is role


def test_health_needs_no_credentials() -> None:
    assert required_role("/grpc.health.v1.Health/Check") is None
    assert required_role("/grpc.health.v1.Health/Watch") is None


def test_roles_are_ordered_and_parsed() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.parse(" Operator ") is Role.OPERATOR
    with pytest.raises(ValueError, match="unknown role 'root'"):
        Role.parse("root")


def test_tokens_are_random_prefixed_and_stored_as_sha256() -> None:
    first, second = new_token(), new_token()
    assert first != second and first.startswith(TOKEN_PREFIX)
    assert len(first) > len(TOKEN_PREFIX) + 40
    digest = hash_token(first)
    assert len(digest) == 64 and first not in digest


# -- Authenticator: the checks the interceptor runs on every call -------------------------

VIEWER, ADMIN = new_token(), new_token()


def _authenticator(**kw: object) -> Authenticator:
    tokens = [
        ControlToken(name="view", role="viewer", sha256=hash_token(VIEWER)),
        ControlToken(name="boss", role="admin", sha256=hash_token(ADMIN)),
    ]
    return Authenticator(tokens, **kw)  # type: ignore[arg-type]


def _reason(exc: pytest.ExceptionInfo[ControlError]) -> tuple[grpc.StatusCode, str]:
    return exc.value.code, exc.value.reason


def test_a_known_token_names_its_principal() -> None:
    auth = _authenticator()
    assert auth.enabled
    found = auth.authenticate([("authorization", f"Bearer {ADMIN}")], {})
    assert found == Principal("boss", Role.ADMIN, "token")
    assert str(found) == "token:boss"
    # The scheme is case-insensitive (RFC 7235) and surrounding spaces are ignored.
    assert auth.authenticate([("authorization", f"bearer  {VIEWER} ")], {}).name == "view"


def test_missing_wrong_and_malformed_credentials() -> None:
    auth = _authenticator()
    with pytest.raises(ControlError) as missing:
        auth.authenticate([("user-agent", "x")], {})
    assert _reason(missing) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    with pytest.raises(ControlError) as wrong:
        auth.authenticate([("authorization", f"Bearer {VIEWER}x")], {})
    assert _reason(wrong) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    assert VIEWER not in wrong.value.message
    for header in ("Basic abc", "Bearer", "Bearer   ", VIEWER):
        with pytest.raises(ControlError) as malformed:
            auth.authenticate([("authorization", header)], {})
        assert _reason(malformed) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
        assert VIEWER not in malformed.value.message


def test_insufficient_role_names_the_required_one() -> None:
    auth = _authenticator()
    viewer = auth.authenticate([("authorization", f"Bearer {VIEWER}")], {})
    auth.authorize(viewer, "/pacsd.admin.v1.ServerService/GetServer", Role.VIEWER)
    with pytest.raises(ControlError) as denied:
        auth.authorize(viewer, "/pacsd.admin.v1.ServerService/StopServer", Role.OPERATOR)
    assert _reason(denied) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert denied.value.metadata == {
        "required_role": "operator",
        "role": "viewer",
        "principal": "token:view",
    }
    assert "ServerService.StopServer" in denied.value.message
    admin = auth.authenticate([("authorization", f"Bearer {ADMIN}")], {})
    auth.authorize(admin, "/pacsd.admin.v1.ServerService/StopServer", Role.OPERATOR)


TLS_PEER = {"transport_security_type": [b"ssl"], "x509_common_name": [b"ops-host"]}


def test_client_certificate_common_name_maps_to_a_role() -> None:
    auth = _authenticator(client_roles={"ops-host": "operator"}, client_certs=True)
    assert auth.authenticate([], TLS_PEER) == Principal("ops-host", Role.OPERATOR, "certificate")
    # A token, when sent, decides, even over a good certificate.
    assert auth.authenticate([("authorization", f"Bearer {VIEWER}")], TLS_PEER).name == "view"
    with pytest.raises(ControlError) as wrong:
        auth.authenticate([("authorization", "Bearer nope")], TLS_PEER)
    assert _reason(wrong) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    unmapped = {**TLS_PEER, "x509_common_name": [b"stranger"]}
    with pytest.raises(ControlError) as no_role:
        auth.authenticate([], unmapped)
    assert _reason(no_role) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert no_role.value.metadata["principal"] == "certificate:stranger"


def test_certificates_count_only_when_the_server_requires_them() -> None:
    # Without required client certificates gRPC never verifies one: its CN is no proof.
    auth = _authenticator(client_roles={"ops-host": "operator"}, client_certs=False)
    with pytest.raises(ControlError) as exc:
        auth.authenticate([], TLS_PEER)
    assert _reason(exc) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    plaintext = {"transport_security_type": [b"insecure"], "x509_common_name": [b"ops-host"]}
    certs = _authenticator(client_roles={"ops-host": "operator"}, client_certs=True)
    with pytest.raises(ControlError):
        certs.authenticate([], plaintext)


def test_without_tokens_or_client_certificates_nothing_is_enforced() -> None:
    assert not Authenticator().enabled
    assert Authenticator(client_certs=True).enabled
