"""pacsd.client must work with nothing but grpcio and protobuf.

A fresh interpreter blocks every heavier dependency and the server packages before
importing the SDK, then drives a real server, so an accidental import anywhere in the
SDK (even a transitive one) fails here rather than on a user's slim install.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import PacsdProcess

BLOCKED = (
    "pynetdicom",
    "pydicom",
    "pydantic",
    "click",
    "google.rpc",
    "grpc_status",
    "grpc_health",
    "grpc_reflection",
    "pacsd.server",
    "pacsd.addin",
)

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import json
    import socket
    import sys

    BLOCKED = tuple(sys.argv[3].split(","))


    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"blocked for this test: {name}")
            return None


    already = [m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)]
    sys.meta_path.insert(0, Blocker())
    try:
        import click  # noqa: F401
        blocker_works = False
    except ImportError:
        blocker_works = True

    import pacsd.client
    from pacsd.client import Client, FailedPrecondition, ServerUnavailable, message_to_dict

    try:
        import pacsd.client.cli.main  # noqa: F401
        cli_blocked = False
    except ImportError:
        cli_blocked = True

    out = {"already": already, "blocker_works": blocker_works, "cli_blocked": cli_blocked}
    with Client(sys.argv[1], timeout=10) as client:
        server = client.server.get()
        out["state"] = message_to_dict(server)["state"]
        out["health"] = client.health("pacsd.dicom")
        out["stop_changed"] = client.server.stop(grace_period=0).changed
        try:
            client.server.resume()
        except FailedPrecondition as exc:
            out["resume_error"] = [type(exc).__name__, exc.code.name, exc.reason, exc.message]
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", int(sys.argv[2])))
            squatter.listen(1)
            try:
                client.server.start()
            except ServerUnavailable as exc:
                out["start_error"] = [exc.code.name, exc.reason, exc.unreachable]
    out["loaded"] = sorted(
        m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)
    )
    print(json.dumps(out))
    """
)


def test_sdk_needs_only_grpcio_and_protobuf(pacsd: PacsdProcess) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            pacsd.endpoint,
            str(pacsd.dicom_port),
            ",".join(BLOCKED),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)

    assert out["already"] == []  # nothing slipped in before the blocker was installed
    assert out["blocker_works"] is True
    assert out["cli_blocked"] is True  # the CLI needs click; the SDK must not
    assert out["state"] == "SERVER_STATE_RUNNING"
    assert out["health"] == "SERVING"
    assert out["stop_changed"] is True
    # Without google.rpc the reason cannot be decoded, but the typed error still comes.
    name, code, reason, message = out["resume_error"]
    assert (name, code, reason) == ("FailedPrecondition", "FAILED_PRECONDITION", "")
    assert message
    # The status-details trailer alone proves the server answered: not "unreachable".
    assert out["start_error"] == ["UNAVAILABLE", "", False]
    assert out["loaded"] == []


def test_blocked_modules_are_really_installed_here() -> None:
    """Guards the test above against passing only because a module is missing anyway."""
    for name in ("click", "google.rpc.status_pb2", "pynetdicom", "pacsd.server.runtime"):
        __import__(name)
