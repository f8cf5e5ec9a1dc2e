"""The DICOM access policy end to end: real pacsd processes, DCMTK and pynetdicom peers.

Unknown and misaddressed peers are rejected with the A-ASSOCIATE-RJ reason DCMTK
prints; an address allow-list keeps a loopback peer out unless it lists loopback;
per-AE permissions refuse services with 0x0124 and keep what is archived from being
overwritten; User Identity is checked against hashed passcodes. The registry's new
fields travel through the control plane, the SDKs and pacsctl.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pydicom
import pytest
from pacsd.admin.v1 import aetitles_pb2, aetitles_pb2_grpc
from pacsd.client import AsyncClient, Client, InvalidArgument
from pacsd.server.passcodes import hash_passcode
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from tests import corpus
from tests.conftest import PacsdProcess, dcmtk, dcmtk_env, run_pacsctl
from tests.integration import dicom_peers
from tests.observability.common import scrape, value

NOT_AUTHORIZED = 0x0124
DUPLICATE = 0x0111


def config(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / f"policy-{abs(hash(text))}.toml"
    path.write_text(text)
    return ["--config", str(path)]


def dcmtk_run(tool: str, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk(tool), *args, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dcmtk_env(),
    )


def echoscu(port: int, calling: str, called: str = "PACSD") -> subprocess.CompletedProcess[str]:
    return dcmtk_run("echoscu", port, "-aet", calling, "-aec", called)


def storescu(
    port: int, calling: str, *files: Path, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return dicom_peers.storescu(port, files, calling=calling, extra=extra, timeout=60)


def blobs(server: PacsdProcess) -> list[Path]:
    return sorted((server.data_dir / "blobs").rglob("*.dcm"))


def spool_leftovers(server: PacsdProcess) -> list[Path]:
    return sorted((server.data_dir / "tmp").glob("*"))


@pytest.fixture
def client(pacsd: PacsdProcess) -> Iterator[Client]:
    with Client(pacsd.endpoint) as c:
        yield c


# -- admission ---------------------------------------------------------------------------


def test_unknown_and_misaddressed_peers_see_the_reason_in_dcmtk(
    start_pacsd: Any, tmp_path: Path
) -> None:
    server = start_pacsd(
        config(tmp_path, "require_known_calling_ae = true\ncheck_called_ae = true\n")
    )
    with Client(server.endpoint) as c:
        c.aetitles.create("KNOWN", "127.0.0.1", 104)

    unknown = echoscu(server.dicom_port, "UNKNOWN")
    assert unknown.returncode != 0
    assert "Calling AE Title Not Recognized" in unknown.stdout + unknown.stderr
    assert "Rejected Permanent" in unknown.stdout + unknown.stderr

    wrong_called = echoscu(server.dicom_port, "KNOWN", called="NOTPACSD")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr

    known = echoscu(server.dicom_port, "KNOWN")
    assert known.returncode == 0, known.stdout + known.stderr

    log = server.stderr()
    assert "calling AE title 'UNKNOWN' is not in the AE registry" in log
    assert "called AE title 'NOTPACSD' is not 'PACSD'" in log


def test_permissive_defaults_admit_unknown_peers(pacsd: PacsdProcess) -> None:
    run = echoscu(pacsd.dicom_port, "ANYBODY", called="ANYTHING")
    assert run.returncode == 0, run.stdout + run.stderr


def test_address_allow_list(pacsd: PacsdProcess, client: Client) -> None:
    # 10.0.0.0/8 is only ever written in the allow-list; every connection is loopback.
    client.aetitles.create("FARAWAY", "127.0.0.1", 104, allowed_addresses=["10.0.0.0/8"])
    client.aetitles.create("NEAR", "127.0.0.1", 104, allowed_addresses=["127.0.0.0/8"])
    client.aetitles.create("BYNAME", "127.0.0.1", 104, allowed_addresses=["localhost"])
    client.aetitles.create("EXACT", "127.0.0.1", 104, allowed_addresses=["127.0.0.1"])

    refused = echoscu(pacsd.dicom_port, "FARAWAY")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    pacsd.wait_for_log("'FARAWAY' may not connect from 127.0.0.1")
    for allowed in ("NEAR", "BYNAME", "EXACT"):
        run = echoscu(pacsd.dicom_port, allowed)
        assert run.returncode == 0, (allowed, run.stdout + run.stderr)

    # The registry is read per association: a change applies to the next one.
    client.aetitles.update("FARAWAY", allowed_addresses=["10.0.0.0/8", "127.0.0.1"])
    assert echoscu(pacsd.dicom_port, "FARAWAY").returncode == 0
    client.aetitles.update("FARAWAY", allowed_addresses=["10.0.0.0/8"])
    assert echoscu(pacsd.dicom_port, "FARAWAY").returncode != 0
    client.aetitles.update("FARAWAY", allowed_addresses=[])  # any address again
    assert echoscu(pacsd.dicom_port, "FARAWAY").returncode == 0


def test_policy_rejections_are_counted_apart(start_pacsd: Any, tmp_path: Path) -> None:
    server = start_pacsd(
        [*config(tmp_path, "require_known_calling_ae = true\n"), "--metrics-port", "0"]
    )
    with Client(server.endpoint) as c:
        listeners = {item.protocol: item for item in c.server.get().listeners}
    port = int(listeners["metrics"].port)
    assert value(scrape(port), "pacsd_associations_rejected_total", reason="policy") == 0
    assert echoscu(server.dicom_port, "NOBODY").returncode != 0
    after = scrape(port)
    assert value(after, "pacsd_associations_rejected_total", reason="policy") == 1
    assert value(after, "pacsd_associations_rejected_total", reason="addin") == 0


# -- permissions -------------------------------------------------------------------------


def test_store_without_permission_is_refused_and_nothing_is_kept(
    pacsd: PacsdProcess, client: Client, tmp_path: Path
) -> None:
    client.aetitles.create("ECHOONLY", "127.0.0.1", 104, permissions=["echo"])
    path = corpus.write(corpus.instance(), tmp_path)

    run = storescu(pacsd.dicom_port, "ECHOONLY", path)
    output = run.stdout + run.stderr
    # DCMTK 3.6.7 has no name for 0x0124 (PS3.7 C.4.1.1.2): "Unknown Status: 0x124".
    assert "Received Store Response (Unknown Status: 0x124)" in output, output
    assert blobs(pacsd) == []
    assert spool_leftovers(pacsd) == []
    assert "C-STORE from ECHOONLY (127.0.0.1) refused with 0x0124: no store permission" in (
        pacsd.stderr()
    )
    assert echoscu(pacsd.dicom_port, "ECHOONLY").returncode == 0

    client.aetitles.update("ECHOONLY", permissions=["echo", "store"])
    run = storescu(pacsd.dicom_port, "ECHOONLY", path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(blobs(pacsd)) == 1


def _associate(port: int, calling: str, *contexts: str, **kw: Any) -> Any:
    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid)
    return ae.associate("127.0.0.1", port, ae_title="PACSD", **kw)


def _study_query() -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    return query


def test_query_retrieve_and_echo_without_permission_are_refused(
    pacsd: PacsdProcess, client: Client, tmp_path: Path
) -> None:
    client.aetitles.create("STOREONLY", "127.0.0.1", 104, permissions=["store"])
    # A C-MOVE destination that exists, so only the permission can stop the move.
    client.aetitles.create("DEST", "127.0.0.1", 9, permissions=[])
    assert storescu(pacsd.dicom_port, "STOREONLY", corpus.write(corpus.instance(), tmp_path))
    assert len(blobs(pacsd)) == 1

    assoc = _associate(
        pacsd.dicom_port,
        "STOREONLY",
        Verification,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
    )
    assert assoc.is_established
    try:
        assert int(assoc.send_c_echo().Status) == NOT_AUTHORIZED
        found = list(assoc.send_c_find(_study_query(), StudyRootQueryRetrieveInformationModelFind))
        assert [int(status.Status) for status, _ in found] == [NOT_AUTHORIZED]
        moved = list(
            assoc.send_c_move(_study_query(), "DEST", StudyRootQueryRetrieveInformationModelMove)
        )
        assert [int(status.Status) for status, _ in moved] == [NOT_AUTHORIZED]
    finally:
        assoc.release()

    ae = AE(ae_title="STOREONLY")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    get_query = Dataset()
    get_query.QueryRetrieveLevel = "PATIENT"
    get_query.PatientID = "P1"
    assoc = ae.associate("127.0.0.1", pacsd.dicom_port, ae_title="PACSD")
    assert assoc.is_established
    try:
        got = list(assoc.send_c_get(get_query, PatientRootQueryRetrieveInformationModelGet))
        assert int(got[-1][0].Status) == NOT_AUTHORIZED
    finally:
        assoc.release()

    # With the permissions, the same requests go through.
    client.aetitles.update("STOREONLY", permissions="all")
    assoc = _associate(
        pacsd.dicom_port, "STOREONLY", Verification, StudyRootQueryRetrieveInformationModelFind
    )
    try:
        assert int(assoc.send_c_echo().Status) == 0
        found = list(assoc.send_c_find(_study_query(), StudyRootQueryRetrieveInformationModelFind))
        assert [int(status.Status) for status, _ in found] == [0xFF00, 0x0000]
    finally:
        assoc.release()
    log = pacsd.stderr()
    for service in ("C-ECHO", "C-FIND", "C-MOVE", "C-GET"):
        assert f"{service} from STOREONLY (127.0.0.1) refused with 0x0124" in log


MPPS = "1.2.840.10008.3.1.2.3.3"
PRINTER = "1.2.840.10008.5.1.1.16"
PRINTER_INSTANCE = "1.2.840.10008.5.1.1.17"  # the well-known Printer SOP Instance
FILM_SESSION = "1.2.840.10008.5.1.1.1"


def _n_statuses(port: int, calling: str) -> dict[str, int]:
    """The status of each DIMSE-N request ``calling`` sends in one association."""
    assoc = _associate(port, calling, MPPS, PRINTER, StorageCommitmentPushModel, FILM_SESSION)
    assert assoc.is_established
    commitment = Dataset()
    commitment.TransactionUID = "1.2.3.99"
    attributes = Dataset()
    attributes.PerformedProcedureStepStatus = "IN PROGRESS"
    try:
        created, _ = assoc.send_n_create(attributes, MPPS, "1.2.3.10")
        changed, _ = assoc.send_n_set(attributes, MPPS, "1.2.3.10")
        got, _ = assoc.send_n_get([0x21100010], PRINTER, PRINTER_INSTANCE)
        acted, _ = assoc.send_n_action(commitment, 1, StorageCommitmentPushModel, "1.2.3.11")
        reported, _ = assoc.send_n_event_report(
            commitment, 1, StorageCommitmentPushModel, "1.2.3.11"
        )
        deleted = assoc.send_n_delete(FILM_SESSION, "1.2.3.12")
        answers = (created, changed, got, acted, reported, deleted)
        services = ("N-CREATE", "N-SET", "N-GET", "N-ACTION", "N-EVENT-REPORT", "N-DELETE")
        return {service: int(rsp.Status) for service, rsp in zip(services, answers, strict=True)}
    finally:
        assoc.release()


def test_n_services_need_their_permission(pacsd: PacsdProcess) -> None:
    """Each DIMSE-N service is refused without ``n-services``, N-DELETE also without
    ``delete``; the add-in answers success to all, so only the policy can refuse."""
    with Client(pacsd.endpoint) as c:
        c.addins.load(Path(__file__).parent.parent / "addins" / "n_services.py")
        c.aetitles.create("NOPE", "127.0.0.1", 104, permissions=["echo", "store"])
        c.aetitles.create("DELETER", "127.0.0.1", 104, permissions=["delete"])
        c.aetitles.create("NSVC", "127.0.0.1", 104, permissions=["n-services"])
        c.aetitles.create("ADMIN", "127.0.0.1", 104, permissions=["n-services", "delete"])
    everything = ("N-CREATE", "N-SET", "N-GET", "N-ACTION", "N-EVENT-REPORT", "N-DELETE")
    refused = dict.fromkeys(everything, NOT_AUTHORIZED)
    allowed = dict.fromkeys(everything, 0x0000)
    assert _n_statuses(pacsd.dicom_port, "NOPE") == refused
    assert _n_statuses(pacsd.dicom_port, "DELETER") == refused
    assert _n_statuses(pacsd.dicom_port, "NSVC") == {**allowed, "N-DELETE": NOT_AUTHORIZED}
    assert _n_statuses(pacsd.dicom_port, "ADMIN") == allowed
    with Client(pacsd.endpoint) as c:
        calls = c.addins.invoke("n_services", "calls")
    # Refused requests never reached the add-in.
    assert calls == {**dict.fromkeys(everything, 2), "N-DELETE": 1}
    log = pacsd.stderr()
    for service in everything:
        assert f"{service} from NOPE (127.0.0.1) refused with 0x0124: no n-services" in log
    assert "N-DELETE from NSVC (127.0.0.1) refused with 0x0124: no delete permission" in log
    assert "N-DELETE from DELETER (127.0.0.1) refused with 0x0124: no n-services permission" in log


def _store(port: int, calling: str, ds: Dataset) -> int:
    assoc = _associate(port, calling, str(ds.SOPClassUID))
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_overwrite_needs_its_permission(pacsd: PacsdProcess, client: Client) -> None:
    client.aetitles.create("MODALITY", "127.0.0.1", 104, permissions=["echo", "store"])
    client.aetitles.create("ADMIN", "127.0.0.1", 104)  # every permission
    first = corpus.instance(patient_name="FIRST^COPY")
    second = corpus.instance(
        patient_name="SECOND^COPY",
        sop_uid=first.SOPInstanceUID,
        study_uid=first.StudyInstanceUID,
        series_uid=first.SeriesInstanceUID,
    )
    third = corpus.instance(
        patient_name="THIRD^COPY",
        sop_uid=first.SOPInstanceUID,
        study_uid=first.StudyInstanceUID,
        series_uid=first.SeriesInstanceUID,
    )
    assert _store(pacsd.dicom_port, "MODALITY", first) == 0x0000
    assert _store(pacsd.dicom_port, "MODALITY", second) == DUPLICATE
    (blob,) = blobs(pacsd)
    assert str(pydicom.dcmread(blob).PatientName) == "FIRST^COPY"
    # The storage add-in's default (overwrite) still holds for a peer allowed to.
    assert _store(pacsd.dicom_port, "ADMIN", third) == 0x0000
    (blob,) = blobs(pacsd)
    assert str(pydicom.dcmread(blob).PatientName) == "THIRD^COPY"


# -- User Identity -------------------------------------------------------------------------

PASSCODE = "wonder land 42"
WRONG = "looking-glass-7"


@pytest.fixture
def identity_server(start_pacsd: Any, tmp_path: Path) -> PacsdProcess:
    # Cheap scrypt parameters keep associations fast; the server reads them from the hash.
    stored = hash_passcode(PASSCODE, n=2**10)
    text = f'require_user_identity = true\n[dicom_users]\nalice = "{stored}"\nscanner = ""\n'
    server: PacsdProcess = start_pacsd(config(tmp_path, text))
    return server


def _identity(kind: int, user: bytes, passcode: bytes | None, response: bool) -> Any:
    item = UserIdentityNegotiation()
    item.user_identity_type = kind
    item.primary_field = user
    if passcode is not None:
        item.secondary_field = passcode
    item.positive_response_requested = response
    return item


def _rejection(assoc: Any) -> tuple[int, int, int]:
    rj = assoc.acceptor.primitive
    return (int(rj.result), int(rj.result_source), int(rj.diagnostic))


def test_user_identity_with_pynetdicom(identity_server: PacsdProcess) -> None:
    port = identity_server.dicom_port
    right = _identity(2, b"alice", PASSCODE.encode(), response=True)
    assoc = _associate(port, "VIEWER", Verification, ext_neg=[right])
    assert assoc.is_established
    try:
        # A positive response was asked for: types 1 and 2 get an empty one.
        assert assoc.acceptor.user_identity is not None
        assert assoc.acceptor.user_identity.server_response == b""
        assert int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()

    username_only = _identity(1, b"scanner", None, response=False)
    assoc = _associate(port, "SCANNER", Verification, ext_neg=[username_only])
    assert assoc.is_established
    assoc.release()

    for item in (
        _identity(2, b"alice", WRONG.encode(), response=True),
        _identity(2, b"mallory", PASSCODE.encode(), response=False),
        _identity(1, b"alice", None, response=False),  # alice has a passcode
    ):
        assoc = _associate(port, "VIEWER", Verification, ext_neg=[item])
        assert assoc.is_rejected
        assert _rejection(assoc) == (1, 1, 1)

    missing = _associate(port, "VIEWER", Verification)
    assert missing.is_rejected
    assert _rejection(missing) == (1, 1, 1)

    # A rejection reaches the peer before its log line is written: wait for each.
    identity_server.wait_for_log("wrong passcode for user 'alice'")
    identity_server.wait_for_log("user 'mallory' unknown")
    log = identity_server.wait_for_log("no user identity given")
    assert PASSCODE not in log and WRONG not in log


def test_user_identity_with_dcmtk_storescu(identity_server: PacsdProcess, tmp_path: Path) -> None:
    path = corpus.write(corpus.instance(), tmp_path)
    ok = storescu(
        identity_server.dicom_port,
        "MODALITY",
        path,
        extra=("--user", "alice", "--password", PASSCODE, "--pos-response"),
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert len(blobs(identity_server)) == 1

    wrong = storescu(
        identity_server.dicom_port,
        "MODALITY",
        path,
        extra=("--user", "alice", "--password", WRONG),
    )
    assert wrong.returncode != 0
    assert "Association Rejected" in wrong.stdout + wrong.stderr
    none = storescu(identity_server.dicom_port, "MODALITY", path)
    assert none.returncode != 0
    assert "Association Rejected" in none.stdout + none.stderr
    assert WRONG not in identity_server.stderr() and PASSCODE not in identity_server.stderr()


# -- control plane, SDKs, pacsctl ---------------------------------------------------------------


def test_control_plane_round_trip(pacsd: PacsdProcess, client: Client) -> None:
    created = client.aetitles.create(
        "CT1",
        "127.0.0.1",
        104,
        allowed_addresses=["10.1.0.0/16", "127.0.0.1"],
        permissions=["store", "echo"],
    ).ae_title
    assert list(created.allowed_addresses) == ["10.1.0.0/16", "127.0.0.1"]
    assert created.HasField("permissions")
    assert sorted(created.permissions.values) == [
        aetitles_pb2.PERMISSION_ECHO,
        aetitles_pb2.PERMISSION_STORE,
    ]
    got = client.aetitles.get("CT1")
    assert got == created

    none = client.aetitles.update("CT1", permissions=[]).ae_title
    assert none.HasField("permissions") and list(none.permissions.values) == []
    every = client.aetitles.update("CT1", permissions="all").ae_title
    assert not every.HasField("permissions")
    kept = client.aetitles.update("CT1", port=105).ae_title
    assert list(kept.allowed_addresses) == ["10.1.0.0/16", "127.0.0.1"]
    assert not kept.HasField("permissions")

    with pytest.raises(InvalidArgument) as bad:
        client.aetitles.update("CT1", allowed_addresses=["10.1.2.3/16"])
    assert bad.value.metadata["field"] == "ae_title.allowed_addresses"
    with pytest.raises(InvalidArgument) as bad:
        client.aetitles.create("CT2", "127.0.0.1", 104, permissions=["fly"])
    assert bad.value.metadata["field"] == "ae_title.permissions"

    # A permission number this server does not know is refused by the server itself.
    with grpc.insecure_channel(pacsd.endpoint) as channel:
        stub = aetitles_pb2_grpc.AETitleServiceStub(channel)
        entry = aetitles_pb2.AETitle(ae_title="CT3", host="127.0.0.1", port=104)
        entry.permissions.values.append(99)  # type: ignore[arg-type]
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateAETitle(aetitles_pb2.CreateAETitleRequest(ae_title=entry), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_async_client_round_trip(pacsd: PacsdProcess) -> None:
    async def run() -> aetitles_pb2.AETitle:
        async with AsyncClient(pacsd.endpoint, timeout=10) as c:
            await c.aetitles.create(
                "ASYNC", "127.0.0.1", 104, allowed_addresses=["localhost"], permissions=["find"]
            )
            result = await c.aetitles.update("ASYNC", permissions=["find", "move"])
            return result.ae_title

    entry = asyncio.run(run())
    assert list(entry.allowed_addresses) == ["localhost"]
    assert sorted(entry.permissions.values) == [
        aetitles_pb2.PERMISSION_FIND,
        aetitles_pb2.PERMISSION_MOVE,
    ]


def _pacsctl_json(server: PacsdProcess, *args: str) -> dict[str, Any]:
    run = run_pacsctl(server, "-w", "json", *args)
    assert run.returncode == 0, (run.stdout, run.stderr)
    doc: dict[str, Any] = json.loads(run.stdout)
    return doc


def test_pacsctl_ae_policy_flags(pacsd: PacsdProcess) -> None:
    doc = _pacsctl_json(
        pacsd,
        "ae",
        "add",
        "US1",
        "127.0.0.1",
        "104",
        "--allow-address",
        "127.0.0.0/8",
        "--allow-address",
        "localhost",
        "--permissions",
        "store,echo",
    )
    assert doc["ae_title"]["allowed_addresses"] == ["127.0.0.0/8", "localhost"]
    assert doc["ae_title"]["permissions"] == ["echo", "store"]

    table = run_pacsctl(pacsd, "ae", "get", "US1")
    assert table.returncode == 0
    assert "| ALLOWED FROM | 127.0.0.0/8,localhost |" in table.stdout
    assert "| PERMISSIONS  | echo,store            |" in table.stdout

    doc = _pacsctl_json(pacsd, "ae", "update", "US1", "--permissions", "none")
    assert doc["ae_title"]["permissions"] == [] and doc["changed"] is True
    doc = _pacsctl_json(pacsd, "ae", "update", "US1", "--permissions", "all", "--any-address")
    assert doc["ae_title"]["permissions"] == "all"
    assert doc["ae_title"]["allowed_addresses"] == []
    doc = _pacsctl_json(pacsd, "ae", "update", "US1", "--allow-address", "127.0.0.1")
    assert doc["ae_title"]["allowed_addresses"] == ["127.0.0.1"]

    listed = run_pacsctl(pacsd, "ae", "list")
    assert "| US1      | 127.0.0.1 | 104  | 127.0.0.1    | all         | -           |" in (
        listed.stdout
    )

    bad = run_pacsctl(pacsd, "ae", "update", "US1", "--permissions", "echo,fly")
    assert bad.returncode == 2
    assert "fly" in bad.stderr
    bad = run_pacsctl(pacsd, "ae", "update", "US1", "--allow-address", "x", "--any-address")
    assert bad.returncode == 2
    bad = run_pacsctl(pacsd, "ae", "add", "US2", "127.0.0.1", "104", "--allow-address", "1.2.3/8")
    assert bad.returncode == 1
    assert "allowed_addresses" in bad.stderr


def test_pacsctl_apply_manages_the_policy_fields(pacsd: PacsdProcess, tmp_path: Path) -> None:
    with Client(pacsd.endpoint) as c:
        c.aetitles.create("OPEN", "127.0.0.1", 104, permissions=["echo"])
    desired = tmp_path / "desired.toml"

    def apply(text: str) -> dict[str, Any]:
        desired.write_text(text)
        return _pacsctl_json(pacsd, "apply", "-f", str(desired))

    wanted = """
        [groups.all.ae_titles.CT1]
        host = "127.0.0.1"
        port = 104
        allowed_addresses = ["localhost", "127.0.0.0/8"]
        permissions = ["store", "echo"]
        [groups.all.ae_titles.OPEN]
        host = "127.0.0.1"
        port = 104
        permissions = "all"
        """
    assert apply(wanted)["changed"] is True
    with Client(pacsd.endpoint) as c:
        ct1, open_ = c.aetitles.get("CT1"), c.aetitles.get("OPEN")
    assert sorted(ct1.allowed_addresses) == ["127.0.0.0/8", "localhost"]
    assert sorted(ct1.permissions.values) == [
        aetitles_pb2.PERMISSION_ECHO,
        aetitles_pb2.PERMISSION_STORE,
    ]
    assert not open_.HasField("permissions")
    # Same sets in another order: nothing to do.
    reordered = wanted.replace('["localhost", "127.0.0.0/8"]', '["127.0.0.0/8", "localhost"]')
    assert apply(reordered.replace('["store", "echo"]', '["echo", "store"]'))["changed"] is False
    assert apply(wanted.replace('["store", "echo"]', '["echo"]'))["changed"] is True
    with Client(pacsd.endpoint) as c:
        assert list(c.aetitles.get("CT1").permissions.values) == [aetitles_pb2.PERMISSION_ECHO]

    desired.write_text(wanted.replace('["store", "echo"]', '["store", "fly"]'))
    bad = run_pacsctl(pacsd, "apply", "-f", str(desired))
    assert bad.returncode != 0
    assert "permissions" in bad.stderr and "fly" in bad.stderr
