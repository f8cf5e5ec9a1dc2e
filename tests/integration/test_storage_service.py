"""The StorageService end to end: a real pacsd, a corpus stored with DCMTK storescu,
pacsctl, and ``pacsd index rebuild``.

Every expected number is computed from what the test generated and from the files
pacsd wrote under DATA_DIR/blobs, never from the server's own answers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from pacsd.admin.v1 import storage_pb2, storage_pb2_grpc
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import PacsdProcess, console_script, dcmtk, dcmtk_env, run_pacsctl
from tests.pg import fresh_database

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

#: (patient ID, patient name, study date, accession, description, [(modality, instances)])
PLAN: tuple[tuple[str, str, str, str, str, tuple[tuple[str, int], ...]], ...] = (
    ("P1", "Doe^Jane", "20230115", "ACC1", "CT chest", (("CT", 3), ("CT", 2))),
    ("P1", "Doe^Jane", "20240301", "ACC2", "MR brain", (("MR", 2), ("SR", 1))),
    ("P2", "Roe^Rick", "20240615", "ACC3", "Follow-up", (("CT", 1), ("MR", 2))),
)


# -- the corpus ------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    path: Path
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str


@dataclass(frozen=True)
class Study:
    uid: str
    patient_id: str
    patient_name: str
    date: str
    accession: str
    description: str
    series: tuple[str, ...]
    modalities: tuple[str, ...]


@dataclass
class Corpus:
    instances: list[Instance]
    studies: list[Study]  # in PLAN order

    @property
    def files(self) -> list[Path]:
        return [i.path for i in self.instances]

    def of_study(self, uid: str) -> list[Instance]:
        return [i for i in self.instances if i.study_uid == uid]

    def of_series(self, uid: str) -> list[Instance]:
        return [i for i in self.instances if i.series_uid == uid]


def instance_file(
    folder: Path,
    *,
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    modality: str,
    series_number: int,
    instance_number: int,
    study_date: str = "",
    accession: str = "",
    description: str = "",
) -> Instance:
    """A Secondary Capture instance file (no pixel data: the archive does not care)."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    if study_date:
        ds.StudyDate = study_date
    ds.AccessionNumber = accession
    ds.StudyDescription = description
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return Instance(path, patient_id, study_uid, series_uid, ds.SOPInstanceUID, modality)


def make_corpus(folder: Path) -> Corpus:
    """2 patients, 3 studies, 2 series each, 11 instances; dates and modalities vary."""
    folder.mkdir(parents=True, exist_ok=True)
    instances: list[Instance] = []
    studies: list[Study] = []
    for patient_id, name, date, accession, description, series_plan in PLAN:
        study_uid = generate_uid()
        series_uids = []
        for number, (modality, count) in enumerate(series_plan, start=1):
            series_uid = generate_uid()
            series_uids.append(series_uid)
            for n in range(1, count + 1):
                instances.append(
                    instance_file(
                        folder,
                        patient_id=patient_id,
                        patient_name=name,
                        study_uid=study_uid,
                        series_uid=series_uid,
                        modality=modality,
                        series_number=number,
                        instance_number=n,
                        study_date=date,
                        accession=accession,
                        description=description,
                    )
                )
        modalities = tuple(sorted({m for m, _ in series_plan}))
        studies.append(
            Study(
                study_uid,
                patient_id,
                name,
                date,
                accession,
                description,
                tuple(series_uids),
                modalities,
            )
        )
    return Corpus(instances, studies)


def storescu(server: PacsdProcess, files: list[Path]) -> None:
    """Send ``files`` in one association with DCMTK; every C-STORE must succeed."""
    run = subprocess.run(
        [
            dcmtk("storescu"),
            "-aet",
            "MODALITY",
            "-aec",
            server.ae_title,
            "127.0.0.1",
            str(server.dicom_port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dcmtk_env(),
    )
    assert run.returncode == 0, (run.stdout, run.stderr, server.stderr())


def blob(data_dir: Path, sop_uid: str) -> Path | None:
    """The file pacsd stored for an instance, found on disk (not through the server)."""
    found = list((data_dir / "blobs").glob(f"*/{sop_uid}.dcm"))
    assert len(found) <= 1
    return found[0] if found else None


def blob_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "blobs").glob("*/*.dcm"))


