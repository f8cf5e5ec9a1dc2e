"""Reading PDUs from a peer that may be broken or hostile.

pynetdicom's reader trusts the peer: it blocks without limit on a PDU that stops
halfway, sizes its read by whatever length field arrives (0xFFFFFFFF included), and
answers an undecodable PDU with a traceback in the log, after which it keeps reading
the rest of the stream as more PDUs until the ARTIM timer (``acse_timeout``) ends the
connection. A peer could thus hold a thread forever, make us allocate gigabytes, or
fill the log.

``GuardedDUL`` replaces only the reading step of the upper layer:

- every read and write has a time limit: ``acse_timeout`` until the association is
  negotiated, ``network_timeout`` after; a peer silent for that long mid-PDU is
  treated as gone (the connection closes, a C-STORE's partial data is discarded by the
  close handler);
- a PDU's length is checked before its body is read: an A-ASSOCIATE-RQ may be at most
  ``MAX_ASSOCIATE_RQ`` bytes, a P-DATA-TF at most the maximum PDU length we announced,
  any other PDU ``MAX_OTHER_PDU``;
- a PDU that is too long, of an unknown type or undecodable is an invalid PDU
  (PS3.8 Evt19): the state machine answers it as the protocol says (A-ABORT), one
  line is logged, and the connection is closed at once instead of reading on.

Malformed input is expected and gets one WARNING line; an exception that is not a
decode error (``is_decode_error``) is a bug, and is logged as an ERROR with its
traceback (``UNEXPECTED``) although the peer is answered the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import struct
import time
from typing import Any, cast

import pydicom
import pynetdicom
from pacsd.server.dicom import pdata, reactor, stored_send
from pydicom.errors import BytesLengthException
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import TRANSITION_TABLE, StateMachine
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket
from pynetdicom.utils import make_target

log = logging.getLogger("pacsd.core.dicom")

#: Largest A-ASSOCIATE-RQ accepted (variable part, bytes). Hundreds of presentation
#: contexts and a user identity token fit well below it.
MAX_ASSOCIATE_RQ = 256 * 1024
#: Largest PDU of the other fixed-layout types (A-ASSOCIATE-AC/RJ, release, abort).
MAX_OTHER_PDU = 64 * 1024

_NAMES = {
    0x01: "A-ASSOCIATE-RQ",
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}

#: What the decoders raise on a peer's malformed bytes, as seen in ``bench/fuzz.py``
#: runs: struct.error (a field cut short), ValueError (undecodable text, an AE title or
#: context ID out of range; UnicodeError), AssertionError (pynetdicom checks item
#: layouts with ``assert``), KeyError (an unknown item type or Command Field),
#: AttributeError (a command set without a required element), TypeError (a Command
#: Field with several values), BytesLengthException (an odd-sized binary value),
#: OSError (pydicom: "No tag to read" in a broken sequence, seen once in 100,000 PDUs);
#: IndexError for good measure.
DECODE_ERRORS: tuple[type[Exception], ...] = (
    struct.error,
    OSError,
    ValueError,
    AssertionError,
    KeyError,
    IndexError,
    AttributeError,
    TypeError,
    BytesLengthException,
)
_HERE = os.path.dirname(__file__)
#: Where a decode error must be raised to count as one: pynetdicom, pydicom and
#: pacsd's own decoders of P-DATA-TF and DIMSE messages (the receive path).
_DECODERS = tuple(os.path.dirname(m.__file__ or "") + os.sep for m in (pynetdicom, pydicom)) + (
    tuple(os.path.join(_HERE, f"{name}.py") for name in ("pdata", "spool", "dimse_decode"))
)
#: Marks the log line of an exception that is not a decode error (a bug).
UNEXPECTED = "unexpected error"


def is_decode_error(exc: BaseException) -> bool:
    """True when ``exc`` is how a decoder rejects malformed input: one of
    ``DECODE_ERRORS``, raised in a decoder's code (the innermost frame of its
    traceback, ``_DECODERS``).

    The types alone would hide bugs (an AttributeError anywhere in pacsd looks like one
    from a command set without a Command Field), so where it was raised decides.
    """
    if not isinstance(exc, DECODE_ERRORS):
        return False
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_DECODERS)


def _log_refusal(peer: str, why: str, exc: BaseException | None, answer: str) -> None:
    """One WARNING line for malformed input (``exc`` None or a decode error); for
    anything else an ERROR with the traceback, since only a bug raises it."""
    if exc is None or is_decode_error(exc):
        log.warning("association from %s: %s; %s", peer, why, answer)
    else:
        log.error("association from %s: %s: %s; %s", peer, UNEXPECTED, why, answer, exc_info=exc)


#: PS3.8 events: transport connection closed, invalid or unrecognised PDU.
_CLOSED = "Evt17"
_INVALID = "Evt19"


def install(dul: DULServiceProvider) -> None:
    """Make an acceptor association's upper layer read through the guard (before its
    thread starts)."""
    dul.__class__ = GuardedDUL
    dul.state_machine.__class__ = GuardedStateMachine
    dul._pacsd_waiter = reactor.SocketWaiter(reactor.Wakeup())  # type: ignore[attr-defined]
    # Thread.__init__ bound the base class's run_reactor as the target: rebind it.
    dul._target = make_target(dul.run_reactor)  # type: ignore[attr-defined]
    _quiet_protocol_loggers()


#: Events that come from the local user (a primitive waiting in to_provider_queue).
_LOCAL_EVENTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})


class GuardedStateMachine(StateMachine):
    """Drops an event the state machine has no transition for instead of raising.

    The association thread and the upper layer race: after an invalid PDU the upper
    layer may already wait for the connection to close (Sta13), or be idle (Sta1), when
    negotiation answers A-ASSOCIATE-AC or the association aborts; a stale ARTIM expiry
    or a second "connection closed" can follow the close. pynetdicom raises
    InvalidEventError, which kills the upper layer's thread with a traceback; in every
    such case there is nothing left to do, so the event is dropped (with its primitive,
    for a local one, so it is not offered again).
    """

    def do_action(self, event: str) -> None:
        state = self.current_state
        if (event, state) in TRANSITION_TABLE:
            try:
                super().do_action(event)
            except Exception as exc:
                # An action failed on what the peer sent: an A-ASSOCIATE-RQ that decodes
                # but does not convert (an even presentation context ID, AE-6), say.
                # The state did not change; answer it as an invalid PDU.
                dul = self.dul
                if not isinstance(dul, GuardedDUL):
                    raise
                # pynetdicom's do_action stops the reactor on any failure, which would
                # leave the connection open with nobody reading it: undo that and abort.
                dul._kill_thread = False
                dul._refuse(f"cannot process it in {state} ({_describe(exc)})", exc)
            return
        if event in _LOCAL_EVENTS:
            with contextlib.suppress(queue.Empty):
                self.dul.to_provider_queue.get_nowait()
        log.debug("dropped %s in %s: no transition for it (PS3.8 table 9-10)", event, state)


class _OneLine(logging.Filter):
    """Folds a record's traceback into its message: pynetdicom logs a peer's malformed
    input (an AE title that is not ASCII, a UID it cannot decode) with
    ``LOGGER.exception`` and then carries on; the traceback says nothing about pacsd.
    Any other exception (``is_decode_error``) keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if not is_decode_error(exc):
                return True
            record.msg = f"{record.getMessage()} ({type(exc).__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


