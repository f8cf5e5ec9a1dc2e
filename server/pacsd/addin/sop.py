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
