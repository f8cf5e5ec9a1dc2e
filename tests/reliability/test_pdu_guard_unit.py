"""The guard's pure rules: which PDU lengths are read, what a log line may quote, and
which exceptions count as malformed input (one line) rather than a bug (a traceback)."""

from __future__ import annotations

import logging

import pytest
from pacsd.server.dicom import pdu_guard
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.utils import decode_bytes


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


def _raised_by_pynetdicom() -> Exception:
    try:
        A_ASSOCIATE_RQ().decode(b"\x01\x00\x00\x00\x00\x10" + b"\x00" * 4)
    except Exception as exc:
        return exc
    raise AssertionError("pynetdicom decoded a 4-byte A-ASSOCIATE-RQ")


def _raised_here(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


def test_decode_errors_are_told_from_bugs() -> None:
    """A decode error is one of the types the decoders raise, raised in a decoder."""
    assert pdu_guard.is_decode_error(_raised_by_pynetdicom())
    # The same type raised outside the decoders is a bug, as is any other type.
    assert not pdu_guard.is_decode_error(_raised_here(ValueError("bug")))
    assert not pdu_guard.is_decode_error(_raised_here(AttributeError("bug")))
    assert not pdu_guard.is_decode_error(_raised_here(RuntimeError("bug")))
    assert not pdu_guard.is_decode_error(ValueError("never raised: no traceback"))


def test_refusal_log_is_one_line_for_input_a_traceback_for_a_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="pacsd.core.dicom"):
        pdu_guard._log_refusal("127.0.0.1:1", "invalid PDU: x", _raised_by_pynetdicom(), "aborting")
        pdu_guard._log_refusal("127.0.0.1:2", "invalid PDU: y", None, "aborting")
        pdu_guard._log_refusal(
            "127.0.0.1:3", "invalid PDU: z", _raised_here(KeyError(1)), "aborting"
        )
    malformed, unknown_type, bug = caplog.records
    for record in (malformed, unknown_type):
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert pdu_guard.UNEXPECTED not in record.getMessage()
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
    assert bug.getMessage().startswith(f"association from 127.0.0.1:3: {pdu_guard.UNEXPECTED}")
    assert caplog.text.count("Traceback") == 1


def test_pynetdicom_decoding_tracebacks_become_one_line(caplog: pytest.LogCaptureFixture) -> None:
    pdu_guard._quiet_protocol_loggers()
    with caplog.at_level(logging.ERROR, logger="pynetdicom"), pytest.raises(ValueError):
        decode_bytes(b"\xff")  # logs the UnicodeDecodeError, then raises
    (record,) = caplog.records
    assert record.exc_info is None and record.exc_text is None
    assert record.getMessage().endswith("(UnicodeDecodeError)")
    assert "Traceback" not in caplog.text


def test_other_exceptions_logged_by_pynetdicom_keep_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pynetdicom's ``LOGGER.exception`` also reports what a handler or pacsd raised."""
    pdu_guard._quiet_protocol_loggers()
    logger = logging.getLogger("pynetdicom.dimse")
    with caplog.at_level(logging.ERROR, logger="pynetdicom"):
        try:
            raise AttributeError("a bug")
        except AttributeError as exc:
            logger.exception(exc)
    (record,) = caplog.records
    assert record.exc_info is not None
    assert "Traceback" in caplog.text
