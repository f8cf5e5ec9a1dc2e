"""pytest fixtures for add-in authors: a real pacsd with chosen add-ins, and a DICOM client.

Enable them in your ``conftest.py``::

    pytest_plugins = ["pacsd.addin.testing"]

    def test_my_addin(pacsd_server, dicom_client):
        server = pacsd_server(addins=["path/to/my_addin.py"], settings={"my_addin": {"x": 1}})
        client = dicom_client(server)
        assert client.echo() == 0

The server is a real ``pacsd serve`` process on free loopback ports, so the test sees
exactly what a peer would. This module is test tooling: it may use pynetdicom, unlike
add-ins themselves.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_LISTENING = re.compile(r"^listening dicom=\S+:(\d+) control=\S+:(\d+)$")


@dataclass
class RunningServer:
    proc: subprocess.Popen[str]
    dicom_port: int
    control_port: int
    data_dir: Path
    log_path: Path
    ae_title: str = "PACSD"

    @property
    def endpoint(self) -> str:
        """The control-plane endpoint for ``pacsd.client.Client`` or ``pacsctl -e``."""
        return f"127.0.0.1:{self.control_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """The log once it holds ``text``. A line an engine process writes reaches the
        log through the supervisor, a moment after the DIMSE answer it describes: a
        test that reads the log as soon as its peer has the answer can miss it."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log:
                return log
            if time.monotonic() >= deadline:
                raise AssertionError(f"{text!r} not logged within {timeout}s:\n{log[-2000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, top: dict[str, Any], addins: dict[str, dict[str, Any]]) -> Path:
    lines = [f"{key} = {_toml(value)}" for key, value in top.items()]
    for name, table in addins.items():
        settings = table.get("settings", {})
        lines.append(f"\n[addins.{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items() if k != "settings"]
        if settings:
            lines.append(f"\n[addins.{name}.settings]")
            lines += [f"{k} = {_toml(v)}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_server(
    workdir: Path,
    addins: Sequence[str | Path] = (),
    settings: dict[str, dict[str, Any]] | None = None,
    disable: Sequence[str] = (),
    server_settings: dict[str, Any] | None = None,
    ae_title: str = "PACSD",
    timeout: float = 30,
) -> RunningServer:
    """Start ``pacsd serve`` with the add-in files/packages in ``addins`` on free ports.

    ``settings`` maps add-in name to its settings; ``disable`` names add-ins (such as the
    built-in ``verification``) to leave unloaded.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    addin_dir = workdir / "addins"
    addin_dir.mkdir(exist_ok=True)
    for item in addins:
        src = Path(item)
        if src.is_dir():
            shutil.copytree(src, addin_dir / src.name, dirs_exist_ok=True)
        else:
            shutil.copy(src, addin_dir / src.name)
    tables: dict[str, dict[str, Any]] = {n: {"settings": s} for n, s in (settings or {}).items()}
    for name in disable:
        tables.setdefault(name, {})["enabled"] = False
    top = {
        "ae_title": ae_title,
        "dicom_port": 0,
        "control_port": 0,
        "data_dir": workdir / "data",
        "addin_paths": [addin_dir],
        **(server_settings or {}),
    }
    config = write_config(workdir / "pacsd.toml", top, tables)
    log_path = workdir / "pacsd.log"
    pacsd = Path(sys.executable).with_name("pacsd")
    command = [str(pacsd)] if pacsd.exists() else [sys.executable, "-m", "pacsd.server.main"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*command, "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline().strip()
        if line:
            break
    match = _LISTENING.match(line)
    if match is None:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"pacsd did not start ({line!r}): {log_path.read_text()}")
    return RunningServer(
        proc, int(match[1]), int(match[2]), workdir / "data", log_path, ae_title=ae_title
    )


class DicomTestClient:
    """A small SCU for tests: one association per call."""

    def __init__(self, port: int, called_ae: str = "PACSD", calling_ae: str = "TESTSCU") -> None:
        self.port, self.called_ae, self.calling_ae = port, called_ae, calling_ae

    def associate(self, contexts: Sequence[str | tuple[str, Sequence[str]]], **kwargs: Any) -> Any:
        """An established pynetdicom Association (caller releases it)."""
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        for cx in contexts:
            if isinstance(cx, tuple):
                ae.add_requested_context(cx[0], list(cx[1]))
            else:
                ae.add_requested_context(cx)
        return ae.associate("127.0.0.1", self.port, ae_title=self.called_ae, **kwargs)

    def echo(self) -> int:
        """C-ECHO status, or -1 when no association or context was accepted."""
        assoc = self.associate(["1.2.840.10008.1.1"])
        if not assoc.is_established:
            return -1
        try:
            if not assoc.accepted_contexts:
                return -1
            return int(assoc.send_c_echo().Status)
        finally:
            assoc.release()

    def store(self, dataset: Any, transfer_syntax: str = "1.2.840.10008.1.2.1") -> int:
        """C-STORE status, or -1 when the SOP class was not accepted."""
        assoc = self.associate([(str(dataset.SOPClassUID), [transfer_syntax])])
        if not assoc.is_established:
            return -1
        try:
            if not assoc.accepted_contexts:
                return -1
            return int(assoc.send_c_store(dataset).Status)
        finally:
            assoc.release()


@pytest.fixture
def pacsd_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory: ``pacsd_server(addins=[...], settings={...})`` -> RunningServer."""
    servers: list[RunningServer] = []

    def start(**kwargs: Any) -> RunningServer:
        server = start_server(tmp_path / f"server{len(servers)}", **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def dicom_client() -> Callable[..., DicomTestClient]:
    """Factory: ``dicom_client(server, calling_ae="X")`` -> DicomTestClient."""

    def make(server: RunningServer, **kwargs: Any) -> DicomTestClient:
        return DicomTestClient(server.dicom_port, called_ae=server.ae_title, **kwargs)

    return make
