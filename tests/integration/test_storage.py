"""The storage add-in over real DICOM: bit-for-bit archive, durability, refusals."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pydicom
import pytest
from google.protobuf import json_format
from pacsd.admin.v1 import addins_pb2, addins_pb2_grpc
from pydicom.uid import generate_uid
from pynetdicom import AE, _config

from tests import corpus
from tests.conftest import PacsdProcess, dcmtk, dcmtk_env
from tests.integration import dicom_peers
from tests.pg import index_url  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[2]


def dataset_bytes(path: Path) -> tuple[str, bytes]:
    """(transfer syntax, the encoded dataset after the file meta) of a Part 10 file."""
    raw = path.read_bytes()
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    group_length = int(meta.FileMetaInformationGroupLength)
    start = 128 + 4 + 12 + group_length  # preamble, DICM, group length element, group
    return str(meta.TransferSyntaxUID), raw[start:]


def index_rows(server: PacsdProcess, url: str = "") -> dict[str, tuple[str, int]]:
    """The index's instance rows, read directly (SQLite file or PostgreSQL ``url``)."""
    query = "SELECT sop_instance_uid, path, size FROM instances"
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url) as pg:
            rows = pg.execute(query).fetchall()
    else:
        path = url.removeprefix("sqlite:///") if url else server.data_dir / "index.db"
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute(query).fetchall()
        finally:
            conn.close()
    return {str(uid): (str(p), int(size)) for uid, p, size in rows}


def blob_files(server: PacsdProcess) -> dict[str, Path]:
    return {p.stem: p for p in (server.data_dir / "blobs").rglob("*.dcm")}


