"""Query/Retrieve end to end: DCMTK and pynetdicom peers against a real pacsd.

A corpus is built at test time with pydicom (wildcard-relevant names and IDs, dates on
both sides of a range, a name in ISO_IR 192 and one in ISO_IR 100, JPEG lossless and
RLE instances made with dcmcjpeg/dcmcrle, a 150-instance series) and sent with DCMTK's
storescu. Then findscu, movescu and getscu (and pynetdicom where DCMTK cannot do the
job: C-CANCEL timing, the Failed SOP Instance UID List) check exact matches, returned
values, computed counts, statuses and bit-identical retrieval.

Everything runs twice: with the SQLite index and with a PostgreSQL index in a fresh
database (``tests/pg.py``; an unreachable PostgreSQL fails, never skips).
"""

from __future__ import annotations

import re
import struct
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pacsd.addin.testing import RunningServer, start_server
from pacsd.client import Client
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    RLELossless,
)
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.conftest import dcmtk, dcmtk_env, run_pacsctl
from tests.integration.dicom_peers import storescp
from tests.pg import ENGINES, engine_url

ROOT = "1.2.826.0.1.3680043.10.543.7"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
#: max_results in the server's configuration file; the 150-instance series exceeds it.
CONFIGURED_CAP = 100
MANY = 150


def uid(*parts: int) -> str:
    return ".".join([ROOT, *(str(p) for p in parts)])


# pid, name, charset, study, date, time, accession, description, series, encoding
# series: (number, modality, instances)
STUDIES: list[tuple[Any, ...]] = [
    ("PAT001", "DOE^JOHN", "", 1, "20240115", "101500", "ACC001", "CT HEAD", [(1, "CT", 2), (2, "MR", 1)], "plain"),  # noqa: E501
    ("PAT001", "DOE^JOHN", "", 2, "20240210", "083000", "ACC002", "CT CHEST", [(3, "CT", 1)], "plain"),  # noqa: E501
    ("PAT002", "DOE^JANE", "", 3, "20231231", "", "ACC003", "MR KNEE", [(4, "MR", 1)], "plain"),
    ("PAT003", "DOEHRING^KARL", "", 4, "20240131", "", "ACC004", "", [(5, "CT", 1)], "plain"),
    ("PAT_1%", "PERCENT^PAT", "", 5, "20240101", "", "ACC_1%", "", [(6, "OT", 1)], "plain"),
    ("PATX1Z", "UNDERSCORE^PAT", "", 6, "20240201", "", "ACCX1Z", "", [(7, "OT", 1)], "plain"),
    ("PATUTF8", "MÜLLER^HANS", "ISO_IR 192", 7, "20240120", "", "", "", [(8, "MR", 1)], "plain"),
    ("PATLATIN1", "GÓMEZ^JOSÉ", "ISO_IR 100", 8, "20240120", "", "", "", [(9, "MR", 1)], "plain"),
    ("PATJPEG", "COMPRESSED^JPEG", "", 9, "20240301", "", "", "", [(10, "CT", 2)], "jpeg"),
    ("PATRLE", "COMPRESSED^RLE", "", 10, "20240302", "", "", "", [(11, "CT", 1)], "rle"),
    ("PATMANY", "MANY^INSTANCES", "", 11, "20240401", "", "", "", [(12, "OT", MANY)], "plain"),
]  # fmt: skip


@dataclass
class Corpus:
    #: SOP Instance UID -> the file that was sent.
    files: dict[str, Path] = field(default_factory=dict)
    #: study number -> its SOP Instance UIDs, in order.
    studies: dict[int, list[str]] = field(default_factory=dict)


def _pixels() -> bytes:
    return b"".join(((i * 37) % 4096).to_bytes(2, "little") for i in range(64))


