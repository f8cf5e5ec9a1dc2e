"""The add-in framework end to end: runtime loading, routing, hooks, faults, commands.

Every test talks DICOM to a real pacsd process and drives it over the real control plane.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pacsd.admin.v1 import addins_pb2, addins_pb2_grpc
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.conftest import PacsdProcess, dcmtk, dcmtk_env


@pytest.fixture
def pacsd(pacsd_no_storage: PacsdProcess) -> PacsdProcess:
    """These tests load add-ins that claim storage SOP classes: no built-in storage."""
    return pacsd_no_storage


ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "example_store.py"
TEST_ADDINS = ROOT / "tests" / "addins"
SC = "1.2.840.10008.5.1.4.1.1.7"
MR = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def addins(pacsd: PacsdProcess) -> Iterator[addins_pb2_grpc.AddinServiceStub]:
    with grpc.insecure_channel(pacsd.endpoint) as channel:
        yield addins_pb2_grpc.AddinServiceStub(channel)


def load(stub: addins_pb2_grpc.AddinServiceStub, path: Path) -> addins_pb2.Addin:
    return stub.LoadAddin(addins_pb2.LoadAddinRequest(name=str(path)), timeout=20).addin


def invoke(stub: addins_pb2_grpc.AddinServiceStub, name: str, cmd: str) -> dict[str, Any]:
    rsp = stub.InvokeCommand(addins_pb2.InvokeCommandRequest(name=name, command=cmd), timeout=10)
    return json_format.MessageToDict(rsp.result)


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def sc_instance(sop_class: str = SC) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "ADDIN"
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def associate(port: int, *contexts: str, calling: str = "TESTSCU", **kw: Any) -> Any:
    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    return ae.associate("127.0.0.1", port, ae_title="PACSD", **kw)


def store(port: int, ds: Dataset, calling: str = "TESTSCU") -> int:
    """C-STORE status; -1 when the SOP class was not accepted."""
    assoc = associate(port, str(ds.SOPClassUID), calling=calling)
    if not assoc.is_established:
        assert not assoc.is_rejected
        return -1  # pynetdicom aborts when no presentation context was accepted
    try:
        if not assoc.accepted_contexts:
            return -1
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_example_addin_loaded_at_runtime_handles_c_store(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub, tmp_path: Path
) -> None:
    ds = sc_instance()
    assert store(pacsd.dicom_port, ds) == -1  # nothing handles Secondary Capture yet
    info = load(addins, EXAMPLE)
    assert info.state == addins_pb2.ADDIN_STATE_ENABLED
    assert {b.sop_class_uid for b in info.bindings} >= {SC, MR}
    folder = tmp_path / "received"
    addins.UpdateAddinSettings(
        addins_pb2.UpdateAddinSettingsRequest(
            name="example_store", settings={"folder": str(folder)}
        ),
        timeout=10,
    )
    assert store(pacsd.dicom_port, ds) == 0x0000
    assert (folder / f"{ds.SOPInstanceUID}.dcm").is_file()
    stats = invoke(addins, "example_store", "stats")
    assert stats["stored"] == 1 and stats["last_sop_instance_uid"] == ds.SOPInstanceUID
    # Loading again is idempotent.
    again = addins.LoadAddin(addins_pb2.LoadAddinRequest(name=str(EXAMPLE)), timeout=10)
    assert not again.changed


def test_unload_withdraws_the_presentation_context(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    load(addins, EXAMPLE)
    running = associate(pacsd.dicom_port, SC)  # negotiated while loaded
    assert running.accepted_contexts
    rsp = addins.UnloadAddin(addins_pb2.UnloadAddinRequest(name="example_store"), timeout=20)
    assert rsp.changed and rsp.addin.state == addins_pb2.ADDIN_STATE_AVAILABLE
    assert store(pacsd.dicom_port, sc_instance()) == -1  # new association: no context
    # The association negotiated before the unload is refused, not sent to stopped code.
    assert running.send_c_store(sc_instance()).Status == 0x0122
    running.release()


def test_reload_picks_up_edited_code(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub, tmp_path: Path
) -> None:
    copy = tmp_path / "example_store.py"
    shutil.copy(EXAMPLE, copy)
    load(addins, copy)
    assert store(pacsd.dicom_port, sc_instance()) == 0x0000
    text = copy.read_text()
    assert "STORE_STATUS = Status.SUCCESS" in text
    copy.write_text(text.replace("STORE_STATUS = Status.SUCCESS", "STORE_STATUS = 0xB000"))
    reloaded = addins.ReloadAddin(addins_pb2.ReloadAddinRequest(name="example_store"), timeout=20)
    assert reloaded.addin.state == addins_pb2.ADDIN_STATE_ENABLED
    assert store(pacsd.dicom_port, sc_instance()) == 0xB000


def test_conflicting_addin_is_a_load_error_naming_both(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        load(addins, TEST_ADDINS / "echo_twin.py")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(err.value)
    assert info.reason == "ADDIN_CONFLICT"
    assert set(info.metadata["addins"].split(",")) == {"verification", "echo_twin"}
    listed = addins.GetAddin(addins_pb2.GetAddinRequest(name="echo_twin"), timeout=5).addin
    assert listed.state == addins_pb2.ADDIN_STATE_FAILED and "verification" in listed.error
    assert store_echo(pacsd.dicom_port) == 0  # verification still answers


def store_echo(port: int, calling: str = "TESTSCU") -> int:
    assoc = associate(port, VERIFICATION, calling=calling)
    try:
        if not assoc.is_established or not assoc.accepted_contexts:
            return -1
        return int(assoc.send_c_echo().Status)
    finally:
        if assoc.is_established:
            assoc.release()


def test_a_private_sop_class_an_addin_accepts_is_stored(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    """pynetdicom serves a C-STORE only for the SOP classes it lists as storage and
    aborts the association over any other; pacsd hands every C-STORE to the add-in its
    presentation context was accepted for."""
    from tests.addins.private_store import PRIVATE_SOP_CLASS

    ds = sc_instance(PRIVATE_SOP_CLASS)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()  # archivable
    assert store(pacsd.dicom_port, ds) == -1  # not accepted before the add-in is loaded
    load(addins, TEST_ADDINS / "private_store.py")
    assert store(pacsd.dicom_port, ds) == 0x0000
    stored = list((pacsd.data_dir / "blobs").rglob(f"{ds.SOPInstanceUID}.dcm"))
    assert len(stored) == 1, stored
    assert "Association Aborted" not in pacsd.stderr()


def test_raising_handler_gives_failure_and_server_keeps_serving(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    load(addins, TEST_ADDINS / "faulty.py")
    assert store(pacsd.dicom_port, sc_instance()) == 0x0110
    # The next association works, hooks that raise do not break it either.
    assert store_echo(pacsd.dicom_port) == 0
    assert store(pacsd.dicom_port, sc_instance()) == 0x0110
    counters = addins.GetAddin(addins_pb2.GetAddinRequest(name="faulty"), timeout=5).addin.counters
    assert counters.failures >= 2
    log = pacsd.stderr()
    assert "deliberate failure in a handler" in log and "Traceback" in log


def test_hanging_handler_is_answered_within_its_limit_and_holds_no_shutdown(
    start_pacsd: Any, tmp_path: Path
) -> None:
    """The handler hangs for 30 s (or until its add-in stops): the peer is answered at
    the 1 s limit, the server goes on, and a shutdown takes its grace period, not the
    handler's time. pynetdicom's abort waited for the association's reading thread,
    which the handler holds, so the shutdown lasted as long as the handler did."""
    config = tmp_path / "no-storage.toml"
    config.write_text("[addins.storage]\nenabled = false\n")
    pacsd = start_pacsd(["--config", str(config)], env={"PACSD_GRACE_PERIOD": "1"})
    with grpc.insecure_channel(pacsd.endpoint) as channel:
        addins = addins_pb2_grpc.AddinServiceStub(channel)
        load(addins, TEST_ADDINS / "faulty.py")
        started = time.monotonic()
        status = store(pacsd.dicom_port, sc_instance(MR))
        elapsed = time.monotonic() - started
        assert status == 0x0110
        assert elapsed < 5, elapsed
        addin = addins.GetAddin(addins_pb2.GetAddinRequest(name="faulty"), timeout=5).addin
        assert not addin.healthy and "time limit" in addin.error
        assert addin.counters.timeouts == 1
        assert store_echo(pacsd.dicom_port) == 0

    started = time.monotonic()
    pacsd.proc.terminate()
    pacsd.proc.wait(timeout=12)  # grace 1 s + at most 5 s for aborts to land
    assert time.monotonic() - started < 9
    log = pacsd.stderr()
    assert "still open after their abort (an add-in handler holds" in log


def test_observer_sees_every_message_in_order_and_before_send_changes_it(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    load(addins, TEST_ADDINS / "spy.py")
    load(addins, EXAMPLE)
    assoc = associate(pacsd.dicom_port, VERIFICATION, SC, calling="WATCHED")
    echo_rsp = assoc.send_c_echo()
    assert echo_rsp.Status == 0
    assert echo_rsp.ErrorComment == "seen by spy"  # changed by the before_send hook
    assert assoc.send_c_store(sc_instance()).Status == 0
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    time.sleep(0.3)
    events = [e for e in invoke(addins, "spy", "events")["events"] if e["calling"] == "WATCHED"]
    seen = [(e["event"], e.get("service"), e.get("response")) for e in events]
    assert seen == [
        ("requested", None, None),
        ("accepted", None, None),
        ("received", "C-ECHO", False),
        ("sent", "C-ECHO", True),
        ("received", "C-STORE", False),
        ("sent", "C-STORE", True),
        ("received", "C-ECHO", False),
        ("sent", "C-ECHO", True),
        ("released", None, None),
    ]
    assert len({e["assoc"] for e in events}) == 1 and events[0]["assoc"]


def test_association_requested_hook_rejects_with_reason(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    load(addins, TEST_ADDINS / "spy.py")
    out = subprocess.run(
        [
            dcmtk("echoscu"),
            "-v",
            "-aet",
            "BADGUY",
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
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert (
        "Calling AE Title Not Recognized" in text
        or "calling AE title not recognized" in text.lower()
    ), text
    pacsd.wait_for_log("BADGUY is not welcome")
    assert store_echo(pacsd.dicom_port, calling="GOODGUY") == 0


def test_addin_failing_to_start_stays_listed_while_others_serve(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        load(addins, TEST_ADDINS / "broken_start.py")
    assert error_info(err.value).reason == "ADDIN_LOAD_FAILED"
    listed = {
        a.name: a for a in addins.ListAddins(addins_pb2.ListAddinsRequest(), timeout=5).addins
    }
    assert listed["broken_start"].state == addins_pb2.ADDIN_STATE_FAILED
    assert "cannot reach the thing" in listed["broken_start"].error
    assert listed["verification"].state == addins_pb2.ADDIN_STATE_ENABLED
    assert store_echo(pacsd.dicom_port) == 0


def test_disable_and_enable_without_restarting_the_listener(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    rsp = addins.DisableAddin(addins_pb2.DisableAddinRequest(name="verification"), timeout=5)
    assert rsp.changed and rsp.addin.state == addins_pb2.ADDIN_STATE_DISABLED
    assert not addins.DisableAddin(
        addins_pb2.DisableAddinRequest(name="verification"), timeout=5
    ).changed
    assert store_echo(pacsd.dicom_port) == -1
    assert addins.EnableAddin(addins_pb2.EnableAddinRequest(name="verification"), timeout=5).changed
    assert store_echo(pacsd.dicom_port) == 0


def test_invalid_settings_name_the_field(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    load(addins, EXAMPLE)
    for settings, field in (({"max_bytes": "lots"}, "max_bytes"), ({"colour": "red"}, "colour")):
        with pytest.raises(grpc.RpcError) as err:
            addins.UpdateAddinSettings(
                addins_pb2.UpdateAddinSettingsRequest(name="example_store", settings=settings),
                timeout=5,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = error_info(err.value)
        assert info.reason == "ADDIN_SETTINGS_INVALID" and info.metadata["field"] == field
    current = addins.GetAddinSettings(
        addins_pb2.GetAddinSettingsRequest(name="example_store"), timeout=5
    )
    assert json_format.MessageToDict(current.settings) == {"folder": "", "max_bytes": 0.0}


def test_unknown_addin_and_command(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        addins.GetAddin(addins_pb2.GetAddinRequest(name="nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(err.value).reason == "ADDIN_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as err:
        invoke(addins, "verification", "nope")
    assert error_info(err.value).reason == "COMMAND_NOT_FOUND"


def test_c_cancel_reaches_the_find_handler(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    load(addins, TEST_ADDINS / "qr.py")
    assoc = associate(pacsd.dicom_port, StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    statuses = []
    for n, (status, _identifier) in enumerate(
        assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind, msg_id=7)
    ):
        statuses.append(int(status.Status))
        if n == 2:
            cx = assoc.accepted_contexts[0].context_id
            assoc.send_c_cancel(7, cx)
    assoc.release()
    assert statuses[0] == 0xFF00
    assert statuses[-1] == 0xFE00  # cancelled
    assert len(statuses) < 20
    state = invoke(addins, "qr", "state")
    assert state == {"cancel_seen": True, "last_level": "STUDY"}


def test_c_get_and_n_action_through_an_addin(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    load(addins, TEST_ADDINS / "qr.py")
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    from pynetdicom import evt

    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(SC, ExplicitVRLittleEndian)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        "127.0.0.1",
        pacsd.dicom_port,
        ae_title="PACSD",
        ext_neg=[build_role(SC, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = "1.2.3"
    final = [
        int(s.Status) for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
    ]
    assert final[-1] == 0x0000
    assert received == ["1.2.3.4.0", "1.2.3.4.1", "1.2.3.4.2"]
    info = Dataset()
    info.TransactionUID = "1.2.3.99"
    status, reply = assoc.send_n_action(
        info, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1"
    )
    assert status.Status == 0 and reply.TransactionUID == "1.2.3.99"
    assoc.release()


def test_c_move_to_unknown_destination_is_a801(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    load(addins, TEST_ADDINS / "qr.py")
    assoc = associate(pacsd.dicom_port, StudyRootQueryRetrieveInformationModelMove)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = "1.2.3"
    statuses = [
        int(s.Status)
        for s, _ in assoc.send_c_move(query, "NOWHERE", StudyRootQueryRetrieveInformationModelMove)
    ]
    assoc.release()
    assert statuses == [0xA801]


def test_accepts_decides_per_association(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    load(addins, TEST_ADDINS / "qr.py")
    refused = associate(
        pacsd.dicom_port, StudyRootQueryRetrieveInformationModelFind, calling="NOFIND"
    )
    allowed = associate(
        pacsd.dicom_port, StudyRootQueryRetrieveInformationModelFind, calling="OKFIND"
    )
    try:
        assert not refused.accepted_contexts
        assert allowed.accepted_contexts
    finally:
        refused.release()
        allowed.release()


def test_an_addin_replaces_a_base_service(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    """C-MOVE resolves its destination through the aetitles service: replace it and the
    move reaches a peer only the replacement knows."""
    from pynetdicom import evt

    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    scp = AE(ae_title="MOVEDEST")
    scp.add_supported_context(SC, ExplicitVRLittleEndian)
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        port = server.server_address[1]
        load(addins, TEST_ADDINS / "qr.py")
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = "1.2.3"

        def move() -> list[int]:
            assoc = associate(pacsd.dicom_port, StudyRootQueryRetrieveInformationModelMove)
            model = StudyRootQueryRetrieveInformationModelMove
            result = [int(s.Status) for s, _ in assoc.send_c_move(query, "MOVEDEST", model)]
            assoc.release()
            return result

        assert move() == [0xA801]  # unknown to the default registry
        load(addins, TEST_ADDINS / "ae_book.py")
        addins.UpdateAddinSettings(
            addins_pb2.UpdateAddinSettingsRequest(name="ae_book", settings={"port": port}),
            timeout=5,
        )
        # provide() ran at load with port 0; reload so the book is built from the new port.
        addins.ReloadAddin(addins_pb2.ReloadAddinRequest(name="ae_book"), timeout=20)
        statuses = move()
        assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
        assert received == ["1.2.3.4.9"]
        addins.UnloadAddin(addins_pb2.UnloadAddinRequest(name="ae_book"), timeout=20)
        assert move() == [0xA801]  # the default is back
    finally:
        server.shutdown()


def test_unload_lets_a_call_in_flight_finish(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    import threading

    load(addins, TEST_ADDINS / "slow.py")
    results: list[int] = []
    sender = threading.Thread(target=lambda: results.append(store(pacsd.dicom_port, sc_instance())))
    sender.start()
    time.sleep(0.5)  # the handler is now sleeping
    started = time.monotonic()
    rsp = addins.UnloadAddin(addins_pb2.UnloadAddinRequest(name="slow"), timeout=20)
    waited = time.monotonic() - started
    sender.join(10)
    assert rsp.changed
    assert results == [0x0000]  # the call in flight completed normally
    assert waited >= 0.5, waited  # unload waited for it before stopping the add-in
    log = pacsd.stderr()
    assert log.index("slow store of") < log.index("slow add-in stopped")


def test_addin_log_records_carry_the_association(
    pacsd: PacsdProcess, addins: addins_pb2_grpc.AddinServiceStub
) -> None:
    load(addins, TEST_ADDINS / "slow.py")
    ds = sc_instance()
    assert store(pacsd.dicom_port, ds, calling="LOGGEDAE") == 0
    line = next(line for line in pacsd.stderr().splitlines() if "slow store of" in line)
    # [source association-id calling->called]
    assert "[slow a" in line and "LOGGEDAE->PACSD]" in line, line
