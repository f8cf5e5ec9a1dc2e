"""UIDs add-ins name in their declarations, so they need not import pydicom to spell them."""

from __future__ import annotations

VERIFICATION = "1.2.840.10008.1.1"

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

#: The uncompressed syntaxes every DICOM peer can speak. Offering few syntaxes keeps
#: association setup cheap: pynetdicom copies the whole context list per association.
UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)


def _storage_sop_classes() -> tuple[str, ...]:
    """Every non-retired Storage SOP class pydicom knows (PS3.4 Annex B), for C-GET."""
    from pydicom.uid import UID_dictionary

    return tuple(
        uid
        for uid, (name, kind, _info, retired, _keyword) in UID_dictionary.items()
        if kind == "SOP Class"
        and name.endswith(" Storage")
        and not retired
        and uid != "1.2.840.10008.1.3.10"  # Media Storage Directory: not sent by C-STORE
    )


#: All Storage SOP classes: what a C-GET handler may send back by default.
ALL_STORAGE: tuple[str, ...] = _storage_sop_classes()


def _all_transfer_syntaxes() -> tuple[str, ...]:
    from pydicom.uid import AllTransferSyntaxes

    return tuple(str(uid) for uid in AllTransferSyntaxes)


#: Every transfer syntax pydicom knows: what an archive storing bit for bit accepts.
ALL_TRANSFER_SYNTAXES: tuple[str, ...] = _all_transfer_syntaxes()