def storescu(
    port: int, *files: Path, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return dicom_peers.storescu(port, files, extra=extra)


def test_storescu_corpus_is_stored_bit_for_bit(
    start_pacsd,  # type: ignore[no-untyped-def]
    index_url: str,  # noqa: F811 - the fixture imported from tests.pg
    tmp_path: Path,
) -> None:
    """On the SQLite index and on a PostgreSQL one."""
    cfg = tmp_path / "index.toml"
    cfg.write_text(f'index_url = "{index_url}"\n')
    pacsd = start_pacsd(["--config", str(cfg)])
    src = tmp_path / "src"
    files = corpus.series_files(src, 3, patient_id="P1", modality="CT", sop_class=corpus.CT_IMAGE)
    files += corpus.series_files(src, 2, patient_id="P2", patient_name="ROE^RICHARD")
    # Past the spool's page-cached head (direct.HEAD), and past its staging buffer.
    files += [
        corpus.write(corpus.instance(patient_id="P4", pixels=side), src) for side in (300, 1100)
    ]
    jpeg = src / "jpeg.dcm"
    rle = src / "rle.dcm"
    for tool, target, args in (("dcmcjpeg", jpeg, ["+e1"]), ("dcmcrle", rle, [])):
        original = corpus.write(corpus.instance(patient_id="P3"), src / "raw", f"{target.stem}.dcm")
        out = subprocess.run(
            [dcmtk(tool), *args, str(original), str(target)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
    for batch, proposal in ((files, ()), ([jpeg], ("-xs",)), ([rle], ("-xr",))):
        out = storescu(pacsd.dicom_port, *batch, extra=proposal)
        text = out.stdout + out.stderr
        assert out.returncode == 0, text
        assert text.count("Received Store Response (Success)") == len(batch), text
        conversions = re.findall(r"Converting transfer syntax: (.+) -> (.+)", text)
        assert all(a == b for a, b in conversions), conversions  # the sender never transcoded
    files += [jpeg, rle]

    stored = blob_files(pacsd)
    rows = index_rows(pacsd, index_url)
    assert set(rows) == set(stored)
    assert len(stored) == len(files)
    for path in files:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        sent_ts, sent = dataset_bytes(path)
        kept_ts, kept = dataset_bytes(stored[uid])
        assert kept_ts == sent_ts, path.name  # no transcoding, compressed stays compressed
        assert kept == sent, f"{path.name} not stored bit for bit"
        assert rows[uid] == (str(stored[uid]), stored[uid].stat().st_size)
    syntaxes = {dataset_bytes(p)[0] for p in stored.values()}
    assert "1.2.840.10008.1.2.4.70" in syntaxes and "1.2.840.10008.1.2.5" in syntaxes


def _send_file_as_is(port: int, path: Path) -> int:
    """C-STORE a file's bytes unparsed; the command takes its UIDs from the file meta,
    so a file can be made to disagree with itself."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ae = AE(ae_title="CRAFTER")
    ae.add_requested_context(
        str(ds.file_meta.MediaStorageSOPClassUID), str(ds.file_meta.TransferSyntaxUID)
    )
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
        assert assoc.is_established
        status = int(assoc.send_c_store(path).Status)
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before
    return status


def _write_as_is(ds: Any, path: Path) -> Path:
    """Write with the file meta exactly as set (pydicom would otherwise fix it)."""
    ds.preamble = b"\0" * 128
    ds.save_as(path, enforce_file_format=False)
    return path


def test_bucket_folders_are_prepared_at_startup(
    start_pacsd,  # type: ignore[no-untyped-def]
) -> None:
    """All 4096 of them, off the serving threads, so a young store's C-STOREs do not
    each wait for a new folder and an fsync of the root (the default; the test suite's
    servers turn it off)."""
    pacsd = start_pacsd(env={"PACSD_PREPARE_BUCKETS": "1"})
    root = pacsd.data_dir / "blobs"
    deadline = time.monotonic() + 20
    while len(os.listdir(root)) < 4096:
        assert time.monotonic() < deadline, f"{len(os.listdir(root))} bucket folders"
        time.sleep(0.05)
    assert sorted(os.listdir(root)) == [f"{n:03x}" for n in range(4096)]
    path = corpus.write(corpus.instance(), pacsd.data_dir.parent / "src")
    out = storescu(pacsd.dicom_port, path)
    assert out.returncode == 0, out.stderr
    assert len(blob_files(pacsd)) == 1
    assert "Traceback" not in pacsd.stderr()


def test_bucket_folders_are_made_as_instances_arrive_when_not_prepared(
    pacsd: PacsdProcess,
) -> None:
    path = corpus.write(corpus.instance(), pacsd.data_dir.parent / "src")
    out = storescu(pacsd.dicom_port, path)
    assert out.returncode == 0, out.stderr
    assert [p.parent.name for p in blob_files(pacsd).values()] == os.listdir(
        pacsd.data_dir / "blobs"
    )
    assert "bucket folders ready" not in pacsd.stderr()


def test_dataset_disagreeing_with_command_is_refused(pacsd: PacsdProcess, tmp_path: Path) -> None:
    ds = corpus.instance()
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # the command will say this
    path = _write_as_is(ds, tmp_path / "mismatch.dcm")
    assert pydicom.dcmread(path).SOPInstanceUID != ds.file_meta.MediaStorageSOPInstanceUID
    assert _send_file_as_is(pacsd.dicom_port, path) == 0xA900
    no_uid = corpus.instance()
    del no_uid.SOPInstanceUID
    no_uid_path = _write_as_is(no_uid, tmp_path / "no-uid.dcm")
    assert _send_file_as_is(pacsd.dicom_port, no_uid_path) in (0xA900, 0xC000)
    assert blob_files(pacsd) == {} and index_rows(pacsd) == {}
    assert list((pacsd.data_dir / "tmp").iterdir()) == []


def test_path_traversal_uid_is_refused_and_nothing_escapes(
    pacsd: PacsdProcess, tmp_path: Path
) -> None:
    ds = corpus.instance(sop_uid="1.2.3/../../x")
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3/../../x"
    path = _write_as_is(ds, tmp_path / "evil.dcm")
    before = set(tmp_path.parent.rglob("x*"))
    assert _send_file_as_is(pacsd.dicom_port, path) == 0xA900
    assert set(tmp_path.parent.rglob("x*")) == before
    assert blob_files(pacsd) == {} and index_rows(pacsd) == {}


def _store(port: int, ds: Any) -> int:
    ae = AE(ae_title="DUPER")
    ae.add_requested_context(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
    assert assoc.is_established
    status = int(assoc.send_c_store(ds).Status)
    assoc.release()
    return status


@pytest.mark.parametrize(
    ("policy", "second_status", "kept"),
    [("overwrite", 0x0000, "second"), ("reject", 0x0111, "first"), ("keep", 0x0000, "first")],
)
def test_duplicate_policy(
    start_pacsd, tmp_path: Path, policy: str, second_status: int, kept: str
) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "dup.toml"
    cfg.write_text(f'[addins.storage.settings]\nduplicates = "{policy}"\n')
    server = start_pacsd(["--config", str(cfg)])
    first = corpus.instance(patient_name="FIRST^ONE")
    second = corpus.instance(
        patient_name="SECOND^ONE",
        sop_uid=first.SOPInstanceUID,
        study_uid=first.StudyInstanceUID,
        series_uid=first.SeriesInstanceUID,
    )
    assert _store(server.dicom_port, first) == 0x0000
    assert _store(server.dicom_port, second) == second_status
    (blob,) = blob_files(server).values()
    assert str(pydicom.dcmread(blob).PatientName) == (
        "SECOND^ONE" if kept == "second" else "FIRST^ONE"
    )
    assert len(index_rows(server)) == 1


def test_instance_stored_reaches_observers_after_commit(
    pacsd: PacsdProcess, tmp_path: Path
) -> None:
    with grpc.insecure_channel(pacsd.endpoint) as channel:
        stub = addins_pb2_grpc.AddinServiceStub(channel)
        stub.LoadAddin(
            addins_pb2.LoadAddinRequest(name=str(ROOT / "tests/addins/stored_watch.py")), timeout=10
        )
        files = corpus.series_files(tmp_path, 2)
        assert storescu(pacsd.dicom_port, *files).returncode == 0
        rsp = stub.InvokeCommand(
            addins_pb2.InvokeCommandRequest(name="stored_watch", command="seen"), timeout=5
        )
    seen = json_format.MessageToDict(rsp.result)["seen"]
    rows = index_rows(pacsd)
    assert {e["sop_instance_uid"] for e in seen} == set(rows)
    for event in seen:
        assert event["calling_ae"] == "MODALITY"
        assert Path(event["path"]).is_file()


@pytest.mark.parametrize("journal_mb", ["1", "8"])
def test_full_disk_answers_a700_leaves_nothing_and_recovers(  # type: ignore[no-untyped-def]
    start_pacsd, tmp_path: Path, journal_mb: str
) -> None:
    """With a 1 MiB store journal; and with the default 8 MiB, which does not fit the
    6 MB file system: the server then starts without one (and says so)."""
    mount = tmp_path / "small"
    mount.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, f"tmpfs mount needed for this test: {out.stderr}"
    try:
        server = start_pacsd(
            ["--data-dir", str(mount / "data")], env={"PACSD_STORE_JOURNAL_MB": journal_mb}
        )
        journals = list((mount / "data" / "journal").glob("*.journal"))
        if journal_mb == "8":
            assert not journals
            assert "store journal not created" in server.stderr()
        else:
            assert len(journals) == 1
        # Fill the file system so that about 1.5 MB remain.
        free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
        ballast = mount / "ballast"
        ballast.write_bytes(b"\0" * max(free - 1_500_000, 0))
        statuses = []
        for _ in range(12):
            statuses.append(_store(server.dicom_port, corpus.instance(pixels=512)))  # ~256 kB
            if statuses[-1] != 0:
                break
        assert statuses[-1] == 0xA700, [hex(s) for s in statuses]
        stored = sum(1 for s in statuses if s == 0)
        assert stored >= 1
        assert list((mount / "data" / "tmp").iterdir()) == []  # nothing partial left
        rows = index_rows(server)
        assert set(rows) == set(blob_files(server)) and len(rows) == stored
        ballast.unlink()
        assert _store(server.dicom_port, corpus.instance(pixels=512)) == 0x0000
        assert len(index_rows(server)) == stored + 1
        server.signal(signal.SIGTERM)
        assert server.wait(20) == 0
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_kill_9_during_storescu_loses_nothing_acknowledged(start_pacsd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    server = start_pacsd(["--data-dir", str(data)])
    src = tmp_path / "src"
    files = corpus.series_files(src, 500, pixels=96)
    uid_of = {
        str(p): str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files
    }
    sender = subprocess.Popen(
        [
            dcmtk("storescu"),
            "-v",
            "-aec",
            "PACSD",
            "127.0.0.1",
            str(server.dicom_port),
            *map(str, files),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dcmtk_env(),
    )
    assert sender.stdout is not None
    acknowledged: list[str] = []
    current = ""
    deadline = time.monotonic() + 60
    for line in sender.stdout:
        if m := re.search(r"Sending file: (.+)$", line.strip()):
            current = m.group(1)
        elif "Received Store Response (Success)" in line:
            acknowledged.append(uid_of[current])
            if len(acknowledged) == 150:
                server.proc.send_signal(signal.SIGKILL)
        if time.monotonic() > deadline:
            break
    sender.wait(30)
    server.wait(10)
    assert 150 <= len(acknowledged) < 500
    restarted = start_pacsd(["--data-dir", str(data)])
    rows = index_rows(restarted)
    files_now = blob_files(restarted)
    missing = [uid for uid in acknowledged if uid not in rows or uid not in files_now]
    assert not missing, f"{len(missing)} acknowledged instances lost"
    assert set(rows) == set(files_now)  # the index matches the files
    assert list((data / "tmp").iterdir()) == []  # no orphan partial file


def test_nodes_sharing_a_postgresql_index_keep_each_others_rows(
    start_pacsd,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Reconcile at startup drops rows whose file is gone, but only its own node's:
    a second node with an empty blob store must not erase the first node's instances."""
    from tests.pg import fresh_database

    with fresh_database() as url:
        cfg = tmp_path / "shared.toml"
        cfg.write_text(f'index_url = "{url}"\n')
        node_a = start_pacsd(["--config", str(cfg), "--data-dir", str(tmp_path / "a")])
        files = corpus.series_files(tmp_path / "src", 3)
        assert storescu(node_a.dicom_port, *files).returncode == 0
        node_b = start_pacsd(["--config", str(cfg), "--data-dir", str(tmp_path / "b")])
        node_b.signal(signal.SIGTERM)
        assert node_b.wait(20) == 0
        node_b = start_pacsd(["--config", str(cfg), "--data-dir", str(tmp_path / "b")])
        import psycopg

        with psycopg.connect(url) as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM instances").fetchone()  # type: ignore[misc]
        assert count == 3
        for server in (node_a, node_b):
            server.signal(signal.SIGTERM)
            assert server.wait(20) == 0


def test_storescu_with_nagle_on_never_waits_for_a_delayed_ack(
    pacsd: PacsdProcess, tmp_path: Path
) -> None:
    """Debian's storescu keeps Nagle on by default: each data set PDU waits until the
    command PDU before it is acknowledged. pacsd acknowledges a PDU at once whenever
    more of its message may follow, so that wait is never the ~40 ms of a delayed ACK:
    25 instances with Nagle on take about as long as with it off (25 stalls would add
    a second)."""
    files = [corpus.write(corpus.instance(pixels=48), tmp_path / "src") for _ in range(25)]
    took = {}
    for name, env in (
        ("nodelay", dcmtk_env()),
        ("nagle", {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}),
    ):
        start = time.monotonic()
        out = subprocess.run(
            [dcmtk("storescu"), "-aec", "PACSD", "127.0.0.1", str(pacsd.dicom_port)]
            + [str(f) for f in files],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        took[name] = time.monotonic() - start
        assert out.returncode == 0, out.stderr
    assert took["nagle"] < took["nodelay"] + 0.4, took
    assert len(index_rows(pacsd)) == 25