def _instance(row: tuple[Any, ...], series: int, modality: str, k: int) -> Dataset:
    pid, name, charset, study, date, time, acc, desc, _series, _enc = row
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientID = pid
    ds.PatientName = name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = uid(study)
    ds.StudyDate = date
    ds.StudyTime = time
    ds.AccessionNumber = acc
    ds.StudyDescription = desc
    ds.StudyID = f"S{study}"
    ds.SeriesInstanceUID = uid(study, series)
    ds.Modality = modality
    ds.SeriesNumber = series
    ds.SOPClassUID = {"CT": CT, "MR": MR}.get(modality, SC)
    ds.SOPInstanceUID = uid(study, series, k)
    ds.InstanceNumber = k
    if modality != "OT":
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = _pixels()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _run(args: Sequence[str | bytes], timeout: float = 40) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        capture_output=True,
        timeout=timeout,
        env=dcmtk_env(),
        text=True,
        errors="replace",
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    base = tmp_path_factory.mktemp("corpus")
    out = Corpus()
    for kind in ("plain", "jpeg", "rle", "raw"):
        (base / kind).mkdir()
    for row in STUDIES:
        study, encoding = row[3], row[9]
        for series, modality, count in row[8]:
            for k in range(1, count + 1):
                ds = _instance(row, series, modality, k)
                name = f"{ds.SOPInstanceUID}.dcm"
                target = base / encoding / name
                if encoding == "plain":
                    ds.save_as(target, enforce_file_format=True)
                else:
                    raw = base / "raw" / name
                    ds.save_as(raw, enforce_file_format=True)
                    tool = dcmtk("dcmcjpeg" if encoding == "jpeg" else "dcmcrle")
                    done = _run([tool, str(raw), str(target)])
                    assert done.returncode == 0, done.stderr
                out.files[ds.SOPInstanceUID] = target
                out.studies.setdefault(study, []).append(ds.SOPInstanceUID)
    return out


@pytest.fixture(scope="module", params=ENGINES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, corpus: Corpus
) -> Iterator[RunningServer]:
    """A pacsd on each index engine, holding the whole corpus (shared: queries only read)."""
    work = tmp_path_factory.mktemp(f"qr-{request.param}")
    with engine_url(request.param, work / "index") as url:
        srv = start_server(
            work / "server",
            settings={"query_retrieve": {"max_results": CONFIGURED_CAP}},
            server_settings={"index_url": url},
        )
        try:
            folder = next(iter(corpus.files.values())).parent.parent
            for proposal, sub in (([], "plain"), (["-xs"], "jpeg"), (["-xr"], "rle")):
                sent = _run(
                    [
                        dcmtk("storescu"),
                        *proposal,
                        "-aec",
                        "PACSD",
                        "-to",
                        "10",
                        "+sd",
                        "127.0.0.1",
                        str(srv.dicom_port),
                        str(folder / sub),
                    ],
                    timeout=60,
                )
                assert sent.returncode == 0, sent.stdout + sent.stderr
            yield srv
        finally:
            srv.stop()


# -- DCMTK helpers ------------------------------------------------------------------------

_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


@dataclass
class Outcome:
    responses: list[Dataset]
    status: int
    output: str


def _keys(keys: dict[str, str | bytes]) -> list[str | bytes]:
    args: list[str | bytes] = []
    for key, value in keys.items():
        args.append("-k")
        args.append(key.encode() + b"=" + value if isinstance(value, bytes) else f"{key}={value}")
    return args


def findscu(
    server: RunningServer,
    tmp_path: Path,
    model: str,
    keys: dict[str, str | bytes],
    *options: str,
) -> Outcome:
    """Run findscu (-P or -S); the extracted responses, the final status, the output."""
    out = tmp_path / f"find{len(list(tmp_path.glob('find*')))}"
    out.mkdir()
    run = _run(
        [
            dcmtk("findscu"),
            "-d",
            model,
            "-aec",
            server.ae_title,
            "-to",
            "10",
            "-td",
            "30",
            "-X",
            "-od",
            str(out),
            *options,
            "127.0.0.1",
            str(server.dicom_port),
            *_keys(keys),
        ]
    )
    text = run.stdout + run.stderr
    statuses = _STATUS.findall(text)
    assert statuses, text
    responses: list[Dataset] = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    return Outcome(responses, int(statuses[-1], 16), text)


def retrieve(
    tool: str,
    server: RunningServer,
    keys: dict[str, str | bytes],
    *options: str,
) -> Outcome:
    run = _run(
        [
            dcmtk(tool),
            "-d",
            "-S",
            "-aec",
            server.ae_title,
            "-to",
            "10",
            "-td",
            "30",
            *options,
            "127.0.0.1",
            str(server.dicom_port),
            *_keys(keys),
        ]
    )
    text = run.stdout + run.stderr
    statuses = _STATUS.findall(text)
    assert statuses, text
    return Outcome([], int(statuses[-1], 16), text)