def stored_size(data_dir: Path, instances: list[Instance]) -> int:
    total = 0
    for inst in instances:
        path = blob(data_dir, inst.sop_uid)
        assert path is not None, f"{inst.sop_uid} is not stored"
        total += path.stat().st_size
    return total


def pacsctl_json(server: PacsdProcess | str, *args: str, expect: int = 0) -> dict[str, Any]:
    """``pacsctl -w json ...``: the parsed stdout, or the parsed stderr on an error."""
    run = run_pacsctl(server, "-w", "json", *args)
    assert run.returncode == expect, (run.returncode, run.stdout, run.stderr)
    text = run.stdout if expect == 0 else run.stderr
    return json.loads(text)


def stats(server: PacsdProcess) -> dict[str, Any]:
    return pacsctl_json(server, "storage", "stats")["stats"]


def study_uids(server: PacsdProcess, *args: str) -> list[str]:
    doc = pacsctl_json(server, "storage", "studies", "--limit", "0", *args)
    assert doc["total_size"] == len(doc["studies"])
    return [s["study_instance_uid"] for s in doc["studies"]]


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    return make_corpus(tmp_path / "corpus")


@pytest.fixture
def loaded(pacsd: PacsdProcess, corpus: Corpus) -> PacsdProcess:
    """The default pacsd with the corpus stored in it."""
    storescu(pacsd, corpus.files)
    return pacsd


# -- stats -----------------------------------------------------------------------------


def test_stats_counts_and_bytes_are_exact(loaded: PacsdProcess, corpus: Corpus) -> None:
    files = blob_files(loaded.data_dir)
    assert len(files) == 11
    assert stats(loaded) == {
        "patients": 2,
        "studies": 3,
        "series": 6,
        "instances": 11,
        "bytes": sum(p.stat().st_size for p in files),
        "data_dir": str(loaded.data_dir.resolve()),
        "index_backend": "sqlite",
    }
    assert stored_size(loaded.data_dir, corpus.instances) == sum(p.stat().st_size for p in files)

    table = run_pacsctl(loaded, "storage", "stats")
    assert table.returncode == 0, table.stderr
    rows = {
        cells[0]: cells[1]
        for line in table.stdout.splitlines()
        if (cells := [c.strip() for c in line.strip("|").split("|")]) and len(cells) == 2
    }
    assert rows["INSTANCES"] == "11"
    assert rows["PATIENTS"] == "2"
    assert rows["INDEX"] == "sqlite"


def test_stats_of_an_empty_archive(pacsd: PacsdProcess) -> None:
    got = stats(pacsd)
    assert [got[k] for k in ("patients", "studies", "series", "instances", "bytes")] == [0] * 5


# -- listing ---------------------------------------------------------------------------


def test_studies_are_summarised_newest_first(loaded: PacsdProcess, corpus: Corpus) -> None:
    doc = pacsctl_json(loaded, "storage", "studies")
    assert doc["total_size"] == 3
    by_date = sorted(corpus.studies, key=lambda s: s.date, reverse=True)
    assert [s["study_instance_uid"] for s in doc["studies"]] == [s.uid for s in by_date]
    for got, want in zip(doc["studies"], by_date, strict=True):
        members = corpus.of_study(want.uid)
        assert got == {
            "study_instance_uid": want.uid,
            "patient_id": want.patient_id,
            "patient_name": want.patient_name,
            "study_date": want.date,
            "study_description": want.description,
            "accession_number": want.accession,
            "modalities": list(want.modalities),
            "series": 2,
            "instances": len(members),
            "bytes": stored_size(loaded.data_dir, members),
        }

    table = run_pacsctl(loaded, "storage", "studies")
    assert table.returncode == 0, table.stderr
    assert "STUDY INSTANCE UID" in table.stdout
    assert all(s.uid in table.stdout for s in corpus.studies)
    assert "Roe^Rick" in table.stdout
    assert "shown" not in table.stdout  # nothing was cut