#: pynetdicom modules that decode what the peer sent (their ``LOGGER.exception`` calls
#: are all about undecodable input, which they then answer or abort).
_PROTOCOL_LOGGERS = (
    "pynetdicom.utils",
    "pynetdicom.pdu",
    "pynetdicom.pdu_items",
    "pynetdicom.dimse",
    "pynetdicom.dsutils",
    "pynetdicom.fsm",
)
_quieted = False


def _quiet_protocol_loggers() -> None:
    global _quieted
    if not _quieted:
        _quieted = True
        for name in _PROTOCOL_LOGGERS:
            logging.getLogger(name).addFilter(_OneLine())


def a_abort(source: int) -> bytes:
    """An encoded A-ABORT PDU (reason not specified) from ``source`` (0x00 service
    user, 0x02 service provider), for writing to the socket when the upper layer's
    thread cannot send it through the state machine."""
    pdu = A_ABORT_RQ()
    pdu.source = source
    pdu.reason_diagnostic = 0x00
    return bytes(pdu.encode())


def refuse_message(dul: DULServiceProvider, exc: Exception) -> None:
    """A P-DATA-TF whose message cannot be decoded (a command set without a command
    field, a PDV that breaks the fragment rules): abort like an invalid PDU. Called on
    the upper layer's thread, inside the state machine, so it queues the event rather
    than aborting (which would wait for this very thread)."""
    why = f"undecodable DIMSE message ({_describe(exc)})"
    if isinstance(dul, GuardedDUL):
        dul._refuse(why, exc)
    else:  # not guarded (never on pacsd's listener): keep pynetdicom's behaviour
        raise exc


