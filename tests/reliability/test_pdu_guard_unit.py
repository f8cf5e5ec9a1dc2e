"""The guard's pure rules: which PDU lengths are read, and what a log line may quote."""

from __future__ import annotations

import logging

import pytest
from pacsd.server.dicom import pdu_guard


@pytest.mark.parametrize(
    ("pdu_type", "negotiating", "max_pdu", "limit"),
    [
        (0x01, True, 131072, pdu_guard.MAX_ASSOCIATE_RQ),
        (0x01, False, 131072, pdu_guard.MAX_ASSOCIATE_RQ),
        (0x04, False, 131072, 131072),  # P-DATA: the maximum we announced
        (0x04, False, 0, pdu_guard.MAX_ASSOCIATE_RQ),  # none announced
        (0x04, True, 131072, pdu_guard.MAX_OTHER_PDU),  # no P-DATA before negotiation
        (0x05, False, 131072, pdu_guard.MAX_OTHER_PDU),
        (0x07, True, 131072, pdu_guard.MAX_OTHER_PDU),
    ],
)
def test_length_limit(pdu_type: int, negotiating: bool, max_pdu: int, limit: int) -> None:
    assert pdu_guard.length_limit(pdu_type, negotiating, max_pdu) == limit


def test_short_keeps_one_printable_line() -> None:
    text = pdu_guard._short(ValueError("AE 'EVIL\n2026-01-01 INFO forged\x1b[31m' " + "x" * 200))
    assert "\n" not in text and "\x1b" not in text
    assert text.startswith("AE 'EVIL 2026-01-01 INFO forged?[31m'")
    assert len(text) == 120 and text.endswith("...")


def test_pynetdicom_decoding_tracebacks_become_one_line(caplog: pytest.LogCaptureFixture) -> None:
    pdu_guard._quiet_protocol_loggers()
    logger = logging.getLogger("pynetdicom.utils")
    with caplog.at_level(logging.ERROR, logger="pynetdicom"):
        try:
            b"\xff".decode("ascii")
        except UnicodeDecodeError as exc:
            logger.exception(exc)
    (record,) = caplog.records
    assert record.exc_info is None and record.exc_text is None
    assert record.getMessage().endswith("(UnicodeDecodeError)")
    assert "Traceback" not in caplog.text
