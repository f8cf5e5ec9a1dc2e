"""A C-STORE-RQ whose command set names its instance or class with something that is
not a UID (non-ASCII, too long, letters, absent) is a refusal of that one request, not
of the association: the peer gets 0xA900, the server logs one line that shows the value
escaped, the dataset fragments that follow are read and dropped (nothing in ``tmp/`` or
the blob store), and the same association then stores a valid instance.

The command sets are built by hand (pynetdicom and pydicom refuse to encode such
values), on the raw-PDU helpers of ``tests/reliability/wire.py``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

from tests.conftest import PacsdProcess, _start
from tests.reliability import wire

SC = wire.SECONDARY_CAPTURE
#: The context the stores go on (wire.associate's default: Secondary Capture, Explicit LE).
CONTEXT = 3
DATASET_DOES_NOT_MATCH = 0xA900
SOP_CLASS_NOT_SUPPORTED = 0x0122
VALID_INSTANCE = "1.2.826.0.1.3680043.8.498.1"
#: Absent from the command set altogether.
MISSING = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PacsdProcess]:
    """One pacsd for the module: every case runs on its own association, and checks
    what it left against what was there before it."""
    started = _start(tmp_path_factory.mktemp("invalid_store_uids"))
    yield started
    started.proc.terminate()
    started.proc.wait(15)


def _element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _padded(raw: bytes) -> bytes:
    return raw + b"\0" if len(raw) % 2 else raw


def _store_command(sop_class: bytes | None, instance: bytes | None, message_id: int) -> bytes:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1, Implicit VR LE) carrying the UIDs as
    the given bytes, whatever they are; None leaves the element out."""
    elements = [
        (0x00000002, None if sop_class is None else _padded(sop_class)),
        (0x00000100, struct.pack("<H", 0x0001)),
        (0x00000110, struct.pack("<H", message_id)),
        (0x00000700, struct.pack("<H", 0)),
        (0x00000800, struct.pack("<H", 0x0000)),  # a dataset follows
        (0x00001000, None if instance is None else _padded(instance)),
    ]
    body = b"".join(_element(tag, value) for tag, value in elements if value is not None)
    return _element(0x00000000, struct.pack("<I", len(body))) + body


def _dataset(instance: str) -> bytes:
    """A small Secondary Capture dataset, Explicit VR Little Endian (the context's)."""
    ds = Dataset()
    ds.SOPClassUID = SC
    ds.SOPInstanceUID = instance
    ds.PatientID = "INVALID-UIDS"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.ImageComments = "x" * 2000  # room for two fragments
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    write_dataset(buf, ds)
    return bytes(buf.getvalue())


def _store_answer(
    sock: socket.socket, sop_class: bytes | None, instance: bytes | None, data: bytes, mid: int
) -> bytes:
    """Send one C-STORE-RQ, its dataset in two P-DATA-TF fragments, and return the
    answer's bytes (fails if the answer is not a P-DATA-TF)."""
    sock.sendall(wire.p_data(CONTEXT, _store_command(sop_class, instance, mid), command=True))
    half = len(data) // 2
    sock.sendall(wire.p_data(CONTEXT, data[:half], command=False, last=False))
    sock.sendall(wire.p_data(CONTEXT, data[half:], command=False, last=True))
    answer = wire.read_answer(sock, 5.0, until_closed=False)
    assert answer.first == wire.P_DATA, f"no C-STORE-RSP: {answer}"
    return answer.raw


def _store(
    sock: socket.socket, sop_class: bytes | None, instance: bytes | None, data: bytes, mid: int
) -> int:
    """``_store_answer``'s Status."""
    raw = _store_answer(sock, sop_class, instance, data, mid)
    status = wire._status(raw)
    assert status is not None, raw
    return status


def _affected_sop_class(raw: bytes) -> str | None:
    """The Affected SOP Class UID (0000,0002) of the command in an answer, if any."""
    at = raw.find(struct.pack("<HH", 0x0000, 0x0002))
    if at < 0:
        return None
    (length,) = struct.unpack("<L", raw[at + 4 : at + 8])
    return raw[at + 8 : at + 8 + length].rstrip(b"\0").decode("ascii")


def _shown(raw: bytes) -> str:
    """How the log line shows a value: as text if it is ASCII, else as escaped bytes."""
    return repr(raw.decode("ascii")) if raw.isascii() else repr(raw)


def _leftovers(server: PacsdProcess) -> tuple[list[str], set[str]]:
    """(files in tmp/, instance UIDs in the blob store)."""
    tmp = sorted(p.name for p in (server.data_dir / "tmp").iterdir())
    return tmp, {p.stem for p in (server.data_dir / "blobs").rglob("*.dcm")}


