"""pacsd's C-FIND loop on the wire: every response, in order, whatever encodes it.

``find_loop`` holds a C-FIND's responses and writes each batch of matches at once
(``send_path.hold``); a response pynetdicom encodes (a non-ASCII Error Comment) must
still leave after the matches before it. Answers span several batches (1 + 64 + ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsd.addin.testing import RunningServer, start_server
from pydicom.dataset import Dataset
from pynetdicom import AE

TEST_ADDINS = Path(__file__).resolve().parents[1] / "addins"
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(
        tmp_path_factory.mktemp("find-loop"),
        addins=[TEST_ADDINS / "find_then_fail.py"],
        server_settings={"workers": 1},
    )
    try:
        yield srv
    finally:
        srv.stop()


def _find(server: RunningServer, count: int, comment: str = "", max_pdu: int = 16384) -> Any:
    ae = AE(ae_title="FINDLOOP")
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = ae.dimse_timeout = 20
    ae.add_requested_context(WORKLIST_FIND)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        query = Dataset()
        query.PatientID = str(count)
        query.PatientName = comment
        return [
            (status.Status, status.get("ErrorComment"), ds.PatientID if ds else None)
            for status, ds in assoc.send_c_find(query, WORKLIST_FIND)
        ]
    finally:
        assoc.release()


@pytest.mark.parametrize("count", [0, 1, 2, 65, 66, 150])
def test_every_match_then_success_in_order(server: RunningServer, count: int) -> None:
    answers = _find(server, count)
    assert answers == [(0xFF00, None, f"P{n}") for n in range(count)] + [(0x0000, None, None)]


@pytest.mark.parametrize("comment", ["too many", "zu viele Treffer: Übermaß"])
@pytest.mark.parametrize("max_pdu", [16384, 300])
def test_a_failure_after_matches_leaves_after_them(
    server: RunningServer, comment: str, max_pdu: int
) -> None:
    answers = _find(server, 70, comment, max_pdu)
    assert answers == [(0xFF00, None, f"P{n}") for n in range(70)] + [(0xC001, comment, None)]
