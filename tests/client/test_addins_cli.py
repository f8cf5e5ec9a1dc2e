"""``pacsctl addin ...`` against a real pacsd, with real DICOM traffic to the add-ins."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from tests.conftest import PacsdProcess, console_script, run_pacsctl


@pytest.fixture
def pacsd(pacsd_no_storage: PacsdProcess) -> PacsdProcess:
    """These tests load add-ins that claim storage SOP classes: no built-in storage."""
    return pacsd_no_storage


ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "example_store.py"
TEST_ADDINS = ROOT / "tests" / "addins"
SC = "1.2.840.10008.5.1.4.1.1.7"
VERIFICATION = "1.2.840.10008.1.1"

#: A tiny add-in whose commands show exactly what reached it.
ECHO_ARGS = textwrap.dedent(
    """
    from typing import Any

    from pacsd.addin import Addin, command


    class EchoArgs(Addin):
        name = "echo_args"
        version = "0.1.0"

        @command("echo")
        def echo(self, args: dict[str, Any]) -> dict[str, Any]:
            return {"args": args, "types": {k: type(v).__name__ for k, v in args.items()}}

        @command("fail")
        def fail(self, args: dict[str, Any]) -> dict[str, Any]:
            raise RuntimeError("deliberate failure in a command")
    """
)


# -- helpers shared with test_addins_sdk -----------------------------------------------


def write_echo_args(folder: Path) -> Path:
    path = folder / "echo_args.py"
    path.write_text(ECHO_ARGS)
    return path


def sc_instance(payload: str = "ADDIN") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SC
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = payload
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def store(port: int, *datasets: Dataset) -> list[int]:
    """C-STOREs on one association; [-1] when Secondary Capture was not accepted."""
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(SC, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
    if not assoc.is_established:
        assert not assoc.is_rejected
        return [-1]  # pynetdicom aborts when no presentation context was accepted
    try:
        if not assoc.accepted_contexts:
            return [-1]
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def c_echo(port: int) -> int:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
    assert assoc.is_established
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


# -- pacsctl helpers ------------------------------------------------------------------


def ok(server: PacsdProcess, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_pacsctl(server, *args)
    assert result.returncode == 0, result
    assert result.stderr == "", result
    return result


def ok_json(server: PacsdProcess, *args: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ok(server, "-w", "json", *args).stdout)
    return document


def failed_json(server: PacsdProcess | str, *args: str, status: int = 1) -> dict[str, Any]:
    """Run a command expected to fail; its one-line JSON error from stderr."""
    result = run_pacsctl(server, "-w", "json", *args)
    assert result.returncode == status, result
    assert result.stdout == "", result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    error: dict[str, Any] = json.loads(lines[0])["error"]
    return error


def load_example(server: PacsdProcess, path: Path = EXAMPLE) -> dict[str, Any]:
    document = ok_json(server, "addin", "load", str(path))
    assert document["changed"] is True
    addin: dict[str, Any] = document["addin"]
    return addin


def stats(server: PacsdProcess) -> dict[str, Any]:
    document = ok_json(server, "addin", "invoke", "example_store", "stats")
    assert set(document) == {"result"}
    result: dict[str, Any] = document["result"]
    return result


# -- tests --------------------------------------------------------------------------


def test_list_shows_verification_enabled(pacsd: PacsdProcess) -> None:
    document = ok_json(pacsd, "addin", "list")
    assert set(document) == {"addins"}
    by_name = {a["name"]: a for a in document["addins"]}
    verification = by_name["verification"]
    assert verification["state"] == "ADDIN_STATE_ENABLED"
    assert verification["healthy"] is True
    assert type(verification["counters"]["calls"]) is int
    assert [b["service"] for b in verification["bindings"]] == ["C-ECHO"]

    out = ok(pacsd, "addin", "list").stdout
    for column in ("NAME", "STATE", "VERSION", "HEALTHY", "CALLS", "FAILURES", "SOURCE"):
        assert column in out
    row = next(line for line in out.splitlines() if "| verification " in line)
    assert "| ENABLED " in row
    assert "ADDIN_STATE_" not in out


def test_list_counts_calls_after_traffic(pacsd: PacsdProcess) -> None:
    assert c_echo(pacsd.dicom_port) == 0
    document = ok_json(pacsd, "addin", "list")
    verification = next(a for a in document["addins"] if a["name"] == "verification")
    assert verification["counters"]["calls"] >= 1


def test_load_by_path_then_c_store_and_stats_round_trip(pacsd: PacsdProcess) -> None:
    assert store(pacsd.dicom_port, sc_instance()) == [-1]  # nothing takes SC yet
    addin = load_example(pacsd)
    assert addin["name"] == "example_store"
    assert addin["state"] == "ADDIN_STATE_ENABLED"
    assert addin["source"] == f"path:{EXAMPLE}"
    assert SC in {b["sop_class_uid"] for b in addin["bindings"]}
    assert stats(pacsd) == {"stored": 0, "associations": 0, "last_sop_instance_uid": ""}

    datasets = [sc_instance() for _ in range(3)]
    assert store(pacsd.dicom_port, *datasets) == [0, 0, 0]
    assert store(pacsd.dicom_port, datasets[0]) == [0]

    result = stats(pacsd)
    assert result["stored"] == 4  # exactly the C-STOREs sent
    assert type(result["stored"]) is int  # not 4.0: integral numbers come back as ints
    assert result["associations"] == 2
    assert result["last_sop_instance_uid"] == datasets[0].SOPInstanceUID

    table = ok(pacsd, "addin", "invoke", "example_store", "stats").stdout
    assert "| stored " in table and "| 4 " in table

    again = ok_json(pacsd, "addin", "load", str(EXAMPLE))
    assert again["changed"] is False
    assert ok(pacsd, "addin", "load", str(EXAMPLE)).stdout.strip() == (
        "add-in example_store already loaded (no change)"
    )


def test_relative_path_is_made_absolute_by_the_client(pacsd: PacsdProcess, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "example_store.py")
    # The server runs in another directory: it finds the file only if pacsctl sent an
    # absolute path.
    result = subprocess.run(
        [
            console_script("pacsctl"),
            *("-e", pacsd.endpoint, "-w", "json"),
            *("addin", "load", "example_store.py"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=folder,
    )
    assert result.returncode == 0, result
    document = json.loads(result.stdout)
    assert document["addin"]["source"] == f"path:{folder / 'example_store.py'}"
    assert store(pacsd.dicom_port, sc_instance()) == [0]


def test_get_shows_bindings_hooks_and_commands(pacsd: PacsdProcess) -> None:
    load_example(pacsd)
    document = ok_json(pacsd, "addin", "get", "example_store")
    assert set(document) == {"addin"}
    addin = document["addin"]
    assert addin["commands"] == ["stats"]
    assert addin["hooks"] == ["association_accepted"]
    assert addin["version"] == "1.0.0"

    out = ok(pacsd, "addin", "get", "example_store").stdout
    assert "BINDINGS" in out
    for column in ("SERVICE", "SOP CLASS", "TRANSFER SYNTAXES"):
        assert column in out
    assert f"| C-STORE | {SC} " in out
    assert ExplicitVRLittleEndian in out
    assert "| COMMANDS " in out and "stats" in out
    assert "association_accepted" in out


def test_args_reach_the_addin_parsed_as_json_or_strings(
    pacsd: PacsdProcess, tmp_path: Path
) -> None:
    path = write_echo_args(tmp_path)
    assert ok_json(pacsd, "addin", "load", str(path))["addin"]["commands"] == ["echo", "fail"]
    document = ok_json(
        pacsd,
        "addin",
        "invoke",
        "echo_args",
        "echo",
        "--args-json",
        '{"n": 1, "obj": {"k": [true, null]}, "kept": "from json"}',
        "--arg",
        "n=10",
        "--arg",
        "f=1.5",
        "--arg",
        "b=true",
        "--arg",
        "z=null",
        "--arg",
        "s=hello world",
        "--arg",
        'q="10"',
        "--arg",
        'l=[1, "a"]',
        "--arg",
        "path=/tmp/x",
        "--arg",
        "eq=a=b",
        "--arg",
        "empty=",
        "--arg",
        "nan=NaN",
    )
    assert set(document) == {"result"}
    args = document["result"]["args"]
    assert args == {
        "n": 10,
        "f": 1.5,
        "b": True,
        "z": None,
        "s": "hello world",
        "q": "10",
        "l": [1, "a"],
        "path": "/tmp/x",
        "eq": "a=b",
        "empty": "",
        "nan": "NaN",
        "obj": {"k": [True, None]},
        "kept": "from json",
    }
    # What the add-in's Python code saw, not just what came back.
    assert document["result"]["types"] == {
        "n": "int",
        "f": "float",
        "b": "bool",
        "z": "NoneType",
        "s": "str",
        "q": "str",
        "l": "list",
        "path": "str",
        "eq": "str",
        "empty": "str",
        "nan": "str",
        "obj": "dict",
        "kept": "str",
    }
    assert ok_json(pacsd, "addin", "invoke", "echo_args", "echo")["result"] == {
        "args": {},
        "types": {},
    }


def test_bad_args_are_usage_errors_and_send_nothing(pacsd: PacsdProcess, tmp_path: Path) -> None:
    path = write_echo_args(tmp_path)
    ok(pacsd, "addin", "load", str(path))
    for bad in (
        ["--arg", "novalue"],
        ["--arg", "=1"],
        ["--args-json", "[1, 2]"],
        ["--args-json", "{not json"],
        ["--arg", "huge=1e400"],
        ["--arg", f"big={2**60}"],
    ):
        result = run_pacsctl(pacsd, "addin", "invoke", "echo_args", "echo", *bad)
        assert result.returncode == 2, (bad, result)
        assert result.stdout == ""
    result = run_pacsctl(pacsd, "addin", "settings", "echo_args", "--set", "x")
    assert result.returncode == 2, result
    for missing in (["addin", "get"], ["addin", "invoke", "echo_args"], ["addin", "bogus"]):
        assert run_pacsctl(pacsd, *missing).returncode == 2, missing


def test_failing_command_and_unknown_command(pacsd: PacsdProcess, tmp_path: Path) -> None:
    ok(pacsd, "addin", "load", str(write_echo_args(tmp_path)))
    error = failed_json(pacsd, "addin", "invoke", "echo_args", "fail")
    assert error["reason"] == "COMMAND_FAILED"
    assert "deliberate failure" in error["metadata"]["error"]
    error = failed_json(pacsd, "addin", "invoke", "echo_args", "nope")
    assert (error["code"], error["reason"]) == ("NOT_FOUND", "COMMAND_NOT_FOUND")


def test_settings_show_update_and_limit_stores(pacsd: PacsdProcess, tmp_path: Path) -> None:
    load_example(pacsd)
    assert ok_json(pacsd, "addin", "settings", "example_store") == {
        "settings": {"folder": "", "max_bytes": 0}
    }
    assert store(pacsd.dicom_port, sc_instance()) == [0]

    updated = ok_json(pacsd, "addin", "settings", "example_store", "--set", "max_bytes=10")
    assert updated == {"settings": {"folder": "", "max_bytes": 10}, "changed": True}
    assert type(updated["settings"]["max_bytes"]) is int
    again = ok_json(pacsd, "addin", "settings", "example_store", "--set", "max_bytes=10")
    assert again["changed"] is False
    shown = ok_json(pacsd, "addin", "settings", "example_store")["settings"]
    assert shown == {"folder": "", "max_bytes": 10}

    assert store(pacsd.dicom_port, sc_instance()) == [0xA700]  # larger than 10 bytes
    assert stats(pacsd)["stored"] == 1

    folder = tmp_path / "received"
    text = ok(
        pacsd,
        "addin",
        "settings",
        "example_store",
        "--set",
        "max_bytes=0",
        "--set",
        f"folder={folder}",
    ).stdout
    assert text.startswith("settings of example_store updated")
    assert str(folder) in text
    ds = sc_instance()
    assert store(pacsd.dicom_port, ds) == [0]
    assert (folder / f"{ds.SOPInstanceUID}.dcm").is_file()


def test_invalid_setting_is_a_server_error_naming_the_field(pacsd: PacsdProcess) -> None:
    load_example(pacsd)
    error = failed_json(pacsd, "addin", "settings", "example_store", "--set", "max_bytez=1")
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["reason"] == "ADDIN_SETTINGS_INVALID"
    assert error["metadata"]["field"] == "max_bytez"
    error = failed_json(pacsd, "addin", "settings", "example_store", "--set", "max_bytes=lots")
    assert error["reason"] == "ADDIN_SETTINGS_INVALID"
    assert error["metadata"]["field"] == "max_bytes"
    # Nothing was applied.
    assert ok_json(pacsd, "addin", "settings", "example_store")["settings"] == {
        "folder": "",
        "max_bytes": 0,
    }
    table = run_pacsctl(pacsd, "addin", "settings", "example_store", "--set", "max_bytez=1")
    assert table.returncode == 1
    assert "(INVALID_ARGUMENT/ADDIN_SETTINGS_INVALID)" in table.stderr


def test_conflicting_addin_names_both(pacsd: PacsdProcess) -> None:
    error = failed_json(pacsd, "addin", "load", str(TEST_ADDINS / "echo_twin.py"))
    assert error["code"] == "FAILED_PRECONDITION"
    assert error["reason"] == "ADDIN_CONFLICT"
    assert set(error["metadata"]["addins"].split(",")) == {"verification", "echo_twin"}
    assert "verification" in error["message"] and "echo_twin" in error["message"]

    table = run_pacsctl(pacsd, "addin", "load", str(TEST_ADDINS / "echo_twin.py"))
    assert table.returncode == 1
    assert "(FAILED_PRECONDITION/ADDIN_CONFLICT)" in table.stderr
    assert "verification" in table.stderr and "echo_twin" in table.stderr

    twin = ok_json(pacsd, "addin", "get", "echo_twin")["addin"]
    assert twin["state"] == "ADDIN_STATE_FAILED" and "verification" in twin["error"]
    assert c_echo(pacsd.dicom_port) == 0  # verification still answers


def test_disable_enable_unload_are_idempotent(pacsd: PacsdProcess) -> None:
    load_example(pacsd)

    first = ok_json(pacsd, "addin", "disable", "example_store")
    assert first["changed"] is True and first["addin"]["state"] == "ADDIN_STATE_DISABLED"
    assert ok_json(pacsd, "addin", "disable", "example_store")["changed"] is False
    assert store(pacsd.dicom_port, sc_instance()) == [-1]  # loaded, but gets no traffic
    assert ok(pacsd, "addin", "disable", "example_store").stdout.strip() == (
        "add-in example_store already disabled (no change)"
    )

    first = ok_json(pacsd, "addin", "enable", "example_store")
    assert first["changed"] is True and first["addin"]["state"] == "ADDIN_STATE_ENABLED"
    assert ok_json(pacsd, "addin", "enable", "example_store")["changed"] is False
    assert store(pacsd.dicom_port, sc_instance()) == [0]

    first = ok_json(pacsd, "addin", "unload", "example_store")
    assert first["changed"] is True and first["addin"]["state"] == "ADDIN_STATE_AVAILABLE"
    second = ok_json(pacsd, "addin", "unload", "example_store")
    assert second["changed"] is False and second["addin"]["state"] == "ADDIN_STATE_AVAILABLE"
    assert ok(pacsd, "addin", "unload", "example_store").stdout.strip() == (
        "add-in example_store is not loaded (no change)"
    )
    assert store(pacsd.dicom_port, sc_instance()) == [-1]

    # Enabling needs a loaded add-in; it is still known, so this is not ADDIN_NOT_FOUND.
    error = failed_json(pacsd, "addin", "enable", "example_store")
    assert (error["code"], error["reason"]) == ("FAILED_PRECONDITION", "ADDIN_NOT_LOADED")

    # Known by name now: loading again needs no path.
    assert ok_json(pacsd, "addin", "load", "example_store")["changed"] is True
    assert store(pacsd.dicom_port, sc_instance()) == [0]


def test_reload_picks_up_edited_code(pacsd: PacsdProcess, tmp_path: Path) -> None:
    copy = tmp_path / "example_store.py"
    shutil.copy(EXAMPLE, copy)
    load_example(pacsd, copy)
    assert store(pacsd.dicom_port, sc_instance()) == [0]
    text = copy.read_text()
    assert "STORE_STATUS = Status.SUCCESS" in text
    copy.write_text(text.replace("STORE_STATUS = Status.SUCCESS", "STORE_STATUS = 0xB000"))

    document = ok_json(pacsd, "addin", "reload", "example_store")
    assert document["changed"] is True
    assert document["addin"]["state"] == "ADDIN_STATE_ENABLED"
    assert store(pacsd.dicom_port, sc_instance()) == [0xB000]
    assert stats(pacsd)["stored"] == 1  # a new instance: counts only since the reload

    out = ok(pacsd, "addin", "reload", "example_store").stdout
    assert out.strip() == "add-in example_store reloaded (version 1.0.0)"


def test_unknown_addin_is_not_found(pacsd: PacsdProcess) -> None:
    for args in (
        ["get", "nope"],
        ["load", "nope"],
        ["unload", "nope"],
        ["reload", "nope"],
        ["enable", "nope"],
        ["disable", "nope"],
        ["settings", "nope"],
        ["settings", "nope", "--set", "a=1"],
        ["invoke", "nope", "stats"],
    ):
        error = failed_json(pacsd, "addin", *args)
        assert (error["code"], error["reason"]) == ("NOT_FOUND", "ADDIN_NOT_FOUND"), args
    result = run_pacsctl(pacsd, "addin", "get", "nope")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("pacsctl: error: ")
    assert "(NOT_FOUND/ADDIN_NOT_FOUND)" in result.stderr
    # A path that does not exist on the server is not found either.
    error = failed_json(pacsd, "addin", "load", "/nonexistent/addin.py")
    assert error["reason"] == "ADDIN_NOT_FOUND"


def test_unreachable_server_exits_3() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{s.getsockname()[1]}"
    error = failed_json(endpoint, "addin", "list", status=3)
    assert error["code"] == "UNAVAILABLE"