CASES = {
    "non-ASCII SOP Instance UID": (SC.encode(), "1.2.826.0.1.3680043.8.498.\u00e9".encode()),
    "non-ASCII SOP Class UID": ("1.2.840.10008.5.1.4.1.1.\u00e97".encode(), b"1.2.3.4.5"),
    "Latin-1 byte in the SOP Instance UID": (SC.encode(), b"1.2.3.\xe9"),
    "SOP Instance UID of 65 characters": (SC.encode(), ("1." * 32 + "1").encode()),
    "letters in the SOP Instance UID": (SC.encode(), b"1.2.abc"),
    "empty component in the SOP Instance UID": (SC.encode(), b"1..2"),
    "letters in the SOP Class UID": (b"1.2.abc", b"1.2.3.4.6"),
    "no SOP Instance UID": (SC.encode(), MISSING),
}


@pytest.mark.parametrize(("sop_class", "instance"), list(CASES.values()), ids=list(CASES))
def test_invalid_uid_is_answered_a900_and_the_association_goes_on(
    server: PacsdProcess, sop_class: bytes, instance: bytes | None
) -> None:
    tmp_before, blobs_before = _leftovers(server)
    assert tmp_before == []
    sock = wire.associate(server.dicom_port)
    with sock:
        # The dataset is a valid one: only the command set is wrong.
        refused = _store(sock, sop_class, instance, _dataset(VALID_INSTANCE), mid=1)
        assert refused == DATASET_DOES_NOT_MATCH
        # Nothing of the refused dataset was spooled or stored.
        assert _leftovers(server) == ([], blobs_before)

        # The association is still up, in step, and stores a valid instance.
        good = generate_uid()
        assert _store(sock, SC.encode(), good.encode(), _dataset(good), mid=2) == 0x0000
        sock.sendall(wire.release_rq())
        assert wire.read_answer(sock, 5.0, until_closed=False).first == wire.RELEASE_RP
    assert _leftovers(server) == ([], blobs_before | {good})

    bad_class = sop_class.rstrip(b"\0") != SC.encode()
    what, value = ("Class", sop_class) if bad_class else ("Instance", instance)
    if value is None:
        why = f"no Affected SOP {what} UID"
    else:
        why = f"invalid Affected SOP {what} UID {_shown(value)}"
    log = server.wait_for_log(why)
    lines = [line for line in log.splitlines() if why in line]
    assert len(lines) == 1, lines
    assert " WARNING " in lines[0] and "0xA900" in lines[0], lines[0]
    assert "invalid PDU" not in log and "Traceback" not in log
    assert server.stderr_path.read_bytes().isascii(), "a received byte reached the log raw"


@pytest.mark.parametrize(
    ("sop_class", "echoed"),
    [(b"1.2.3", "1.2.3"), (b"1.2.abc", SC)],
    ids=["valid class echoed", "invalid class: the context's"],
)
def test_the_answer_to_a_refused_store_echoes_its_valid_sop_class(
    server: PacsdProcess, sop_class: bytes, echoed: str
) -> None:
    """PS3.7 9.3.1.2: a C-STORE-RSP's Affected SOP Class UID, when present, equals the
    request's. A refusal for an invalid instance UID once answered with some storage
    class of pacsd's choosing (pynetdicom needed one to hand the request on)."""
    sock = wire.associate(server.dicom_port)
    with sock:
        raw = _store_answer(sock, sop_class, b"1.2.abc", _dataset(VALID_INSTANCE), mid=1)
        assert wire._status(raw) == DATASET_DOES_NOT_MATCH
        assert _affected_sop_class(raw) == echoed
        sock.sendall(wire.release_rq())
        assert wire.read_answer(sock, 5.0, until_closed=False).first == wire.RELEASE_RP


@pytest.mark.parametrize(
    "sop_class", ["1.2.3", "1.2.840.10008.5.1.4.1.1.2"], ids=["not storage", "CT"]
)
def test_a_command_naming_another_sop_class_than_its_context_is_refused(
    server: PacsdProcess, sop_class: str
) -> None:
    """A valid SOP Class UID that is not the presentation context's: pynetdicom found
    no service class for a non-storage one and aborted the association, leaving the
    spooled dataset in ``tmp/``, and stored the other under a class its context did
    not negotiate. Both are answered 0x0122, nothing is kept, the association goes on."""
    tmp_before, blobs_before = _leftovers(server)
    instance = generate_uid()
    sock = wire.associate(server.dicom_port)
    with sock:
        status = _store(sock, sop_class.encode(), instance.encode(), _dataset(instance), mid=1)
        assert status == SOP_CLASS_NOT_SUPPORTED
        assert _leftovers(server) == (tmp_before, blobs_before)
        good = generate_uid()
        assert _store(sock, SC.encode(), good.encode(), _dataset(good), mid=2) == 0x0000
        sock.sendall(wire.release_rq())
        assert wire.read_answer(sock, 5.0, until_closed=False).first == wire.RELEASE_RP
    assert _leftovers(server) == (tmp_before, blobs_before | {good})
    why = f"its SOP Class {sop_class} is not the one of its presentation context ({SC})"
    lines = [line for line in server.wait_for_log(why).splitlines() if why in line]
    assert len(lines) == 1 and "refused with 0x0122" in lines[0], lines
