"""pynetdicom's C-FIND SCP loop, with its per-response work done once per request.

pynetdicom 3.0.4's ``ServiceClass._c_find_scp`` answers each match by reading three
properties of the transfer syntax UID (each a walk through pydicom's UID dictionary),
formatting an INFO line whether or not INFO is logged, and validating a Status that
dispatch already made an ``int``. For a 250-match answer that was ~7 % of the server's
time. ``find_scp`` is the same loop, in the same order, with the same statuses,
messages and log lines, except that the transfer syntax is read once, the per-response
lines are formatted only when INFO is on, and an ``int`` Status the service class knows
is set without ``validate_status`` (which would accept it unchanged). ``install`` puts
it in place of the original for every C-FIND service class (Query/Retrieve, worklist,
...), as ``dimse_encode.install`` does for identifier encoding.
"""

from __future__ import annotations

import logging
import traceback
from io import BytesIO
from typing import Any

from pacsd.server.dicom import send_path
from pydicom.dataset import Dataset
from pynetdicom import _config, evt, service_class
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import decode, pretty_dataset
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import (
    STATUS_CANCEL,
    STATUS_FAILURE,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_WARNING,
)

#: pynetdicom's own logger: the lines below are the ones it writes.
LOGGER = service_class.LOGGER
_ORIGINAL = service_class.ServiceClass._c_find_scp


def install() -> None:
    """Use ``find_scp`` for every service class's C-FIND (idempotent)."""
    if service_class.ServiceClass._c_find_scp is not find_scp:
        service_class.ServiceClass._c_find_scp = find_scp  # type: ignore[method-assign]


def find_scp(self: service_class.ServiceClass, req: C_FIND, context: PresentationContext) -> None:
    """pynetdicom 3.0.4's ``ServiceClass._c_find_scp`` (see the module docstring)."""
    cx_id: int = context.context_id  # type: ignore[assignment]
    transfer_syntax = context.transfer_syntax[0]
    implicit = transfer_syntax.is_implicit_VR
    little = transfer_syntax.is_little_endian
    deflated = transfer_syntax.is_deflated

    rsp = C_FIND()
    rsp.MessageID = req.MessageID
    rsp.MessageIDBeingRespondedTo = req.MessageID
    rsp.AffectedSOPClassUID = req.AffectedSOPClassUID

    if _config.LOG_REQUEST_IDENTIFIERS:
        try:
            identifier = decode(req.Identifier, implicit, little, deflated)  # type: ignore[arg-type]
            LOGGER.info("Find SCP Request Identifier:")
            LOGGER.info("")
            LOGGER.info("# DICOM Dataset")
            for line in pretty_dataset(identifier):
                LOGGER.info(line)
            LOGGER.info("")
        except Exception:
            pass  # the user should deal with decoding failures (pynetdicom)

    with service_class.attempt(rsp, self.dimse, cx_id, self.assoc) as ctx:
        ctx.error_msg = "Exception in handler bound to 'evt.EVT_C_FIND'"
        ctx.error_status = 0xC311
        generator = evt.trigger(
            ctx.assoc,
            evt.EVT_C_FIND,
            {
                "request": req,
                "context": context.as_tuple,
                "_is_cancelled": self.is_cancelled,
            },
        )
    if not ctx.success or not self.assoc.is_established:
        return
    if generator is None:
        generator = iter([(0x0000, None)])

    assoc = self.assoc
    # Responses leave in one write per batch of matches (send_path.hold): dispatch
    # flushes them before it waits for the next batch, and the end of the answer does.
    send_path.hold(assoc)
    try:
        _respond(self, rsp, cx_id, generator, implicit, little, deflated)
    finally:
        send_path.flush(assoc, stop=True)


def _respond(
    self: service_class.ServiceClass,
    rsp: C_FIND,
    cx_id: int,
    generator: Any,
    implicit: bool,
    little: bool,
    deflated: bool,
) -> None:
    """The response loop of ``find_scp``: one response per result, then Success."""
    assoc, dimse, statuses = self.assoc, self.dimse, self.statuses
    info = LOGGER.isEnabledFor(logging.INFO)
    # Looked up per request: dimse_encode.install replaces the module's encode.
    encode = service_class.encode
    ii = -1
    for ii, (result, exc) in enumerate(self._wrap_handler(generator)):
        rsp.Identifier = None
        dataset: Dataset | None
        if exc:
            LOGGER.error("Exception in handler bound to 'evt.EVT_C_FIND'")
            LOGGER.error(
                "\nTraceback (most recent call last):\n"
                + "".join(traceback.format_tb(exc[2]))
                + f"{exc[0].__name__}: {exc[1]}"  # type: ignore[union-attr]
            )
            rsp_status: Any = 0xC311
            dataset = None
        else:
            rsp_status, dataset = result  # type: ignore[misc]

        if not assoc.is_established:
            return

        if type(rsp_status) is int and rsp_status in statuses:
            rsp.Status = rsp_status  # what validate_status does with a known int
        else:
            rsp = self.validate_status(rsp_status, rsp)

        status = statuses.get(rsp.Status)  # type: ignore[arg-type]
        if status is None:  # unknown status
            dimse.send_msg(rsp, cx_id)
            return
        kind = status[0]
        if kind == STATUS_PENDING:
            enc = encode(dataset, implicit, little, deflated)  # type: ignore[arg-type]
            bytestream = BytesIO(enc)  # type: ignore[arg-type]
            if bytestream.getvalue() == b"":
                LOGGER.error("Failed encoding the response 'Identifier' dataset")
                rsp.Status = 0xC312
                dimse.send_msg(rsp, cx_id)
                return
            rsp.Identifier = bytestream
            if info:
                LOGGER.info(f"Find SCP Response {ii + 1}: 0x{rsp.Status:04X} (Pending)")
            if _config.LOG_RESPONSE_IDENTIFIERS:
                LOGGER.debug("Find SCP Response Identifier:")
                LOGGER.debug("")
                LOGGER.debug("# DICOM Dataset")
                for line in pretty_dataset(dataset):  # type: ignore[arg-type]
                    LOGGER.debug(line)
                LOGGER.debug("")
            dimse.send_msg(rsp, cx_id)
            continue
        if kind == STATUS_CANCEL:
            LOGGER.info("Received C-CANCEL-FIND RQ from peer")
            LOGGER.info(f"Find SCP Response {ii + 1}: 0x{rsp.Status:04X} (Cancel)")
            dimse.send_msg(rsp, cx_id)
            return
        if kind == STATUS_FAILURE:
            LOGGER.info(f"Find SCP Response {ii + 1}: 0x{rsp.Status:04X} (Failure - {status[1]})")
            dimse.send_msg(rsp, cx_id)
            return
        if kind == STATUS_SUCCESS:
            LOGGER.info(f"Find SCP Response {ii + 1}: 0x0000 (Success)")
            dimse.send_msg(rsp, cx_id)
            return
        if kind == STATUS_WARNING:
            LOGGER.info(f"Find SCP Response {ii + 1}: 0x{rsp.Status:04X} (Warning - {status[1]})")
            dimse.send_msg(rsp, cx_id)
            continue

    if not assoc.is_established:
        return
    rsp.Identifier = None
    rsp.Status = 0x0000
    LOGGER.info(f"Find SCP Response {ii + 2}: 0x0000 (Success)")
    dimse.send_msg(rsp, cx_id)
