"""``pacsd serve`` as an operator meets it: startup, C-ECHO, errors, signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pynetdicom import AE

from tests.conftest import LISTENING, PacsdProcess, console_script, dcmtk, dcmtk_env

VERIFICATION = "1.2.840.10008.1.1"


def echo_association(port: int, ae_title: str = "PACSD"):  # type: ignore[no-untyped-def]
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(VERIFICATION)
    return ae.associate("127.0.0.1", port, ae_title=ae_title)


def test_c_echo_from_pynetdicom(pacsd: PacsdProcess) -> None:
    assoc = echo_association(pacsd.dicom_port)
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    assert status.Status == 0x0000


def test_c_echo_from_dcmtk_echoscu(pacsd: PacsdProcess) -> None:
    out = subprocess.run(
        [
            dcmtk("echoscu"),
            "-v",
            "-aet",
            "DCMTK",
            "-aec",
            "PACSD",
            "127.0.0.1",
            str(pacsd.dicom_port),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=dcmtk_env(),
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "Received Echo Response (Success)" in out.stdout + out.stderr


def test_many_echo_associations_in_parallel(pacsd: PacsdProcess) -> None:
    results: list[int] = []

    def one() -> None:
        assoc = echo_association(pacsd.dicom_port)
        results.append(assoc.send_c_echo().Status)
        assoc.release()

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [0] * 10


def test_verification_is_an_addin_not_the_core(start_pacsd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Disable the add-in and C-ECHO is no longer offered: the core answers nothing itself."""
    cfg = tmp_path / "no-echo.toml"
    cfg.write_text("[addins.verification]\nenabled = false\n")
    server = start_pacsd(["--config", str(cfg)])
    assoc = echo_association(server.dicom_port)
    try:
        assert not assoc.accepted_contexts
    finally:
        if assoc.is_established:
            assoc.release()


def _run_serve(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("pacsd"), "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def _assert_one_line_error(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert out.returncode == 1, out
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("pacsd: error:")]
    assert len(errors) == 1 and needle in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_taken_dicom_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with _taken_port() as sock:
        port = sock.getsockname()[1]
        out = _run_serve(
            ["--dicom-port", str(port), "--control-port", "0", "--data-dir", "d"], tmp_path
        )
    _assert_one_line_error(out, f"DICOM port 127.0.0.1:{port} is already in use")


def test_taken_control_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with _taken_port() as sock:
        port = sock.getsockname()[1]
        out = _run_serve(
            ["--dicom-port", "0", "--control-port", str(port), "--data-dir", "d"], tmp_path
        )
    _assert_one_line_error(out, f"control port 127.0.0.1:{port}")


def test_control_plane_refuses_non_loopback_without_tls(tmp_path: Path) -> None:
    out = _run_serve(
        ["--control-host", "0.0.0.0", "--dicom-port", "0", "--control-port", "0"], tmp_path
    )
    _assert_one_line_error(out, "loopback")


def test_invalid_config_names_the_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("dicom_prot = 104\n")
    out = _run_serve(["--config", str(cfg)], tmp_path)
    _assert_one_line_error(out, "dicom_prot: unknown setting")


def test_missing_required_addin_fails_startup(tmp_path: Path) -> None:
    out = _run_serve(
        ["--dicom-port", "0", "--control-port", "0", "--data-dir", "d"],
        tmp_path,
        env={"PACSD_REQUIRED_ADDINS": "verification,nonexistent"},
    )
    _assert_one_line_error(out, "nonexistent")


def test_precedence_end_to_end(tmp_path: Path) -> None:
    """File, env and flag each set a port; the flag wins for one, env for the other."""
    cfg = tmp_path / "p.toml"
    with _taken_port() as a, _taken_port() as b:
        file_port, env_port = a.getsockname()[1], b.getsockname()[1]
        cfg.write_text(f"dicom_port = {file_port}\ncontrol_port = {file_port}\n")
        # env beats file for the DICOM port (taken -> error names env's port);
        # the flag beats both for the control port (0 -> would bind fine).
        out = _run_serve(
            ["--config", str(cfg), "--control-port", "0", "--data-dir", "d"],
            tmp_path,
            env={"PACSD_DICOM_PORT": str(env_port)},
        )
    _assert_one_line_error(out, f"DICOM port 127.0.0.1:{env_port}")


def _spawn(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], re.Match[str]]:
    proc = subprocess.Popen(
        [console_script("pacsd"), "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    match = LISTENING.match(line)
    if match is None:
        proc.kill()
        pytest.fail(f"no listening line: {line!r} {proc.communicate()[1]}")
    return proc, match


def test_no_arguments_serves_on_the_documented_defaults(tmp_path: Path) -> None:
    proc, match = _spawn(tmp_path)
    try:
        assert match.group(0) == "listening dicom=127.0.0.1:11112 control=127.0.0.1:50051"
        assoc = echo_association(11112)
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        db = tmp_path / "pacsd-data" / "pacsd.db"
        assert db.is_file()
        conn = sqlite3.connect(db)
        assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] >= 1
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_zero(pacsd: PacsdProcess, signum: int) -> None:
    pacsd.signal(signum)
    assert pacsd.wait(20) == 0
    assert "Traceback" not in pacsd.stderr()


def test_sigterm_lets_a_running_association_finish(pacsd: PacsdProcess) -> None:
    assoc = echo_association(pacsd.dicom_port)
    assert assoc.is_established
    pacsd.signal(signal.SIGTERM)
    time.sleep(0.5)
    # The listener is closed for newcomers ...
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", pacsd.dicom_port), timeout=2).close()
    # ... but the running association still gets answers, and the process waits for it.
    assert assoc.send_c_echo().Status == 0
    assert pacsd.proc.poll() is None
    assoc.release()
    assert pacsd.wait(20) == 0


def test_grace_period_expiry_aborts_stragglers(start_pacsd) -> None:  # type: ignore[no-untyped-def]
    server = start_pacsd(env={"PACSD_GRACE_PERIOD": "1"})
    assoc = echo_association(server.dicom_port)
    assert assoc.is_established
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 5
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
