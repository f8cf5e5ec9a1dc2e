"""Text a DICOM peer sent cannot forge or garble a log line.

pynetdicom quotes a refused AE title verbatim, add-ins log dataset values, pydicom
warns with element values: each of those puts the peer's bytes into a record. Every
test here runs a real ``pacsd serve``, sends it control characters over real DICOM,
and reads what an operator would: the console, the text and JSON log files, and the
live stream ``pacsctl logs -f`` prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom.config
from pacsd.client import Client
from pacsd.server.logsafe import escape_controls, escape_controls_keep_newlines
from pynetdicom import AE

from tests.conftest import PacsdProcess, run_pacsctl
from tests.integration.dicom_peers import small_instance
from tests.observability.common import Reader, start_with
from tests.reliability import wire

#: A calling AE title (16 bytes at most) that, written raw, starts a line of its own
#: and clears the operator's screen.
EVIL_AE = "X\nFORGED\x1b[2J"
EVIL_AE_ESCAPED = "X\\nFORGED\\x1b[2J"
#: A dataset value with a carriage return, a newline, an ESC and a C1 control (CSI).
EVIL_VALUE = "P\r\nFORGED\x1b[31m\x9b"
EVIL_VALUE_ESCAPED = "P\\r\\nFORGED\\x1b[31m\\x9b"

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"

#: An add-in that logs an exception with the patient ID it was given and warns with it.
TRACER = """
import warnings

from pacsd.addin import Addin, Status, StoreRequest, dimse


class Tracer(Addin):
    name = "tracer"

    @dimse.c_store(sop_classes=["1.2.840.10008.5.1.4.1.1.7"])
    def on_store(self, req: StoreRequest) -> int:
        patient = req.dataset.PatientID
        warnings.warn(f"odd patient {patient}")
        try:
            raise RuntimeError("the archive is on fire")
        except RuntimeError:
            self.ctx.log.exception("filing patient %s failed", patient)
        return Status.SUCCESS