def test_studies_filters(loaded: PacsdProcess, corpus: Corpus) -> None:
    ct1, mr2, fu3 = (s.uid for s in corpus.studies)
    assert study_uids(loaded, "--patient-id", "P1") == [mr2, ct1]
    assert study_uids(loaded, "--patient-id", "P2") == [fu3]
    assert study_uids(loaded, "--patient-id", "P3") == []
    assert study_uids(loaded, "--from", "20240101") == [fu3, mr2]
    assert study_uids(loaded, "--to", "20231231") == [ct1]
    # Both bounds are inclusive.
    assert study_uids(loaded, "--from", "20240301", "--to", "20240301") == [mr2]
    assert study_uids(loaded, "--from", "20240302", "--to", "20240614") == []
    assert study_uids(loaded, "--modality", "CT") == [fu3, ct1]
    assert study_uids(loaded, "--modality", "MR") == [fu3, mr2]
    assert study_uids(loaded, "--modality", "SR") == [mr2]
    assert study_uids(loaded, "--modality", "US") == []
    assert study_uids(loaded, "--patient-id", "P1", "--modality", "MR") == [mr2]
    assert study_uids(loaded, "--patient-id", "P1", "--from", "20240101", "--modality", "CT") == []

    empty = run_pacsctl(loaded, "storage", "studies", "--modality", "US")
    assert (empty.returncode, empty.stdout.strip()) == (0, "no studies")


def test_studies_limit_and_bad_dates(loaded: PacsdProcess, corpus: Corpus) -> None:
    doc = pacsctl_json(loaded, "storage", "studies", "--limit", "2")
    assert doc["total_size"] == 3
    assert [s["study_instance_uid"] for s in doc["studies"]] == [
        corpus.studies[2].uid,
        corpus.studies[1].uid,
    ]
    table = run_pacsctl(loaded, "storage", "studies", "--limit", "1")
    assert table.returncode == 0, table.stderr
    assert "1 of 3 studies shown" in table.stdout
    assert corpus.studies[2].uid in table.stdout
    assert corpus.studies[0].uid not in table.stdout

    for args in (["--from", "2024-01-01"], ["--to", "20240230"], ["--limit", "-1"]):
        bad = run_pacsctl(loaded, "storage", "studies", *args)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert bad.stdout == ""


def test_pagination_over_the_wire(loaded: PacsdProcess, corpus: Corpus) -> None:
    """Page tokens as any gRPC client sees them: tied to their filters, validated."""
    newest_first = [s.uid for s in sorted(corpus.studies, key=lambda s: s.date, reverse=True)]
    with grpc.insecure_channel(loaded.endpoint) as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        seen, token, pages = [], "", 0
        while True:
            rsp = stub.ListStudies(
                storage_pb2.ListStudiesRequest(page_size=1, page_token=token), timeout=10
            )
            pages += 1
            assert rsp.total_size == 3
            seen += [s.study_instance_uid for s in rsp.studies]
            token = rsp.next_page_token
            if not token:
                break
        assert (seen, pages) == (newest_first, 3)

        first = stub.ListStudies(storage_pb2.ListStudiesRequest(page_size=2), timeout=10)
        assert len(first.studies) == 2 and first.next_page_token
        last = stub.ListStudies(
            storage_pb2.ListStudiesRequest(page_size=2, page_token=first.next_page_token),
            timeout=10,
        )
        assert [s.study_instance_uid for s in last.studies] == newest_first[2:]
        assert last.next_page_token == ""

        def error(request: storage_pb2.ListStudiesRequest) -> tuple[grpc.StatusCode, str, str]:
            with pytest.raises(grpc.RpcError) as err:
                stub.ListStudies(request, timeout=10)
            status = rpc_status.from_call(err.value)
            assert status is not None
            info = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info)
            return err.value.code(), info.reason, info.metadata["field"]

        bad_token = (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", "page_token")
        # A token means an offset under its own filters only.
        assert (
            error(
                storage_pb2.ListStudiesRequest(
                    page_size=2, page_token=first.next_page_token, patient_id="P1"
                )
            )
            == bad_token
        )
        assert error(storage_pb2.ListStudiesRequest(page_token="bm9wZQ==")) == bad_token
        assert error(storage_pb2.ListStudiesRequest(page_token="%%%")) == bad_token
        assert error(storage_pb2.ListStudiesRequest(page_size=-1)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "page_size",
        )
        assert error(storage_pb2.ListStudiesRequest(study_date_from="2024-01-01")) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "study_date_from",
        )
        assert error(storage_pb2.ListStudiesRequest(study_date_to="20241301")) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "study_date_to",
        )
        assert error(
            storage_pb2.ListStudiesRequest(study_date_from="20240301", study_date_to="20240101")
        ) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "study_date_to")


