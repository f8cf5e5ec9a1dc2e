"""pacsd's response encoder writes exactly the bytes pynetdicom and pydicom write.

Every case encodes the same message twice, once each way, from objects built afresh
(pydicom caches encoded person names), and compares bytes. Cases the fast path takes
also assert that it took them, so a fast path that always fell back would fail here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from io import BytesIO
from typing import Any

import pytest
from pacsd.addin import DimseMessage
from pacsd.server.dicom import dimse_encode
from pacsd.server.dicom.dimse_encode import (
    encode_command_set,
    encode_dataset,
    encode_identifier,
    pdata_pdus,
)
from pacsd.server.dicom.events import summarize
from pacsd.server.dicom.send_path import SentCommandSet, sent_message
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pynetdicom.dimse import _RSP_TO_MESSAGE
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE, N_GET
from pynetdicom.dsutils import encode as pynetdicom_encode
from pynetdicom.pdu import P_DATA_TF

# -- identifiers ------------------------------------------------------------------------


def _study(**extra: Any) -> Callable[[], Dataset]:
    def build() -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientName = "SMITH^JOHN"
        ds.PatientID = "PID00000001"
        ds.StudyDate = "20150601"
        ds.StudyTime = "120000"
        ds.AccessionNumber = ""
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1234.1.12345"
        ds.NumberOfStudyRelatedInstances = 40
        ds.ModalitiesInStudy = ["CT", "MR"]
        for keyword, value in extra.items():
            setattr(ds, keyword, value)
        return ds

    return build


def _elements(*elements: tuple[int, str, Any], charset: Any = None) -> Callable[[], Dataset]:
    def build() -> Dataset:
        ds = Dataset()
        if charset is not None:
            ds.SpecificCharacterSet = charset
        for tag, vr, value in elements:
            ds.add_new(tag, vr, value)
        return ds

    return build


FAST_IDENTIFIERS: dict[str, Callable[[], Dataset]] = {
    "study level": _study(),
    "odd lengths": _study(PatientID="PID1", StudyInstanceUID="1.2.3", AccessionNumber="A"),
    "empty values": _elements(
        (0x00080020, "DA", ""),
        (0x00080050, "SH", None),
        (0x00100010, "PN", ""),
        (0x00200013, "IS", None),
        (0x00280010, "US", None),
        (0x0020000D, "UI", ""),
        (0x00080061, "CS", []),
        (0x00081030, "LO", None),
    ),
    "multi-valued": _elements(
        (0x00080061, "CS", ["CT", "MR", "PT"]),
        (0x00081150, "UI", ["1.2.3", "1.2.840.10008.5.1.4.1.1.2"]),
        (0x00100010, "PN", ["DOE^JANE", "DOE^J"]),
        (0x00200037, "DS", ["1", "0", "0", "0", "1", "0.5"]),
        (0x00200013, "IS", ["1", "22"]),
        (0x00280010, "US", [1, 2, 3]),
        (0x00081030, "LO", ["first", "second one"]),
        (0x00209165, "AT", [0x00100010, 0x0020000D]),
    ),
    "every flat VR": _elements(
        (0x00080054, "AE", "ARCHIVE"),
        (0x00101010, "AS", "045Y"),
        (0x00080060, "CS", "CT"),
        (0x00080020, "DA", "20240229"),
        (0x0008002A, "DT", "20240229123456.5"),
        (0x00080030, "TM", "1234"),
        (0x00080120, "UR", "http://example.org/a"),
        (0x0020000D, "UI", "1.2.3.4.5"),
        (0x00081030, "LO", "Chest CT"),
        (0x00204000, "LT", "free text\\ with a backslash"),
        (0x00080050, "SH", "ACC1"),
        (0x00324000, "ST", "study comments"),
        (0x00400441, "UC", "unlimited characters"),
        (0x00400280, "UT", "unlimited text"),
        (0x00100010, "PN", "DOE^JOHN^^DR^"),
        (0x00200013, "IS", 7),
        (0x00101020, "DS", 1.75),
        (0x00280010, "US", 512),
        (0x00189219, "SS", -3),
        (0x00081161, "UL", 4000000000),
        (0x00186020, "SL", -70000),
        (0x00189445, "FL", 1.5),
        (0x00189087, "FD", 2.25),
        (0x0040A163, "UV", 2**40),
        (0x0040A162, "SV", -(2**40)),
        (0x00209165, "AT", 0x7FE00010),
    ),
    "DS and IS keep their text": _elements(
        (0x00101020, "DS", "1.50"), (0x00200013, "IS", "007"), (0x00101030, "DS", "70")
    ),
    "person name components": _elements(
        (0x00100010, "PN", "Yamada^Tarou=="), (0x00081060, "PN", "A=^=")
    ),
    "private and group length": _elements(
        (0x00080000, "UL", 12),
        (0x00090010, "LO", "ACME 1.0"),
        (0x00091001, "LO", "vendor value"),
        (0x00100010, "PN", "X^Y"),
    ),
    "UTF-8": _study(
        SpecificCharacterSet="ISO_IR 192",
        PatientName="Müller^Jürgen=山田^太郎",
        StudyDescription="Тест ünïcödé",
    ),
    "Latin-1": _study(SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jürgen"),
    "Latin-1 without a character set": _study(PatientName="Müller^Jürgen"),
    "Cyrillic": _study(SpecificCharacterSet="ISO_IR 144", PatientName="Иванов^Пётр"),
    "Greek": _study(SpecificCharacterSet="ISO_IR 126", PatientName="Διονυσιος"),
    "ISO 2022 Japanese": _study(
        SpecificCharacterSet=["", "ISO 2022 IR 87"],
        PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう",
        StudyDescription="ASCII only",
    ),
    "ISO 2022 Korean": _study(
        SpecificCharacterSet=["", "ISO 2022 IR 149"], PatientName="Hong^Gildong=洪^吉洞=홍^길동"
    ),
    "GB18030": _study(SpecificCharacterSet="GB18030", PatientName="Wang^XiaoDong=王^小东="),
    "ASCII with UTF-8 declared": _study(SpecificCharacterSet="ISO_IR 192"),
}

SYNTAXES = [
    pytest.param(True, False, id="implicit"),
    pytest.param(False, False, id="explicit"),
    pytest.param(False, True, id="deflated"),
]


@pytest.mark.parametrize(("implicit", "deflated"), SYNTAXES)
@pytest.mark.parametrize("name", sorted(FAST_IDENTIFIERS))
def test_identifier_bytes_match_pydicom(name: str, implicit: bool, deflated: bool) -> None:
    build = FAST_IDENTIFIERS[name]
    expected = pynetdicom_encode(build(), implicit, True, deflated)
    fast = encode_identifier(build(), implicit, True, deflated)
    assert expected is not None
    assert fast is not None, "the fast path should handle this identifier"
    assert fast == expected


def _sequence() -> Dataset:
    ds = _study()()
    item = Dataset()
    item.CodeValue = "X"
    ds.ProcedureCodeSequence = Sequence([item])
    return ds


def _raw() -> Dataset:
    # Elements still encoded, as read from the wire: pydicom converts them first.
    from pydicom.filereader import read_dataset

    encoded = pynetdicom_encode(_study()(), True, True)
    assert encoded is not None
    return read_dataset(BytesIO(encoded), True, True)


def _too_long_for_explicit() -> Dataset:
    ds = _study()()
    ds.StudyDescription = "x" * 70000  # LO: a 16-bit length in Explicit VR
    return ds


FALLBACKS: dict[str, Callable[[], Dataset]] = {
    "sequence": _sequence,
    "raw elements": _raw,
    "binary VR": _elements((0x00291010, "OB", b"\x01\x02\x03")),
    "ambiguous VR": _elements((0x00280106, "US or SS", 5)),
    "value longer than 64 KiB": _too_long_for_explicit,
    "decimal DS": lambda: _decimal_ds(),
}


def _decimal_ds() -> Dataset:
    from decimal import Decimal

    from pydicom import config

    ds = Dataset()
    config.use_DS_decimal = True
    try:
        ds.add_new(0x00101020, "DS", Decimal("1.25"))
    finally:
        config.use_DS_decimal = False
    return ds


@pytest.mark.filterwarnings("ignore:.*(exceeds|changed from).*:UserWarning")  # the 64 KiB LO
@pytest.mark.parametrize(("implicit", "deflated"), SYNTAXES)
@pytest.mark.parametrize("name", sorted(FALLBACKS))
def test_what_it_does_not_handle_goes_to_pydicom(name: str, implicit: bool, deflated: bool) -> None:
    build = FALLBACKS[name]
    fast = encode_identifier(build(), implicit, True, deflated)
    if name == "value longer than 64 KiB" and implicit:
        assert fast == pynetdicom_encode(build(), implicit, True, deflated)  # 32-bit length
        return
    assert fast is None
    assert encode_dataset(build(), implicit, True, deflated) == pynetdicom_encode(
        build(), implicit, True, deflated
    )


def test_big_endian_goes_to_pydicom() -> None:
    assert encode_identifier(_study()(), False, False) is None
    assert encode_dataset(_study()(), False, False) == pynetdicom_encode(_study()(), False, False)


def test_text_no_encoding_takes_is_left_to_pydicom_rules() -> None:
    # pydicom warns and writes replacement characters; the result must still be its own.
    build = _study(SpecificCharacterSet="ISO_IR 100", StudyDescription="山田")
    with pytest.warns(UserWarning):
        expected = pynetdicom_encode(build(), True, True)
    with pytest.warns(UserWarning):
        assert encode_dataset(build(), True, True) == expected


def test_install_routes_service_class_encoding() -> None:
    from pynetdicom import service_class

    dimse_encode.install()
    assert service_class.encode is encode_dataset


def test_install_logs_identifiers_only_when_pynetdicom_would_print_them() -> None:
    from pynetdicom import _config, service_class

    logger = service_class.LOGGER
    level = logger.level
    try:
        for set_level, request, response in (
            (logging.WARNING, False, False),
            (logging.INFO, True, False),
            (logging.DEBUG, True, True),
        ):
            logger.setLevel(set_level)
            dimse_encode.install()
            assert _config.LOG_REQUEST_IDENTIFIERS is request
            assert _config.LOG_RESPONSE_IDENTIFIERS is response
    finally:
        logger.setLevel(level)
        dimse_encode.install()


# -- command sets -----------------------------------------------------------------------

CLASS_UID = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root FIND (odd length)
CT = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage (odd length)
VERIFICATION = "1.2.840.10008.1.1"  # odd length


def _status(status: int, **fields: Any) -> Dataset:
    ds = Dataset()
    ds.Status = status
    for keyword, value in fields.items():
        setattr(ds, keyword, value)
    return ds


def _apply(rsp: Any, status: int | Dataset) -> Any:
    """What pynetdicom's ServiceClass.validate_status does with a handler's status."""
    if isinstance(status, Dataset):
        for elem in status:
            if hasattr(rsp, elem.keyword):
                setattr(rsp, elem.keyword, elem.value)
    else:
        rsp.Status = status
    return rsp


STATUSES: dict[str, int | Dataset] = {
    "success": 0x0000,
    "pending": 0xFF00,
    "pending with warning": 0xFF01,
    "warning": 0xB000,
    "cancel": 0xFE00,
    "failure": 0xC000,
    "failure with comment (odd)": _status(0xC311, ErrorComment="bad"),
    "failure with comment (even)": _status(0xA700, ErrorComment="disk full"),
    "failure with empty comment": _status(0xC001, ErrorComment=""),
    "failure with offending element": _status(0xA900, OffendingElement=0x00100010),
    "failure with offending elements": _status(
        0xA900, OffendingElement=[0x00100010, 0x0020000D], ErrorComment="Bad keys"
    ),
    "refused": 0x0124,
}


def _response(kind: type, status: int | Dataset, identifier: BytesIO | None, msg_id: int) -> Any:
    rsp = kind()
    rsp.MessageIDBeingRespondedTo = msg_id
    rsp.MessageID = msg_id
    uids: dict[type, str] = {C_ECHO: VERIFICATION, C_STORE: CT}
    rsp.AffectedSOPClassUID = uids.get(kind, CLASS_UID)
    if kind is C_STORE:
        rsp.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.10.1234.3.1.2.3"
    if kind in (C_GET, C_MOVE):
        rsp.NumberOfRemainingSuboperations = 3
        rsp.NumberOfCompletedSuboperations = 65535
        rsp.NumberOfFailedSuboperations = 0
        rsp.NumberOfWarningSuboperations = 1
    if identifier is not None:
        rsp.Identifier = identifier
    return _apply(rsp, status)


def _pynetdicom_message(primitive: Any) -> Any:
    msg = _RSP_TO_MESSAGE[type(primitive)]()
    msg.primitive_to_message(primitive)
    return msg


KINDS = [C_ECHO, C_STORE, C_FIND, C_GET, C_MOVE]
IDENTIFIERS: dict[str, Callable[[], BytesIO | None]] = {
    "none": lambda: None,
    "empty": BytesIO,
    "match": lambda: BytesIO(pynetdicom_encode(_study()(), True, True)),  # type: ignore[arg-type]
}


COMMAND_CASES = [
    pytest.param(kind, status, identifier, id=f"{kind.__name__}-{status}-{identifier}")
    for kind in KINDS
    for status in sorted(STATUSES)
    # C-ECHO and C-STORE responses never carry a dataset
    for identifier in (sorted(IDENTIFIERS) if kind in (C_FIND, C_GET, C_MOVE) else ["none"])
]


@pytest.mark.parametrize(("kind", "status", "identifier"), COMMAND_CASES)
def test_command_set_bytes_match_pynetdicom(kind: type, status: str, identifier: str) -> None:
    for msg_id in (0, 1, 65535):
        expected_msg = _pynetdicom_message(
            _response(kind, STATUSES[status], IDENTIFIERS[identifier](), msg_id)
        )
        expected = pynetdicom_encode(expected_msg.command_set, True, True)
        fast = encode_command_set(
            _response(kind, STATUSES[status], IDENTIFIERS[identifier](), msg_id)
        )
        assert fast is not None
        assert fast.data == expected
        assert fast.message_type == type(expected_msg).__name__


@pytest.mark.parametrize("max_pdu", [0, 16, 101, 16384, 131072])
@pytest.mark.parametrize("kind", [C_FIND, C_GET, C_STORE], ids=lambda k: k.__name__)
def test_pdus_match_pynetdicom(kind: type, max_pdu: int) -> None:
    identifier = IDENTIFIERS["match" if kind is not C_STORE else "none"]
    big = _study(TextValue="y" * 40000)  # UT: several PDUs at small maximum lengths
    for make in (identifier, lambda: BytesIO(pynetdicom_encode(big(), False, True))):  # type: ignore[arg-type]
        if kind is C_STORE and make is not identifier:
            continue
        expected = b""
        for pdata in _pynetdicom_message(_response(kind, 0xFF00, make(), 7)).encode_msg(5, max_pdu):
            pdu = P_DATA_TF()
            pdu.from_primitive(pdata)
            expected += pdu.encode()
        primitive = _response(kind, 0xFF00, make(), 7)
        fast = encode_command_set(primitive)
        assert fast is not None
        data = primitive.Identifier.getvalue() if kind is not C_STORE else None
        assert pdata_pdus(5, fast.data, data, max_pdu) == expected


def test_command_sets_it_does_not_handle() -> None:
    request = C_FIND()
    request.MessageID = 1
    request.AffectedSOPClassUID = CLASS_UID
    assert encode_command_set(request) is None  # requests: pynetdicom
    n_get = N_GET()
    n_get.MessageIDBeingRespondedTo = 1
    n_get.Status = 0
    assert encode_command_set(n_get) is None  # DIMSE-N: pynetdicom
    rsp = _response(C_FIND, _status(0xC000, ErrorComment="naïve"), None, 1)
    assert encode_command_set(rsp) is None  # non-ASCII comment: pydicom's charset rules
    rsp = _response(C_FIND, 0xC000, None, 1)
    rsp.OffendingElement = (0x0010, 0x0010)  # a tuple pydicom reads as one tag
    assert encode_command_set(rsp) is None


# -- what observers see -------------------------------------------------------------------


def test_sent_command_set_reads_like_pynetdicoms() -> None:
    status = _status(0xA900, OffendingElement=[0x00100010], ErrorComment="Bad key")
    identifier = BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    primitive = _response(C_FIND, status, identifier, 9)
    expected = _pynetdicom_message(_response(C_FIND, status, BytesIO(identifier.getvalue()), 9))
    fast = encode_command_set(primitive)
    assert fast is not None
    msg = sent_message(fast, 3, identifier)
    assert type(msg) is type(expected)
    assert msg.context_id == 3 and msg.data_set is identifier
    cs = msg.command_set
    assert isinstance(cs, SentCommandSet)
    reference = expected.command_set
    for keyword in (
        "CommandGroupLength",
        "AffectedSOPClassUID",
        "CommandField",
        "MessageIDBeingRespondedTo",
        "CommandDataSetType",
        "Status",
        "ErrorComment",
        "RequestedSOPClassUID",
        "AffectedSOPInstanceUID",
        "NumberOfRemainingSuboperations",
    ):
        assert cs.get(keyword) == reference.get(keyword), keyword
        assert getattr(cs, keyword, None) == getattr(reference, keyword, None), keyword
    assert cs.get("OffendingElement") == reference.get("OffendingElement") == Tag(0x00100010)
    assert [(e.tag, e.value) for e in cs] == [(e.tag, e.value) for e in reference]
    assert "Status" in cs and cs["Status"].value == 0xA900
    assert summarize(msg) == summarize(expected)
    view = DimseMessage(cs, service="C-FIND", direction="sent", writable=False)
    assert (
        view.fields()
        == DimseMessage(reference, service="C-FIND", direction="sent", writable=False).fields()
    )
    assert view.status == 0xA900 and view.message_id == 9


def test_sent_message_for_responses_without_dataset() -> None:
    fast = encode_command_set(_response(C_STORE, 0x0000, None, 2))
    assert fast is not None
    msg = sent_message(fast, 1, None)
    assert msg.data_set.getvalue() == b""  # like pynetdicom's C_STORE_RSP
    assert msg.command_set.get("CommandDataSetType") == 0x0101