def values(responses: list[Dataset], *keywords: str) -> set[tuple[Any, ...]]:
    def plain(value: Any) -> Any:
        if value is None or value == "":
            return ""
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return tuple(str(v) for v in value)
        if isinstance(value, int):
            return int(value)
        return str(value)

    return {tuple(plain(r.get(k)) for k in keywords) for r in responses}


def dataset_bytes(path: Path) -> bytes:
    """The data set of a Part 10 file, without preamble and file meta (sender-neutral)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00", path
    (meta_length,) = struct.unpack("<I", data[140:144])
    return data[144 + meta_length :]


def transfer_syntax(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def register(server: RunningServer, ae_title: str, port: int) -> None:
    with Client(server.endpoint) as client:
        client.aetitles.create(ae_title, "127.0.0.1", port)


# -- C-FIND -------------------------------------------------------------------------------


def test_patient_level_wildcard_with_computed_counts(server: RunningServer, tmp_path: Path) -> None:
    found = findscu(
        server,
        tmp_path,
        "-P",
        {
            "QueryRetrieveLevel": "PATIENT",
            "PatientName": "DOE*",
            "PatientID": "",
            "NumberOfPatientRelatedStudies": "",
            "NumberOfPatientRelatedSeries": "",
            "NumberOfPatientRelatedInstances": "",
        },
    )
    assert found.status == 0x0000
    keys = (
        "PatientID",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    )
    assert values(found.responses, *keys) == {
        ("PAT001", "DOE^JOHN", 2, 3, 4),
        ("PAT002", "DOE^JANE", 1, 1, 1),
        ("PAT003", "DOEHRING^KARL", 1, 1, 1),
    }
    # Exactly the requested keys and the level: nothing else, no charset for ASCII.
    for rsp in found.responses:
        assert {e.keyword for e in rsp} == {"QueryRetrieveLevel", *keys}
        assert rsp.QueryRetrieveLevel == "PATIENT"


def test_question_mark_and_sql_wildcard_characters(server: RunningServer, tmp_path: Path) -> None:
    def patients(**keys: str) -> set[tuple[Any, ...]]:
        found = findscu(server, tmp_path, "-P", {"QueryRetrieveLevel": "PATIENT", **keys})
        assert found.status == 0x0000
        return values(found.responses, "PatientID")

    assert patients(PatientName="DO?^J*", PatientID="") == {("PAT001",), ("PAT002",)}
    assert patients(PatientName="doe^jan?", PatientID="") == {("PAT002",)}  # PN: any case
    assert patients(PatientID="PAT_1%") == {("PAT_1%",)}  # not LIKE's _ and %
    assert patients(PatientID="PAT_1*") == {("PAT_1%",)}
    assert patients(PatientID="PAT?1*") == {("PAT_1%",), ("PATX1Z",)}


def test_study_date_range_with_computed_keys(server: RunningServer, tmp_path: Path) -> None:
    found = findscu(
        server,
        tmp_path,
        "-S",
        {
            "QueryRetrieveLevel": "STUDY",
            "StudyDate": "20240101-20240131",
            "StudyInstanceUID": "",
            "AccessionNumber": "",
            "PatientID": "",
            "ModalitiesInStudy": "",
            "NumberOfStudyRelatedSeries": "",
            "NumberOfStudyRelatedInstances": "",
        },
    )
    assert found.status == 0x0000
    keys = (
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
        "PatientID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    )
    assert values(found.responses, *keys) == {
        (uid(1), "20240115", "ACC001", "PAT001", ("CT", "MR"), 2, 3),
        (uid(4), "20240131", "ACC004", "PAT003", "CT", 1, 1),
        (uid(5), "20240101", "ACC_1%", "PAT_1%", "OT", 1, 1),
        (uid(7), "20240120", "", "PATUTF8", "MR", 1, 1),
        (uid(8), "20240120", "", "PATLATIN1", "MR", 1, 1),
    }
    # Open ranges.
    before = findscu(
        server,
        tmp_path,
        "-S",
        {"QueryRetrieveLevel": "STUDY", "StudyDate": "-20240101", "StudyInstanceUID": ""},
    )
    assert values(before.responses, "StudyInstanceUID", "StudyDate") == {
        (uid(3), "20231231"),
        (uid(5), "20240101"),
    }


def test_uid_list_accession_and_universal_matching(server: RunningServer, tmp_path: Path) -> None:
    listed = findscu(
        server,
        tmp_path,
        "-S",
        {
            "QueryRetrieveLevel": "STUDY",
            "StudyInstanceUID": f"{uid(1)}\\{uid(3)}\\{uid(99)}",
            "StudyDescription": "",
            "RetrieveAETitle": "",
            "InstanceAvailability": "",
        },
    )
    assert listed.status == 0x0000
    assert values(
        listed.responses,
        "StudyInstanceUID",
        "StudyDescription",
        "RetrieveAETitle",
        "InstanceAvailability",
    ) == {
        (uid(1), "CT HEAD", "PACSD", "ONLINE"),
        (uid(3), "MR KNEE", "PACSD", "ONLINE"),
    }
    by_accession = findscu(
        server,
        tmp_path,
        "-S",
        {
            "QueryRetrieveLevel": "STUDY",
            "AccessionNumber": "ACC002",
            "StudyDate": "",
            "StudyTime": "",
            "PatientName": "",
            "ReferringPhysicianName": "",
        },
    )
    (rsp,) = by_accession.responses
    assert (rsp.StudyInstanceUID, rsp.StudyDate, rsp.StudyTime, str(rsp.PatientName)) == (
        uid(2),
        "20240210",
        "083000",
        "DOE^JOHN",
    )
    # Universal keys come back, empty when the study has no value.
    assert "ReferringPhysicianName" in rsp and not rsp.ReferringPhysicianName


def test_series_level_modality(server: RunningServer, tmp_path: Path) -> None:
    found = findscu(
        server,
        tmp_path,
        "-S",
        {
            "QueryRetrieveLevel": "SERIES",
            "StudyInstanceUID": uid(1),
            "Modality": "CT",
            "SeriesInstanceUID": "",
            "SeriesNumber": "",
            "NumberOfSeriesRelatedInstances": "",
        },
    )
    assert found.status == 0x0000
    assert values(
        found.responses,
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
    ) == {(uid(1), uid(1, 1), "CT", 1, 2)}


def test_image_level_patient_root(server: RunningServer, tmp_path: Path) -> None:
    found = findscu(
        server,
        tmp_path,
        "-P",
        {
            "QueryRetrieveLevel": "IMAGE",
            "PatientID": "PAT001",
            "StudyInstanceUID": uid(1),
            "SeriesInstanceUID": uid(1, 1),
            "SOPInstanceUID": "",
            "InstanceNumber": "",
            "SOPClassUID": "",
        },
    )
    assert found.status == 0x0000
    assert [r.SOPInstanceUID for r in found.responses] == [uid(1, 1, 1), uid(1, 1, 2)]
    assert values(found.responses, "PatientID", "InstanceNumber", "SOPClassUID") == {
        ("PAT001", 1, CT),
        ("PAT001", 2, CT),
    }


@pytest.mark.parametrize(
    ("model", "keys"),
    [
        ("-S", {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": ""}),
        ("-S", {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}),
        ("-P", {"QueryRetrieveLevel": "STUDY", "PatientID": "PAT*", "StudyInstanceUID": ""}),
    ],
)
def test_invalid_identifiers_answer_a900(
    server: RunningServer, tmp_path: Path, model: str, keys: dict[str, str | bytes]
) -> None:
    found = findscu(server, tmp_path, model, keys)
    assert found.status == 0xA900
    assert found.responses == []
    server.wait_for_log("C-FIND from FINDSCU refused with 0xA900")


def test_latin1_query_matches_and_the_answer_is_utf8(server: RunningServer, tmp_path: Path) -> None:
    for pattern, expected in (("gómez*", "GÓMEZ^JOSÉ"), ("MÜLLER^*", "MÜLLER^HANS")):
        found = findscu(
            server,
            tmp_path,
            "-P",
            {
                "QueryRetrieveLevel": "PATIENT",
                "SpecificCharacterSet": "ISO_IR 100",
                "PatientName": pattern.encode("latin-1"),
                "PatientID": "",
            },
        )
        assert found.status == 0x0000, found.output
        (rsp,) = found.responses
        assert rsp.SpecificCharacterSet == "ISO_IR 192"
        assert str(rsp.PatientName) == expected


def test_cancel_after_the_first_response(server: RunningServer, tmp_path: Path) -> None:
    # DCMTK's findscu sends the C-CANCEL as soon as it has read the first response. (A
    # pynetdicom SCU cannot: while pacsd's responses stream in, its reader thread holds
    # the GIL and the C-CANCEL leaves only after all of them have arrived.)
    found = findscu(
        server,
        tmp_path,
        "-S",
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": uid(11),
            "SeriesInstanceUID": uid(11, 12),
            "SOPInstanceUID": "",
        },
        "--cancel",
        "1",
    )
    statuses = [int(s, 16) for s in _STATUS.findall(found.output)]
    assert statuses[0] == 0xFF00
    assert found.status == 0xFE00, found.output
    assert len(found.responses) < CONFIGURED_CAP  # stopped well before the end


def test_result_cap_from_configuration_and_runtime_settings(
    server: RunningServer, tmp_path: Path
) -> None:
    keys: dict[str, str | bytes] = {
        "QueryRetrieveLevel": "IMAGE",
        "StudyInstanceUID": uid(11),
        "SeriesInstanceUID": uid(11, 12),
        "SOPInstanceUID": "",
    }
    capped = findscu(server, tmp_path, "-S", keys)
    assert (len(capped.responses), capped.status) == (CONFIGURED_CAP, 0xA700)
    server.wait_for_log("more than max_results=100")
    try:
        changed = run_pacsctl(
            server.endpoint, "addin", "settings", "query_retrieve", "--set", "max_results=5"
        )
        assert changed.returncode == 0, changed.stderr
        five = findscu(server, tmp_path, "-S", keys)
        assert (len(five.responses), five.status) == (5, 0xA700)
        changed = run_pacsctl(
            server.endpoint, "addin", "settings", "query_retrieve", "--set", "max_results=0"
        )
        assert changed.returncode == 0, changed.stderr
        unlimited = findscu(server, tmp_path, "-S", keys)
        assert (len(unlimited.responses), unlimited.status) == (MANY, 0x0000)
        order = [r.SOPInstanceUID for r in unlimited.responses]
        assert sorted(order) == sorted(uid(11, 12, k) for k in range(1, MANY + 1))
        # Deterministic: the same order again, and the capped answers were its prefixes.
        again = findscu(server, tmp_path, "-S", keys)
        assert [r.SOPInstanceUID for r in again.responses] == order
        assert [r.SOPInstanceUID for r in five.responses] == order[:5]
        assert [r.SOPInstanceUID for r in capped.responses] == order[:CONFIGURED_CAP]
    finally:
        run_pacsctl(
            server.endpoint,
            "addin",
            "settings",
            "query_retrieve",
            "--set",
            f"max_results={CONFIGURED_CAP}",
        )


# -- C-MOVE -------------------------------------------------------------------------------


def test_move_to_a_registered_storescp_is_bit_identical(
    server: RunningServer, corpus: Corpus, tmp_path: Path
) -> None:
    with storescp(tmp_path) as scp:
        destination = f"DEST{scp.port}"
        register(server, destination, scp.port)
        moved = retrieve(
            "movescu",
            server,
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid(1)},
            "-aem",
            destination,
        )
        assert moved.status == 0x0000, moved.output
        for sop in corpus.studies[1]:
            received = scp.file_for(sop)
            assert dataset_bytes(received) == dataset_bytes(corpus.files[sop])
        # IMAGE level with a UID list across series.
        picked = [uid(2, 3, 1), uid(8, 9, 1)]
        moved = retrieve(
            "movescu",
            server,
            {
                "QueryRetrieveLevel": "IMAGE",
                "StudyInstanceUID": "",
                "SeriesInstanceUID": "",
                "SOPInstanceUID": "\\".join(picked),
            },
            "-aem",
            destination,
        )
        assert moved.status == 0x0000, moved.output
        for sop in picked:
            assert dataset_bytes(scp.file_for(sop)) == dataset_bytes(corpus.files[sop])
        assert len(scp.files()) == len(corpus.studies[1]) + 2


def test_move_to_an_unknown_destination_is_a801(server: RunningServer) -> None:
    moved = retrieve(
        "movescu",
        server,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid(1)},
        "-aem",
        "NOBODY",
    )
    assert moved.status == 0xA801
    assert "MoveDestinationUnknown" in moved.output


def test_move_reports_failed_sub_operations(
    server: RunningServer, corpus: Corpus, tmp_path: Path
) -> None:
    """A destination accepting implicit VR only cannot take the JPEG instances: they are
    counted as failed and listed in the final response's Failed SOP Instance UID List."""
    with storescp(tmp_path, "+xi") as scp:
        destination = f"IMPL{scp.port}"
        register(server, destination, scp.port)
        ae = AE(ae_title="MOVESCU")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        ae.dimse_timeout = ae.acse_timeout = 20
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
        assert assoc.is_established
        try:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = [uid(1), uid(9)]
            responses = list(
                assoc.send_c_move(query, destination, StudyRootQueryRetrieveInformationModelMove)
            )
        finally:
            assoc.release()
        final, identifier = responses[-1]
        assert int(final.Status) == 0xB000
        counts = (
            final.NumberOfCompletedSuboperations,
            final.NumberOfFailedSuboperations,
            final.NumberOfWarningSuboperations,
        )
        assert counts == (3, 2, 0)
        assert identifier is not None
        assert sorted(identifier.FailedSOPInstanceUIDList) == sorted(corpus.studies[9])
        assert sorted(p.name.split(".", 1)[1] for p in scp.files()) == sorted(corpus.studies[1])