def unusable_request(assoc: Association, exc: Exception) -> str:
    """Log (one line) an A-ASSOCIATE-RQ that decoded but could not be negotiated, and
    say why for the rejection."""
    why = f"unusable A-ASSOCIATE-RQ ({_describe(exc)})"
    info = assoc.requestor.address_info
    peer = f"{info.address}:{info.port}" if info is not None else "unknown peer"
    _log_refusal(peer, why, exc, "rejecting")
    return why


def length_limit(pdu_type: int, negotiating: bool, max_pdu: int) -> int:
    """The largest variable part we read for a PDU of this type.

    ``max_pdu`` is the maximum length we announced for P-DATA-TF (0: none announced,
    then the A-ASSOCIATE-RQ cap stands in); before negotiation no P-DATA may arrive at
    all, so the small cap applies and the state machine rejects the PDU anyway.
    """
    if pdu_type == 0x01:
        return MAX_ASSOCIATE_RQ
    if pdu_type == 0x04 and not negotiating:
        return max_pdu if max_pdu > 0 else MAX_ASSOCIATE_RQ
    return MAX_OTHER_PDU


class GuardedDUL(DULServiceProvider):
    """pynetdicom's upper layer with a bounded, time-limited PDU reader."""

    #: Set once an invalid PDU was seen: the rest of the stream is not PDUs we can
    #: frame, so nothing more is read and the connection is closed.
    _pacsd_refused = False
    #: The socket timeout last set (settimeout costs a syscall or two per call).
    _pacsd_timeout: float | None = -1.0
    _pacsd_waiter: reactor.SocketWaiter

    # -- the reactor: blocking waits instead of pynetdicom's 1 ms sleeps (reactor.py) --

    def run_reactor(self) -> None:
        try:
            self._pacsd_run()
        finally:
            self._pacsd_waiter.wakeup.close()
            wake = getattr(self.assoc, "pacsd_wake", None)
            if wake is not None:
                wake.set()  # the association thread sees the DUL gone at once

    def _pacsd_run(self) -> None:
        """pynetdicom's ``run_reactor`` (3.0.4) with one change: where it sleeps 1 ms
        because no event is waiting, this blocks until the socket is readable, a
        primitive is queued to send (``send_pdu`` wakes it) or ``MAX_WAIT`` passes."""
        self._idle_timer.start()
        sock = cast(AssociationSocket, self.socket)
        waiter = self._pacsd_waiter
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                # In Sta1 (closed, or before the connection event) the socket is not
                # read: waiting on it would spin while it stays readable.
                raw = None if self.state_machine.current_state == "Sta1" else sock.socket
                if waiter.wait(raw, reactor.MAX_WAIT):
                    # ``FastSocket.ready`` takes this poll's word instead of polling again.
                    sock.pacsd_readable = True  # type: ignore[attr-defined]
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                log.exception("upper layer failed; aborting the association")
                sock.send(a_abort(0x02))
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False

    def send_pdu(self, primitive: Any) -> None:
        if stored_send.wait_for_room(self, primitive):
            super().send_pdu(primitive)
            self._pacsd_waiter.wakeup.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._pacsd_waiter.wakeup.wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._pacsd_waiter.wakeup.wake()
            while self.is_alive():
                time.sleep(0.001)
            return True
        return False

    # -- reading PDUs --------------------------------------------------------------

    def _read_pdu_data(self) -> None:
        sock = cast(AssociationSocket, self.socket)
        if self._pacsd_refused:
            _discard_pending(sock.socket)
            sock.close()  # Evt17
            return
        state = self.state_machine.current_state
        if state == "Sta1":
            # The reactor looks at the socket before it processes the connection event
            # (Evt5): read once that has run, so an invalid PDU finds Sta2 and is
            # answered with an A-ABORT (PS3.8 has no transition for it in Sta1).
            return
        negotiating = state == "Sta2"
        timeout = self.assoc.acse_timeout if negotiating else self.assoc.network_timeout
        raw = sock.socket
        if raw is not None and timeout != self._pacsd_timeout:
            raw.settimeout(timeout)
            self._pacsd_timeout = timeout
        header = bytearray(6)
        if not self._read(sock, header, 0, timeout):
            return
        pdu_type, _, length = struct.unpack(">BBL", header)
        name = _NAMES.get(pdu_type)
        if name is None:
            self._refuse(f"unknown PDU type 0x{pdu_type:02X}")
            return
        limit = length_limit(pdu_type, negotiating, int(self.assoc.acceptor.maximum_length or 0))
        if length > limit:
            self._refuse(f"{name} of {length} bytes, more than the {limit} accepted")
            return
        # The body goes straight behind the header: no second buffer, no join.
        data = bytearray(6 + length)
        data[:6] = header
        if not self._read(sock, data, 6, timeout):
            return
        if not (pdu_type == 0x04 and pdata.ends_data_set(data)):
            # An immediate ACK, so that a peer with Nagle on sends the rest of the
            # message at once (FastSocket.quickack). Not after a data set's last
            # fragment: nothing of that message is still to come, and the response
            # carries the ACK (one system call and one packet less per C-STORE).
            quickack = getattr(sock, "quickack", None)
            if quickack is not None:
                quickack()
        if pdu_type == 0x04 and pdata.deliver(self, data):
            return
        try:
            pdu, event = self._decode_pdu(data)
        except Exception as exc:
            self._refuse(f"undecodable {name} ({_describe(exc)})", exc)
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _read(
        self,
        sock: AssociationSocket,
        buffer: bytearray,
        start: int,
        timeout: float | None,
    ) -> bool:
        """Fill ``buffer[start:]``; False once the connection is reported closed (Evt17)."""
        size = len(buffer) - start
        try:
            read_into = getattr(sock, "read_into", None)
            if read_into is not None:
                got = read_into(buffer, start)
            else:  # pynetdicom's socket (not on pacsd's listener)
                data = sock.recv(size)
                got = len(data)
                buffer[start : start + got] = data
        except TimeoutError:
            log.warning(
                "association from %s: peer sent nothing for %.1fs in the middle of a PDU;"
                " closing the connection",
                self._peer(),
                timeout or 0.0,
            )
            sock.close()
            return False
        except OSError as exc:
            log.debug("association from %s: connection lost: %s", self._peer(), exc)
            self.event_queue.put(_CLOSED)
            return False
        if got < size:
            if got or start:
                log.debug("association from %s: connection closed mid-PDU", self._peer())
            self.event_queue.put(_CLOSED)
            return False
        return True

    def _refuse(self, why: str, exc: BaseException | None = None) -> None:
        """Answer an invalid PDU (``exc``: what decoding it raised, if anything)."""
        _log_refusal(self._peer(), f"invalid PDU: {why}", exc, "aborting")
        self._pacsd_refused = True
        self.event_queue.put(_INVALID)

    def _peer(self) -> str:
        info = self.assoc.requestor.address_info
        return f"{info.address}:{info.port}" if info is not None else "unknown peer"


def _discard_pending(raw: socket.socket | None, limit: int = 1 << 20) -> None:
    """Read and drop what the peer has already sent (up to ``limit`` bytes), so that
    closing sends FIN after our A-ABORT rather than a reset that may destroy it."""
    if raw is None:
        return
    dropped = 0
    try:
        raw.setblocking(False)
        while dropped < limit:
            chunk = raw.recv(65536)
            if not chunk:
                return
            dropped += len(chunk)
    except OSError:  # nothing more to read now (BlockingIOError) or the peer is gone
        return


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_short(exc)}"


def _short(exc: BaseException, limit: int = 120) -> str:
    """The exception's message on one line of printable characters, shortened: it may
    quote the peer's bytes (an AE title), which must not forge log lines or reach a
    terminal as control codes."""
    text = "".join(c if c.isprintable() else "?" for c in " ".join(str(exc).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."