def test_reflection_lists_the_storage_service(pacsd: PacsdProcess) -> None:
    with grpc.insecure_channel(pacsd.endpoint) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert "pacsd.admin.v1.StorageService" in services


# -- deleting --------------------------------------------------------------------------


def test_delete_series_then_study(loaded: PacsdProcess, corpus: Corpus) -> None:
    data = loaded.data_dir
    mr_study = corpus.studies[1]  # P1: MR (2) + SR (1)
    mr_series = corpus.of_series(mr_study.series[0])
    mr_bytes = stored_size(data, mr_series)
    total_before = stats(loaded)["bytes"]

    doc = pacsctl_json(loaded, "storage", "delete", "series", mr_study.series[0])
    assert doc == {"changed": True, "instances_deleted": 2, "bytes_deleted": mr_bytes}
    assert all(blob(data, i.sop_uid) is None for i in mr_series)
    assert len(blob_files(data)) == 9
    after = stats(loaded)
    assert (after["patients"], after["studies"], after["series"], after["instances"]) == (
        2,
        3,
        5,
        9,
    )
    assert after["bytes"] == total_before - mr_bytes
    summary = pacsctl_json(loaded, "storage", "studies", "--patient-id", "P1")["studies"]
    assert [(s["modalities"], s["series"], s["instances"]) for s in summary] == [
        (["SR"], 1, 1),
        (["CT"], 2, 5),
    ]

    again = pacsctl_json(loaded, "storage", "delete", "series", mr_study.series[0])
    assert again == {"changed": False, "instances_deleted": 0, "bytes_deleted": 0}
    text = run_pacsctl(loaded, "storage", "delete", "series", mr_study.series[0])
    assert text.returncode == 0
    assert text.stdout.strip() == f"series {mr_study.series[0]} is not stored (no change)"

    # The only study of P2: the patient goes with it.
    p2 = corpus.studies[2]
    p2_instances = corpus.of_study(p2.uid)
    p2_bytes = stored_size(data, p2_instances)
    done = run_pacsctl(loaded, "storage", "delete", "study", p2.uid)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"study {p2.uid} deleted: 3 instances, ")
    assert all(blob(data, i.sop_uid) is None for i in p2_instances)
    after = stats(loaded)
    assert (after["patients"], after["studies"], after["series"], after["instances"]) == (
        1,
        2,
        3,
        6,
    )
    assert after["bytes"] == total_before - mr_bytes - p2_bytes
    assert study_uids(loaded) == [mr_study.uid, corpus.studies[0].uid]
    assert pacsctl_json(loaded, "storage", "delete", "study", p2.uid) == {
        "changed": False,
        "instances_deleted": 0,
        "bytes_deleted": 0,
    }

    # The SR series' only instance: the series, then the emptied study, go too.
    sr = corpus.of_series(mr_study.series[1])[0]
    sr_size = stored_size(data, [sr])
    assert pacsctl_json(loaded, "storage", "delete", "instance", sr.sop_uid) == {
        "changed": True,
        "instances_deleted": 1,
        "bytes_deleted": sr_size,
    }
    assert blob(data, sr.sop_uid) is None
    assert study_uids(loaded) == [corpus.studies[0].uid]
    assert pacsctl_json(loaded, "storage", "delete", "instance", sr.sop_uid)["changed"] is False
    left = stats(loaded)
    assert (left["patients"], left["studies"], left["series"], left["instances"]) == (1, 1, 2, 5)
    assert left["bytes"] == sum(p.stat().st_size for p in blob_files(data))


