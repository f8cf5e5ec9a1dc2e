"""The time limit of a C-FIND handler applies to each result, with results in batches.

pacsd pulls a generator's results on the add-in worker thread several at a time; a
handler whose every result comes within its limit must still be answered in full
however long the whole answer takes, and one result past the limit must end the
C-FIND with a failure after the results before it, and mark the add-in unhealthy.
"""

from __future__ import annotations

import time
from typing import Any

from pacsd.admin.v1 import addins_pb2, addins_pb2_grpc
from pydicom.dataset import Dataset

from tests.conftest import PacsdProcess
from tests.integration.test_addins import TEST_ADDINS, addins, associate, load, pacsd  # noqa: F401

WORKLIST_FIND = "1.2.840.10008.5.1.4.31"


def find(port: int, patient_id: str) -> list[tuple[int, Any]]:
    assoc = associate(port, WORKLIST_FIND)
    assert assoc.is_established
    try:
        query = Dataset()
        query.PatientID = patient_id
        return [
            (int(status.Status), identifier)
            for status, identifier in assoc.send_c_find(query, WORKLIST_FIND)
        ]
    finally:
        if assoc.is_established:
            assoc.release()


def test_results_each_within_the_limit_all_arrive(
    pacsd: PacsdProcess,  # noqa: F811
    addins: addins_pb2_grpc.AddinServiceStub,  # noqa: F811
) -> None:
    load(addins, TEST_ADDINS / "slow_find.py")
    started = time.monotonic()
    responses = find(pacsd.dicom_port, "")
    assert time.monotonic() - started > 1.0  # longer than the limit in all
    assert [s for s, _ in responses] == [0xFF00] * 4 + [0x0000]
    assert [str(i.PatientID) for _, i in responses[:4]] == ["P0", "P1", "P2", "P3"]
    addin = addins.GetAddin(addins_pb2.GetAddinRequest(name="slow_find"), timeout=5).addin
    assert addin.healthy and addin.counters.timeouts == 0


def test_a_result_past_the_limit_fails_after_the_earlier_ones(
    pacsd: PacsdProcess,  # noqa: F811
    addins: addins_pb2_grpc.AddinServiceStub,  # noqa: F811
) -> None:
    load(addins, TEST_ADDINS / "slow_find.py")
    started = time.monotonic()
    responses = find(pacsd.dicom_port, "HANG")
    elapsed = time.monotonic() - started
    assert [s for s, _ in responses] == [0xFF00] * 3 + [0xC000]
    assert elapsed < 5, elapsed
    addin = addins.GetAddin(addins_pb2.GetAddinRequest(name="slow_find"), timeout=5).addin
    assert not addin.healthy and "time limit" in addin.error
    assert addin.counters.timeouts == 1
