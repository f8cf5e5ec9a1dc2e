"""``client.storage`` (pacsd.client.StorageAPI) against a real pacsd holding a corpus
stored with DCMTK storescu."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacsd.client import Client, Deletion, InvalidArgument, StudiesPage, StudyList
from pydicom.uid import generate_uid

from tests.client.test_isolation import BLOCKED
from tests.conftest import PacsdProcess
from tests.integration.test_storage_service import (
    Corpus,
    blob,
    blob_files,
    instance_file,
    make_corpus,
    stored_size,
    storescu,
)


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    return make_corpus(tmp_path / "corpus")


@pytest.fixture
def client(pacsd: PacsdProcess, corpus: Corpus) -> Iterator[Client]:
    storescu(pacsd, corpus.files)
    with Client(pacsd.endpoint) as c:
        yield c


def newest_first(corpus: Corpus) -> list[str]:
    return [s.uid for s in sorted(corpus.studies, key=lambda s: s.date, reverse=True)]


def test_stats(client: Client, pacsd: PacsdProcess) -> None:
    s = client.storage.stats()
    assert (s.patients, s.studies, s.series, s.instances) == (2, 3, 6, 11)
    assert s.bytes == sum(p.stat().st_size for p in blob_files(pacsd.data_dir))
    assert (s.data_dir, s.index_backend) == (str(pacsd.data_dir.resolve()), "sqlite")


def test_studies_follow_every_page(client: Client, corpus: Corpus) -> None:
    api = client.storage
    everything = api.studies()
    assert isinstance(everything, StudyList)
    assert [s.study_instance_uid for s in everything] == newest_first(corpus)
    assert everything.total_size == 3
    # One study per call still yields the whole list, in the same order.
    assert list(api.studies(page_size=1)) == list(everything)
    assert list(api.iter_studies(page_size=2)) == list(everything)

    capped = api.studies(limit=2, page_size=1)
    assert [s.study_instance_uid for s in capped] == newest_first(corpus)[:2]
    assert capped.total_size == 3
    assert list(api.studies(limit=0)) == []
    assert len(api.studies(limit=10)) == 3

    p1 = api.studies(patient_id="P1", modality="CT")
    assert [s.study_instance_uid for s in p1] == [corpus.studies[0].uid]
    assert (p1[0].series, p1[0].instances, list(p1[0].modalities)) == (2, 5, ["CT"])
    dated = api.studies(date_from="20240101", date_to="20240301")
    assert [s.study_instance_uid for s in dated] == [corpus.studies[1].uid]


def test_studies_page_by_page(client: Client, corpus: Corpus) -> None:
    api = client.storage
    first = api.studies_page(page_size=2)
    assert isinstance(first, StudiesPage)
    assert [s.study_instance_uid for s in first.studies] == newest_first(corpus)[:2]
    assert first.total_size == 3 and first.next_page_token
    second = api.studies_page(page_size=2, page_token=first.next_page_token)
    assert [s.study_instance_uid for s in second.studies] == newest_first(corpus)[2:]
    assert second.next_page_token == ""

    with pytest.raises(InvalidArgument) as err:
        api.studies_page(page_size=2, page_token=first.next_page_token, modality="CT")
    assert (err.value.reason, err.value.metadata) == (
        "INVALID_PAGE_TOKEN",
        {"field": "page_token"},
    )


def test_bad_arguments_name_their_field(client: Client) -> None:
    api = client.storage
    cases = [
        (lambda: api.studies(date_from="2024"), "INVALID_ARGUMENT", "study_date_from"),
        (lambda: api.studies(date_to="20240631"), "INVALID_ARGUMENT", "study_date_to"),
        (
            lambda: api.studies(date_from="20250101", date_to="20240101"),
            "INVALID_ARGUMENT",
            "study_date_to",
        ),
        (lambda: api.studies_page(page_size=-5), "INVALID_ARGUMENT", "page_size"),
        (lambda: api.studies_page(page_size=2**40), "INVALID_ARGUMENT", "page_size"),
        (lambda: api.studies(limit=-1), "INVALID_ARGUMENT", "limit"),
        (lambda: api.delete_study("1.2.x"), "INVALID_UID", "study_instance_uid"),
        (lambda: api.delete_series("1.2/3"), "INVALID_UID", "series_instance_uid"),
        (lambda: api.delete_instance("1." * 40 + "1"), "INVALID_UID", "sop_instance_uid"),
        (lambda: api.delete_instance(""), "INVALID_ARGUMENT", "sop_instance_uid"),
    ]
    for call, reason, field in cases:
        with pytest.raises(InvalidArgument) as err:
            call()
        assert (err.value.reason, err.value.metadata) == (reason, {"field": field}), field
    assert client.storage.stats().instances == 11


def test_deletes_report_what_went_and_are_idempotent(
    client: Client, pacsd: PacsdProcess, corpus: Corpus
) -> None:
    api = client.storage
    data = pacsd.data_dir
    ct_study = corpus.studies[0]
    one = corpus.of_series(ct_study.series[0])[0]
    size = stored_size(data, [one])
    assert api.delete_instance(one.sop_uid) == Deletion(True, 1, size)
    assert blob(data, one.sop_uid) is None
    assert api.delete_instance(one.sop_uid) == Deletion(False, 0, 0)

    rest = [i for i in corpus.of_series(ct_study.series[0]) if i != one]
    rest_size = stored_size(data, rest)
    assert api.delete_series(ct_study.series[0]) == Deletion(True, 2, rest_size)
    assert api.delete_series(ct_study.series[0]) == Deletion(False, 0, 0)

    study_rest_size = stored_size(data, corpus.of_series(ct_study.series[1]))
    assert api.delete_study(ct_study.uid) == Deletion(True, 2, study_rest_size)
    assert api.delete_study(ct_study.uid) == Deletion(False, 0, 0)
    # A well-formed UID that was never stored is not an error either.
    assert api.delete_study(generate_uid()) == Deletion(False, 0, 0)

    s = api.stats()
    assert (s.patients, s.studies, s.series, s.instances) == (2, 2, 4, 6)
    assert [x.study_instance_uid for x in api.studies()] == [
        corpus.studies[2].uid,
        corpus.studies[1].uid,
    ]


def test_undated_studies_match_no_date_range(
    client: Client, pacsd: PacsdProcess, corpus: Corpus, tmp_path: Path
) -> None:
    """A study without a Study Date is listed, but is in no date range: not even
    "on or before" one (the index keeps the missing date as "", which sorts first)."""
    folder = tmp_path / "undated"
    folder.mkdir()
    undated = instance_file(
        folder,
        patient_id="P3",
        patient_name="Noe^Date",
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        modality="OT",
        series_number=1,
        instance_number=1,
    )
    storescu(pacsd, [undated.path])
    api = client.storage
    listed = api.studies(patient_id="P3")
    assert [(s.study_instance_uid, s.study_date) for s in listed] == [(undated.study_uid, "")]
    assert undated.study_uid in [s.study_instance_uid for s in api.studies()]
    for ranged in (api.studies(date_to="20991231"), api.studies(date_from="19000101")):
        uids = [s.study_instance_uid for s in ranged]
        assert undated.study_uid not in uids
        assert len(uids) == 3


SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    BLOCKED = tuple(sys.argv[2].split(","))


    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"blocked for this test: {name}")
            return None


    sys.meta_path.insert(0, Blocker())
    from pacsd.client import Client, InvalidArgument

    out = {}
    with Client(sys.argv[1], timeout=10) as client:
        out["instances"] = client.storage.stats().instances
        out["studies"] = len(client.storage.studies(page_size=1))
        try:
            client.storage.delete_study("not-a-uid")
        except InvalidArgument as exc:
            out["error"] = exc.code.name
    out["loaded"] = sorted(
        m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)
    )
    print(json.dumps(out))
    """
)


def test_storage_api_needs_only_grpcio_and_protobuf(client: Client, pacsd: PacsdProcess) -> None:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, pacsd.endpoint, ",".join(BLOCKED)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "instances": 11,
        "studies": 3,
        "error": "INVALID_ARGUMENT",
        "loaded": [],
    }