def test_invalid_uid_is_refused_and_nothing_is_deleted(
    loaded: PacsdProcess, corpus: Corpus
) -> None:
    before = stats(loaded)
    for level, field in (
        ("study", "study_instance_uid"),
        ("series", "series_instance_uid"),
        ("instance", "sop_instance_uid"),
    ):
        for uid in ("1.2.abc", "1..2", "../1.2", "1." + "2" * 63):
            err = pacsctl_json(loaded, "storage", "delete", level, uid, expect=1)["error"]
            assert err["code"] == "INVALID_ARGUMENT", (level, uid, err)
            assert err["reason"] == "INVALID_UID"
            assert err["metadata"] == {"field": field}
        missing = pacsctl_json(loaded, "storage", "delete", level, "", expect=1)["error"]
        assert (missing["reason"], missing["metadata"]) == ("INVALID_ARGUMENT", {"field": field})

    text = run_pacsctl(loaded, "storage", "delete", "study", "1.2.abc")
    assert text.returncode == 1
    assert text.stdout == ""
    lines = text.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("pacsctl: error: ")
    assert lines[0].endswith("(INVALID_ARGUMENT/INVALID_UID)")

    usage = run_pacsctl(loaded, "storage", "delete", "patient", corpus.studies[0].uid)
    assert usage.returncode == 2
    assert stats(loaded) == before
    assert len(blob_files(loaded.data_dir)) == 11


# -- pacsd index rebuild and the data-directory lock ------------------------------------


def pacsd_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("pacsd"), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def shut_down(server: PacsdProcess) -> None:
    run = run_pacsctl(server, "shutdown", "--grace", "0")
    assert run.returncode == 0, run.stderr
    assert server.wait() == 0


def test_index_rebuild_restores_the_lost_index(
    start_pacsd: Callable[..., PacsdProcess], corpus: Corpus
) -> None:
    server = start_pacsd()
    storescu(server, corpus.files)
    data = server.data_dir
    stats_before = stats(server)
    studies_before = pacsctl_json(server, "storage", "studies")
    assert stats_before["instances"] == 11

    # Refused while the server holds the data directory, also under another spelling.
    for args, cwd in (
        (["--data-dir", str(data)], None),
        (["--data-dir", data.name], data.parent),
    ):
        busy = pacsd_cli("index", "rebuild", *args, cwd=cwd)
        assert busy.returncode == 1, (busy.stdout, busy.stderr)
        assert busy.stdout == ""
        assert len(busy.stderr.splitlines()) == 1, busy.stderr
        assert str(data.resolve() / "pacsd.lock") in busy.stderr
        assert f"pid {server.proc.pid}" in busy.stderr
    assert stats(server) == stats_before  # and the index was not touched

    shut_down(server)
    lost = sorted(data.glob("index.db*"))
    assert lost, "the index is expected in DATA_DIR/index.db"
    for path in lost:
        path.unlink()

    rebuilt = pacsd_cli("index", "rebuild", "--data-dir", str(data))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout == "rebuilt 11 instances\n"
    assert (data / "index.db").exists()

    again = start_pacsd(["--data-dir", str(data)])
    assert stats(again) == stats_before
    assert pacsctl_json(again, "storage", "studies") == studies_before
    # Nothing had to be repaired at startup: the rebuild left index and files agreeing.
    assert "reconciled" not in again.stderr()