"""


def _no_forged_line(text: str) -> None:
    """Every line is a whole record (or a traceback's), none the peer started."""
    assert "\x1b" not in text and "\x9b" not in text and "\r" not in text
    for line in text.splitlines():
        assert not line.startswith("FORGED"), line


def _refused_association(port: int, calling: str) -> None:
    """An A-ASSOCIATE-RQ with ``calling`` as its calling AE title; pynetdicom refuses
    to decode it and logs the title, as sent, at ERROR."""
    with wire.connect(port) as sock:
        sock.sendall(wire.associate_rq(calling=calling))
        assert wire.read_answer(sock, 5.0).first == wire.ABORT


@contextmanager
def _unvalidated_writes() -> Iterator[None]:
    """Let this process encode values pydicom would refuse, as a hostile peer does."""
    settings = pydicom.config.settings
    before = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = before


def _send(port: int, context: str, send: Callable[[Any], object]) -> None:
    ae = AE(ae_title="EVILSCU")
    ae.add_requested_context(context)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
    assert assoc.is_established
    try:
        with _unvalidated_writes():
            send(assoc)
    finally:
        assoc.release()


def test_refused_ae_title_is_escaped_on_console_and_in_both_files(
    start_pacsd: Callable[..., PacsdProcess], tmp_path: Path
) -> None:
    text_file, json_file = tmp_path / "pacsd.log", tmp_path / "pacsd.jsonl"
    pacsd = start_with(
        start_pacsd, tmp_path, f'log_file = "{text_file}"\nlog_json_file = "{json_file}"\n'
    )
    _refused_association(pacsd.dicom_port, EVIL_AE)
    expected = f"Invalid 'Calling AE Title' value '{EVIL_AE_ESCAPED}'"
    console = pacsd.wait_for_log(expected)
    _no_forged_line(console)
    [line] = [line for line in console.splitlines() if expected in line]
    assert " ERROR   [pynetdicom] " in line  # the record's own line, prefix and all

    text = text_file.read_text()
    assert expected in text
    _no_forged_line(text)
    documents = [json.loads(line) for line in json_file.read_text().splitlines()]
    [document] = [d for d in documents if d["source"] == "pynetdicom"]
    assert expected in document["message"] and document["message"].isprintable()


def test_log_stream_delivers_the_escaped_message(
    start_pacsd: Callable[..., PacsdProcess], tmp_path: Path
) -> None:
    pacsd = start_pacsd()
    with Client(pacsd.endpoint) as client:
        reader = Reader(client.logs.stream(follow=True, tail=1))
        assert reader.wait_for(lambda rs: len(rs) >= 1, 5), reader.error  # subscribed
        _refused_association(pacsd.dicom_port, EVIL_AE)

        def refused(records: list[Any]) -> list[Any]:
            return [r for r in records if r.source == "pynetdicom"]

        items = reader.wait_for(lambda rs: bool(refused(rs)), 5)
        reader.stop()
    [record] = refused([r for _, r in items])
    assert f"value '{EVIL_AE_ESCAPED}'" in record.message
    assert record.message.isprintable()


def test_traceback_keeps_its_newlines_and_warnings_are_escaped_records(
    pacsd_no_storage: PacsdProcess, tmp_path: Path
) -> None:
    pacsd = pacsd_no_storage  # the add-in below takes Secondary Capture for itself
    addin = tmp_path / "tracer.py"
    addin.write_text(TRACER)
    with Client(pacsd.endpoint) as client:
        client.addins.load(addin)
        reader = Reader(client.logs.stream(follow=True, tail=1, sources=["tracer"]))
        with _unvalidated_writes():
            ds = small_instance(patient_id=EVIL_VALUE)
        _send(pacsd.dicom_port, SECONDARY_CAPTURE, lambda assoc: assoc.send_c_store(ds))

        def failed(records: list[Any]) -> list[Any]:
            return [r for r in records if r.message.startswith("filing patient")]

        items = reader.wait_for(lambda rs: bool(failed(rs)), 5)
        reader.stop()
    [record] = failed([r for _, r in items])
    assert record.message == f"filing patient {EVIL_VALUE_ESCAPED} failed"
    # The traceback is the server's: its lines stay lines, in the stream and on the console.
    assert record.exception.startswith("Traceback (most recent call last):\n")
    assert record.exception.endswith("\nRuntimeError: the archive is on fire")

    console = pacsd.wait_for_log("RuntimeError: the archive is on fire")
    _no_forged_line(console)
    lines = console.splitlines()
    at = next(i for i, line in enumerate(lines) if "filing patient" in line)
    assert lines[at].endswith(f" EVILSCU->PACSD] filing patient {EVIL_VALUE_ESCAPED} failed")
    assert lines[at + 1] == "Traceback (most recent call last):"
    # The add-in's warnings.warn is one record in the log, not a raw stderr write.
    [warned] = [line for line in lines if "odd patient" in line]
    assert warned.endswith(f"] UserWarning: odd patient {EVIL_VALUE_ESCAPED}")


def test_pydicom_warning_is_one_record_not_a_raw_stderr_write(
    start_pacsd: Callable[..., PacsdProcess], tmp_path: Path
) -> None:
    pacsd = start_pacsd()
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    with _unvalidated_writes():
        query.StudyInstanceUID = "1.2\nFORGED\x1b[0m"
    _send(pacsd.dicom_port, STUDY_ROOT_FIND, lambda a: list(a.send_c_find(query, STUDY_ROOT_FIND)))
    console = pacsd.wait_for_log("refused with 0xC000")
    _no_forged_line(console)
    # pydicom both logs and warns; the log record is kept, the warning not printed too.
    [line] = [line for line in console.splitlines() if "Invalid value for VR UI" in line]
    assert " WARNING [pydicom " in line
    assert "UserWarning" not in console

    # "pydicom" is a log source an operator can quieten like any other.
    out = run_pacsctl(pacsd, "log-level", "ERROR", "--source", "pydicom")
    assert out.returncode == 0 and "set to ERROR" in out.stdout, out.stdout + out.stderr
    refusals = console.count("refused with 0xC000")
    _send(pacsd.dicom_port, STUDY_ROOT_FIND, lambda a: list(a.send_c_find(query, STUDY_ROOT_FIND)))
    deadline = time.monotonic() + 5
    while pacsd.stderr().count("refused with 0xC000") == refusals:
        assert time.monotonic() < deadline, "the second C-FIND was not refused"
        time.sleep(0.05)
    assert pacsd.stderr().count("Invalid value for VR UI") == 1


def test_every_control_character_is_escaped_and_nothing_else_is() -> None:
    controls = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)]
    for char in controls:
        escaped = escape_controls(f"a{char}b")
        assert escaped.isascii() and escaped.isprintable(), repr(char)
        assert escape_controls(escaped) == escaped  # relayed records are not escaped twice
    assert escape_controls("\x00\x1f\x7f\x85\t\r\n") == "\\x00\\x1f\\x7f\\x85\\t\\r\\n"
    # Other text a log may quote is left alone: backslashes, accents, no-break spaces.
    for text in ("C:\\dicom\\in", "Müller^Zoë", "a\u00a0b", "山田^太郎"):
        assert escape_controls(text) == text
    assert escape_controls_keep_newlines("one\ntwo\x1b[0m") == "one\ntwo\\x1b[0m"