# -- C-GET --------------------------------------------------------------------------------


def test_get_a_study_with_getscu(server: RunningServer, corpus: Corpus, tmp_path: Path) -> None:
    out = tmp_path / "get"
    out.mkdir()
    got = retrieve(
        "getscu",
        server,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid(1)},
        "-od",
        str(out),
    )
    assert got.status == 0x0000, got.output
    received = {p.name.split(".", 1)[1]: p for p in out.iterdir()}
    assert sorted(received) == sorted(corpus.studies[1])
    for sop, path in received.items():
        assert dataset_bytes(path) == dataset_bytes(corpus.files[sop])


def test_retrieve_without_its_unique_key_is_a900(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "get"
    out.mkdir()
    got = retrieve(
        "getscu",
        server,
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": uid(1), "SeriesInstanceUID": ""},
        "-od",
        str(out),
    )
    assert got.status == 0xA900, got.output
    assert list(out.iterdir()) == []
    server.wait_for_log("C-GET from GETSCU refused with 0xA900")


@pytest.mark.parametrize(
    ("study", "option", "syntax"),
    [(9, "+xs", JPEGLosslessSV1), (10, "+xr", RLELossless)],
)
def test_compressed_instances_keep_their_transfer_syntax(
    server: RunningServer, corpus: Corpus, tmp_path: Path, study: int, option: str, syntax: str
) -> None:
    out = tmp_path / "get"
    out.mkdir()
    got = retrieve(
        "getscu",
        server,
        {
            "QueryRetrieveLevel": "SERIES",
            "StudyInstanceUID": uid(study),
            "SeriesInstanceUID": uid(study, study + 1),
        },
        option,
        "-od",
        str(out),
    )
    assert got.status == 0x0000, got.output
    received = {p.name.split(".", 1)[1]: p for p in out.iterdir()}
    assert sorted(received) == sorted(corpus.studies[study])
    for sop, path in received.items():
        assert transfer_syntax(corpus.files[sop]) == syntax
        assert transfer_syntax(path) == syntax
        assert dataset_bytes(path) == dataset_bytes(corpus.files[sop])


@pytest.mark.parametrize(("study", "syntax"), [(9, JPEGLosslessSV1), (10, RLELossless)])
def test_move_sends_compressed_instances_compressed(
    server: RunningServer, corpus: Corpus, tmp_path: Path, study: int, syntax: str
) -> None:
    """The handler announces the stored (SOP class, transfer syntax) pairs, so the
    destination is offered the compressed syntax and nothing is transcoded."""
    with storescp(tmp_path, "+xa") as scp:
        destination = f"ALL{scp.port}"
        register(server, destination, scp.port)
        moved = retrieve(
            "movescu",
            server,
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid(study)},
            "-aem",
            destination,
        )
        assert moved.status == 0x0000, moved.output
        for sop in corpus.studies[study]:
            received = scp.file_for(sop)
            assert transfer_syntax(received) == syntax
            assert dataset_bytes(received) == dataset_bytes(corpus.files[sop])