def test_index_rebuild_drops_rows_of_missing_files(
    start_pacsd: Callable[..., PacsdProcess], corpus: Corpus, tmp_path: Path
) -> None:
    server = start_pacsd()
    storescu(server, corpus.files)
    data = server.data_dir
    shut_down(server)

    gone = corpus.studies[2]
    for inst in corpus.of_study(gone.uid):
        path = blob(data, inst.sop_uid)
        assert path is not None
        path.unlink()
    config = tmp_path / "rebuild.toml"
    config.write_text(f'data_dir = "{data}"\n')
    rebuilt = pacsd_cli("index", "rebuild", "--config", str(config))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout == "rebuilt 8 instances\n"

    again = start_pacsd(["--data-dir", str(data)])
    after = stats(again)
    assert (after["patients"], after["studies"], after["instances"]) == (1, 2, 8)
    assert gone.uid not in study_uids(again)


def test_index_rebuild_of_a_missing_data_dir_fails(tmp_path: Path) -> None:
    run = pacsd_cli("index", "rebuild", "--data-dir", str(tmp_path / "nope"))
    assert run.returncode == 1
    assert run.stderr.strip() == f"pacsd: error: data directory {tmp_path / 'nope'} does not exist"
    assert not (tmp_path / "nope").exists()


def test_second_server_on_the_same_data_dir_is_refused(
    start_pacsd: Callable[..., PacsdProcess],
) -> None:
    first = start_pacsd()
    data = first.data_dir
    second = pacsd_cli("serve", "--dicom-port", "0", "--control-port", "0", "--data-dir", str(data))
    assert second.returncode == 1, (second.stdout, second.stderr)
    assert second.stdout == ""
    lines = second.stderr.splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("pacsd: error: ")
    assert str(data.resolve() / "pacsd.lock") in lines[0]
    assert f"pid {first.proc.pid}" in lines[0]
    # The first one is unharmed.
    assert run_pacsctl(first, "health").returncode == 0

    # The kernel drops the lock with its holder, even one killed with SIGKILL.
    first.signal(signal.SIGKILL)
    first.wait()
    third = start_pacsd(["--data-dir", str(data)])
    assert stats(third)["data_dir"] == str(data.resolve())
    shut_down(third)
    # And after a clean exit too.
    fourth = start_pacsd(["--data-dir", str(data)])
    assert run_pacsctl(fourth, "health").returncode == 0


def test_postgresql_index_backend(start_pacsd: Callable[..., PacsdProcess], corpus: Corpus) -> None:
    """The same service over a PostgreSQL index: stats, filters, deletes and rebuild."""
    with fresh_database("pacsd_storage_svc") as url:
        env = {"PACSD_INDEX_URL": url}
        server = start_pacsd(env=env)
        storescu(server, corpus.files)
        data = server.data_dir
        got = stats(server)
        assert got["index_backend"] == "postgresql"
        assert (got["patients"], got["studies"], got["series"], got["instances"]) == (2, 3, 6, 11)
        assert got["bytes"] == sum(p.stat().st_size for p in blob_files(data))
        ct1, mr2, fu3 = (s.uid for s in corpus.studies)
        assert study_uids(server) == [fu3, mr2, ct1]
        assert study_uids(server, "--to", "20240301", "--modality", "MR") == [mr2]

        series = corpus.studies[2].series[1]
        size = stored_size(data, corpus.of_series(series))
        doc = pacsctl_json(server, "storage", "delete", "series", series)
        assert doc == {"changed": True, "instances_deleted": 2, "bytes_deleted": size}
        assert pacsctl_json(server, "storage", "delete", "series", series)["changed"] is False
        # The last study of P2: its patient row goes too.
        p2_size = stored_size(data, corpus.of_study(fu3)[:1])
        doc = pacsctl_json(server, "storage", "delete", "study", fu3)
        assert doc == {"changed": True, "instances_deleted": 1, "bytes_deleted": p2_size}
        before = stats(server)
        assert (before["patients"], before["studies"], before["instances"]) == (1, 2, 8)
        shut_down(server)

        rebuilt = subprocess.run(
            [console_script("pacsd"), "index", "rebuild", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
        )
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert rebuilt.stdout == "rebuilt 8 instances\n"
        again = start_pacsd(["--data-dir", str(data)], env=env)
        assert stats(again) == before
