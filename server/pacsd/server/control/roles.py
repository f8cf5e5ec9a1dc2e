"""Who may call what on the control plane: the roles and the role each RPC needs.

The table is explicit, one line per RPC, so a reviewer sees every decision, and it
fails closed: a method that is not listed (a new RPC, or a service this code has
never heard of) needs ``admin``. ``tests/unit/test_control_roles.py`` walks every
method of every service in the generated ``pacsd.admin.v1`` descriptors and fails
when one is missing here, so the default is a safety net, not a policy.

No gRPC import: the settings model and the ``pacsd token`` command use the role names
too, and neither should pull in the control plane.
"""

from __future__ import annotations

import enum

_PACKAGE = "pacsd.admin.v1"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


class Role(enum.IntEnum):
    """Ordered: a role may do everything the roles below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The lowercase name used in settings, tokens and error metadata."""
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Role:
        try:
            return cls[label.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {label!r} (viewer, operator or admin)") from None


ROLE_NAMES = tuple(r.label for r in Role)

_V, _O, _A = Role.VIEWER, Role.OPERATOR, Role.ADMIN

#: Service -> method -> the least role that may call it.
METHOD_ROLES: dict[str, dict[str, Role]] = {
    "ServerService": {
        "GetServer": _V,
        # Secrets are masked in the answer, like every other read.
        "GetSettings": _V,
        "StartServer": _O,
        "StopServer": _O,
        "PauseServer": _O,
        "ResumeServer": _O,
        "Shutdown": _O,
        "UpdateSettings": _A,
    },
    "AddinService": {
        "ListAddins": _V,
        "GetAddin": _V,
        "GetAddinSettings": _V,
        # Add-ins run arbitrary code inside the server: only admins change them.
        "LoadAddin": _A,
        "UnloadAddin": _A,
        "ReloadAddin": _A,
        "EnableAddin": _A,
        "DisableAddin": _A,
        "UpdateAddinSettings": _A,
        "InvokeCommand": _A,
    },
    "AETitleService": {
        "ListAETitles": _V,
        "GetAETitle": _V,
        # Sends a C-ECHO and changes nothing.
        "EchoAETitle": _V,
        "CreateAETitle": _O,
        "UpdateAETitle": _O,
        "DeleteAETitle": _O,
    },
    "StorageService": {
        "GetStorageStats": _V,
        "ListStudies": _V,
        # Deleting images cannot be undone.
        "DeleteStudy": _A,
        "DeleteSeries": _A,
        "DeleteInstance": _A,
    },
    "LogService": {
        "StreamLogs": _V,
        "GetLogLevels": _V,
        "SetLogLevel": _A,
    },
    "AssociationService": {
        "ListAssociations": _V,
        "GetAssociation": _V,
        "WatchEvents": _V,
        "AbortAssociation": _O,
    },
    "SecurityService": {
        "GetCertificates": _V,
        "ReloadCertificates": _A,
    },
}


def required_role(method: str) -> Role | None:
    """The role a full gRPC method name (``/package.Service/Method``) needs.

    None means no credentials at all: only the health service, which load balancers
    and Kubernetes probes call without any. Reflection describes the API, which is a
    read. Everything else unknown is admin-only.
    """
    service, _, name = method.removeprefix("/").partition("/")
    if service == HEALTH_SERVICE:
        return None
    if service in REFLECTION_SERVICES:
        return Role.VIEWER
    package, _, short = service.rpartition(".")
    if package != _PACKAGE:
        return Role.ADMIN
    return METHOD_ROLES.get(short, {}).get(name, Role.ADMIN)
