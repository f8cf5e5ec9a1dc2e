"""P-DATA-TF PDUs handed to DIMSE straight from the buffer they were read into.

For each P-DATA-TF, pynetdicom copies the PDU (``bytes()``), builds a PDU object whose
items copy their slice of it again, queues an event, runs the state machine (Sta6 +
Evt10 is DT-2, which stays in Sta6), and converts the PDU into the P-DATA primitive
DIMSE assembles messages from. A 0.5 MB instance in 128 KB PDUs went through that
five times. The transition is fixed, so when it would run at once (nothing else
queued for the state machine) and nobody watches those steps (no handler bound to
the raw-data, PDU or state-machine events), :func:`deliver` builds the same primitive
around views of the buffer and gives it to DIMSE there and then, as DT-2 would.
A PDU whose items do not add up is left to pynetdicom, which refuses it as before.
"""

from __future__ import annotations

import struct
from typing import Any

from pynetdicom import evt
from pynetdicom.pdu_primitives import P_DATA

#: Events whose handlers would miss a PDU delivered here.
_WATCHED = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_FSM_TRANSITION)
_unpack_length = struct.Struct(">I").unpack_from


def pdv_items(pdu: bytearray) -> list[list[Any]] | None:
    """[context ID, message control header + fragment] per PDV item of a P-DATA-TF
    (header included), as views of ``pdu``; None unless the items fill it exactly."""
    view = memoryview(pdu)
    end = len(pdu)
    pos = 6
    items: list[list[Any]] = []
    while pos < end:
        if pos + 4 > end:
            return None
        (length,) = _unpack_length(pdu, pos)
        if length < 2 or pos + 4 + length > end:
            return None
        items.append([pdu[pos + 4], view[pos + 5 : pos + 4 + length]])
        pos += 4 + length
    return items or None


def ends_data_set(pdu: bytearray) -> bool:
    """True when a P-DATA-TF's last PDV item is the last fragment of a data set (its
    message is then complete); False for anything else, malformed items included."""
    end = len(pdu)
    pos = 6
    last = -1
    while pos + 6 <= end:
        (length,) = _unpack_length(pdu, pos)
        if length < 2 or pos + 4 + length > end:
            return False
        last = pdu[pos + 5]
        pos += 4 + length
    return pos == end and last >= 0 and last & 0x03 == 0x02


def deliver(dul: Any, pdu: bytearray) -> bool:
    """Give a P-DATA-TF to DIMSE now; False to leave it to pynetdicom's path."""
    if dul.state_machine.current_state != "Sta6" or not dul.event_queue.empty():
        return False
    assoc = dul.assoc
    if any(assoc.get_handlers(event) for event in _WATCHED):
        return False
    items = pdv_items(pdu)
    if items is None:
        return False
    primitive = P_DATA()
    # The setter insists on bytes; views spare a copy of every fragment, and the
    # spooling message assembly (spool.py) reads them as it would bytes.
    primitive._presentation_data_value_list = items  # type: ignore[assignment]
    assoc.dimse.receive_primitive(primitive)
    return True
