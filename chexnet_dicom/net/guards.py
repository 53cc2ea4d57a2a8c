"""Guards around pynetdicom's receive path: bounded PDUs, a deadline per PDU, byte budgets.

pynetdicom 3.0.4 reads whatever length a peer's PDU header claims (a PDU claiming
4 GiB is allocated and waited for), reads it with a blocking ``recv`` that a peer
dripping one byte at a time keeps alive for ever, and keeps a DIMSE message's command
set, and any dataset that is not a chunked C-STORE, in memory however long the peer
makes it.  :class:`GuardedDUL` replaces its PDU reader (``_read_pdu_data``, the one
method overridden) for one association:

* **PDU length** is checked against the limit before any byte of the body is read:
  a P-DATA-TF PDU may not exceed the maximum length this side advertised (PS3.8
  9.3.1), any other PDU :attr:`ReceiveLimits.control_pdu_bytes`.
* **Deadline**: the whole PDU must arrive within :attr:`ReceiveLimits.pdu_timeout`
  seconds, however the peer paces its bytes.
* **Byte budget** per association (:attr:`ReceiveLimits.association_bytes`).
* **DIMSE framing** (PS3.8 annex E, PS3.7 section 6.3.1): the presentation data values
  of each P-DATA-TF PDU are walked before pynetdicom decodes them.  A command set may
  not exceed :attr:`ReceiveLimits.command_bytes`, a data set may not come before its
  command, a C-STORE data set may not exceed :attr:`ReceiveLimits.instance_bytes` and
  any other data set :attr:`ReceiveLimits.other_dataset_bytes`.

A broken limit trips the guard: the PDU is treated as invalid (event 19 of the PS3.8
state machine: the provider sends A-ABORT and the association ends), the reason is
recorded in :attr:`GuardedDUL.tripped` and passed to ``on_trip``, and anything the peer
sends afterwards closes the connection.  Memory per association is bounded by one PDU
(at most the advertised maximum) plus the command set.

:func:`receive_temporaries` sends the chunked C-STORE data sets that pynetdicom writes
to ``tempfile.NamedTemporaryFile`` (the system temp folder) to a factory of the
caller's instead (the node's spool).

Both touch pynetdicom internals, so they refuse any version but :data:`PINNED_VERSION`
(:func:`check_pinned`); ``tests/net/test_guards.py`` runs them against it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import pynetdicom
from pynetdicom import dimse_messages
from pynetdicom.dul import DULServiceProvider

from chexnet_dicom.dicom.uids import is_valid_uid
from chexnet_dicom.errors import ConfigError

__all__ = [
    "PINNED_VERSION",
    "TRIP_REASONS",
    "GuardedDUL",
    "ReceiveLimits",
    "check_pinned",
    "install_guard",
    "receive_temporaries",
]

log = logging.getLogger(__name__)

#: The pynetdicom version the guards replace internals of (``constraints.txt`` pins it).
PINNED_VERSION = "3.0.4"

MiB = 1024 * 1024

#: Why a guard cut an association off.
TRIP_REASONS: dict[str, str] = {
    "pdu-too-long": "a PDU longer than this side accepts",
    "pdu-timeout": "a PDU that did not arrive completely within the PDU timeout",
    "association-budget": "more bytes on one association than its budget",
    "command-too-large": "a DIMSE command set larger than the command cap",
    "dataset-without-command": "a data set fragment before its command set",
    "instance-too-large": "a C-STORE data set larger than the instance cap",
    "dataset-too-large": "a non-C-STORE data set larger than its cap",
    "malformed-pdv": "a presentation data value whose length does not fit its PDU",
    "malformed-command": "a DIMSE command set without CommandField or CommandDataSetType",
    "unexpected-command": "a DIMSE command this node does not serve (unknown or not a request it takes)",
    "invalid-uid": "a DIMSE command set with a missing, empty or invalid SOP class or instance UID",
    "too-slow": "a DIMSE message arriving slower than the minimum receive rate",
}

_P_DATA_TF = 0x04
_KNOWN_PDU_TYPES = frozenset(range(1, 8))
_C_STORE_RQ = 0x0001
_C_ECHO_RQ = 0x0030
_C_CANCEL_RQ = 0x0FFF
#: The requests a Storage and Verification SCP takes (PS3.7 9.3, 9.3.5).
SCP_COMMANDS = frozenset({_C_STORE_RQ, _C_ECHO_RQ, _C_CANCEL_RQ})
_NO_DATASET = 0x0101
#: UID elements of a command set, and the commands that require them (PS3.7 9.3).
_UID_ELEMENTS = (0x0002, 0x0003, 0x1000, 0x1001)
_REQUIRED_UIDS = {_C_STORE_RQ: (0x0002, 0x1000), _C_ECHO_RQ: (0x0002,)}


def check_pinned() -> None:
    """Refuse to guard a pynetdicom other than the pinned version.

    Raises
    ------
    ConfigError
        With the installed and the pinned version, and what to do.
    """
    if pynetdicom.__version__ != PINNED_VERSION:
        raise ConfigError(
            f"pynetdicom {pynetdicom.__version__} is installed, but the listener's PDU guard is "
            f"written and tested against {PINNED_VERSION}; install the versions in constraints.txt"
        )


@dataclass(frozen=True)
class ReceiveLimits:
    """What one association may send.

    Attributes
    ----------
    max_pdu
        The maximum P-DATA-TF length this side advertises (and accepts).
    pdu_timeout
        Seconds within which a PDU must arrive completely once its first byte is read.
    association_bytes
        Bytes one association may send in all.
    instance_bytes
        Largest C-STORE data set.
    other_dataset_bytes
        Largest data set of any other DIMSE message (kept in memory by pynetdicom).
    command_bytes
        Largest command set.
    control_pdu_bytes
        Largest PDU other than P-DATA-TF (an A-ASSOCIATE-RQ with many contexts is a few
        tens of kB).
    min_rate
        Bytes per second below which a DIMSE message still arriving is cut off, once it
        has taken longer than ``pdu_timeout`` (0: no minimum).
    commands
        The CommandField values accepted (any other is cut off before pynetdicom, which
        raises on unknown ones, decodes it).
    """

    max_pdu: int = 131072
    pdu_timeout: float = 60.0
    association_bytes: int = 8 * 1024 * MiB
    instance_bytes: int = 1024 * MiB
    other_dataset_bytes: int = 1 * MiB
    command_bytes: int = 64 * 1024
    control_pdu_bytes: int = 64 * 1024
    min_rate: float = 0.0
    commands: frozenset[int] = SCP_COMMANDS

    def __post_init__(self) -> None:
        for name in ("max_pdu", "association_bytes", "instance_bytes", "other_dataset_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"receive limit {name} must be positive")
        if self.pdu_timeout <= 0:
            raise ConfigError("the PDU timeout must be positive")
        if self.min_rate < 0:
            raise ConfigError("the minimum receive rate must not be negative")


def _command_elements(command: bytes) -> dict[int, bytes] | None:
    """Element number -> value of an encoded command set (implicit VR little endian), or None if broken."""
    out: dict[int, bytes] = {}
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHL", command, offset)
        offset += 8
        if group != 0x0000 or offset + length > len(command):
            return None
        out[element] = command[offset : offset + length]
        offset += length
    return out if offset == len(command) else None


def _well_formed(elements: dict[int, bytes] | None) -> bool:
    return elements is not None and all(len(elements.get(e, b"")) == 2 for e in (0x0100, 0x0800))


def _uid_value(raw: bytes) -> str | None:
    try:
        return raw.decode("ascii").rstrip("\x00 ")
    except UnicodeDecodeError:
        return None


def command_problem(elements: dict[int, bytes], commands: frozenset[int] = SCP_COMMANDS) -> str | None:
    """Why a well-formed command set is cut off before pynetdicom decodes it, or None.

    pynetdicom 3.0.4 raises in its association thread on an unknown CommandField
    (``KeyError``) and on an empty Affected SOP Instance UID, and closes without a status
    on an over-long or otherwise invalid one: the command field must be one of
    ``commands`` and every SOP class or instance UID present, and each the command
    requires, a valid UID (PS3.5 9.1).
    """
    field = int(struct.unpack("<H", elements[0x0100])[0])
    if field not in commands:
        return "unexpected-command"
    for element in set(_UID_ELEMENTS).intersection(elements) | set(_REQUIRED_UIDS.get(field, ())):
        value = _uid_value(elements[element]) if element in elements else None
        if value is None or not is_valid_uid(value):
            return "invalid-uid"
    return None


def command_well_formed(command: bytes) -> bool:
    """Whether a command set has the elements pynetdicom's decoder needs before it checks anything.

    pynetdicom 3.0.4 reads CommandField and CommandDataSetType without checking them: a
    command set lacking either raises inside its state machine and kills the
    association's thread.  A two-byte US value each is required here.
    """
    return _well_formed(_command_elements(command))


def command_field(command: bytes) -> int | None:
    """The CommandField (0000,0100) of an encoded command set (implicit VR little endian).

    Parameters
    ----------
    command
        The command set as received.

    Returns
    -------
    int or None
        None when the element is missing or the encoding is broken (pynetdicom then
        refuses the message itself).
    """
    elements = _command_elements(command)
    value = elements.get(0x0100) if elements is not None else None
    return int(struct.unpack("<H", value)[0]) if value is not None and len(value) == 2 else None


class _Framing:
    """The DIMSE message framing of one association (command, then data set)."""

    def __init__(self, limits: ReceiveLimits) -> None:
        self.limits = limits
        self.command = bytearray()
        self.command_done = False
        self.field: int | None = None
        self.dataset = 0
        self.started: float | None = None  # when the message in progress began
        self.message_bytes = 0

    def _reset(self) -> None:
        self.command = bytearray()
        self.command_done = False
        self.field = None
        self.dataset = 0
        self.started = None
        self.message_bytes = 0

    def too_slow(self, now: float, pdu_bytes: int, started: float) -> bool:
        """Count a P-DATA PDU of a message; whether the message, still in progress, is below the minimum rate."""
        if self.started is None and (self.command or self.command_done):
            self.started = started
        if self.started is None:
            return False
        self.message_bytes += pdu_bytes
        elapsed = now - self.started
        return (
            self.limits.min_rate > 0
            and elapsed > self.limits.pdu_timeout
            and self.message_bytes < self.limits.min_rate * elapsed
        )

    def _command_fragment(self, fragment: memoryview, *, last: bool) -> str | None:
        """Add a command fragment; on the last one, check the command set once."""
        if self.command_done:  # the previous message had no data set
            self._reset()
        if len(self.command) + len(fragment) > self.limits.command_bytes:
            return "command-too-large"
        self.command += fragment
        if not last:
            return None
        self.command_done = True
        elements = _command_elements(bytes(self.command))  # parsed once per message
        if not _well_formed(elements):
            return "malformed-command"
        assert elements is not None
        problem = command_problem(elements, self.limits.commands)
        if problem is not None:
            return problem
        self.field = int(struct.unpack("<H", elements[0x0100])[0])
        if struct.unpack("<H", elements[0x0800])[0] == _NO_DATASET:
            self._reset()  # the message is complete
        return None

    def check(self, body: memoryview) -> str | None:
        """Walk the PDVs of a P-DATA-TF body; return a trip reason or None."""
        offset, end = 0, len(body)
        while offset < end:
            if end - offset < 6:
                return "malformed-pdv"
            (length,) = struct.unpack_from(">L", body, offset)
            if length < 2 or offset + 4 + length > end:
                return "malformed-pdv"
            header = body[offset + 5]
            fragment = body[offset + 6 : offset + 4 + length]
            offset += 4 + length
            if header & 1:  # command information
                problem = self._command_fragment(fragment, last=bool(header & 2))
                if problem is not None:
                    return problem
                continue
            if not self.command_done:
                return "dataset-without-command"
            self.dataset += len(fragment)
            if self.field == _C_STORE_RQ:
                if self.dataset > self.limits.instance_bytes:
                    return "instance-too-large"
            elif self.dataset > self.limits.other_dataset_bytes:
                return "dataset-too-large"
            if header & 2:
                self._reset()
        return None


class GuardedDUL(DULServiceProvider):
    """pynetdicom's DICOM Upper Layer provider with a bounded PDU reader.

    Parameters
    ----------
    assoc
        The association (acceptor or requestor).
    limits
        What the peer may send.
    on_trip
        Called as ``on_trip(reason)`` (a key of :data:`TRIP_REASONS`) when the guard
        cuts the association off, in the association's DUL thread.
    preread
        The first PDU, already read from the socket by the listener's admission
        (:mod:`chexnet_dicom.net.admission`); it is processed before the socket is read.
    """

    def __init__(
        self,
        assoc: Any,
        limits: ReceiveLimits,
        on_trip: Callable[[str], None] | None = None,
        preread: bytes | None = None,
    ) -> None:
        check_pinned()
        super().__init__(assoc)
        self.limits = limits
        self.on_trip = on_trip
        self.tripped: str | None = None
        self.received = 0
        self._framing = _Framing(limits)
        self._preread = preread

    def _is_transport_event(self) -> bool:
        """Process the pre-read first PDU, then read the socket as pynetdicom does."""
        if self._preread is not None:
            pdu, self._preread = self._preread, None
            self.received += len(pdu)
            self._queue_pdu(pdu)
            return True
        return bool(super()._is_transport_event())

    def _queue_pdu(self, data: bytes | bytearray) -> None:
        try:
            pdu, event = self._decode_pdu(bytearray(data))
        except Exception:  # as pynetdicom: an undecodable PDU is invalid
            log.warning("an undecodable PDU was received")
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    # -- socket reads with a deadline

    def _raw(self) -> socket.socket | None:
        wrapper = self.socket
        return None if wrapper is None else wrapper.socket

    def _recv_exact(self, sock: socket.socket, n: int, deadline: float) -> tuple[bytearray, str | None]:
        """Read exactly ``n`` bytes before ``deadline``: (data, None) or (partial, why)."""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return buf[:got], "timeout"
            try:
                sock.settimeout(remaining)
                k = sock.recv_into(view[got:], min(n - got, 1 << 20))
            except TimeoutError:
                return buf[:got], "timeout"
            except (OSError, ssl.SSLError, ValueError):
                return buf[:got], "closed"
            if k == 0:
                return buf[:got], "closed"
            got += k
        return buf, None

    def _trip(self, reason: str) -> None:
        self.tripped = reason
        log.warning("association cut off: %s", TRIP_REASONS.get(reason, reason))
        if self.on_trip is not None:
            try:
                self.on_trip(reason)
            except Exception:  # a reporting hook must not break the state machine
                log.exception("on_trip hook failed")
        self.event_queue.put("Evt19")  # invalid PDU: the provider aborts the association

    def _read_pdu_data(self) -> None:
        """Read one PDU from the peer within the limits (replaces pynetdicom's reader)."""
        sock = self._raw()
        if sock is None:
            self.event_queue.put("Evt17")
            return
        if self.tripped is not None:  # the peer keeps sending after the abort: hang up
            self.socket.close()  # type: ignore[union-attr]
            return
        started = time.monotonic()
        deadline = started + self.limits.pdu_timeout
        header, why = self._recv_exact(sock, 6, deadline)
        if why is not None:
            self.event_queue.put("Evt17")  # as pynetdicom: connection closed
            return
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in _KNOWN_PDU_TYPES:
            self.event_queue.put("Evt19")  # as pynetdicom: unrecognised PDU
            return
        cap = self.limits.max_pdu if pdu_type == _P_DATA_TF else self.limits.control_pdu_bytes
        if length > cap:
            self._trip("pdu-too-long")
            return
        self.received += 6 + length
        if self.received > self.limits.association_bytes:
            self._trip("association-budget")
            return
        body, why = self._recv_exact(sock, length, deadline)
        if why == "timeout":
            self._trip("pdu-timeout")
            return
        if why is not None:
            self.event_queue.put("Evt17")
            return
        if pdu_type == _P_DATA_TF:
            reason = self._framing.check(memoryview(body))
            if reason is None and self._framing.too_slow(time.monotonic(), 6 + length, started):
                reason = "too-slow"
            if reason is not None:
                self._trip(reason)
                return
        self._queue_pdu(header + body)


def install_guard(
    assoc: Any,
    limits: ReceiveLimits,
    on_trip: Callable[[str], None] | None = None,
    preread: bytes | None = None,
) -> GuardedDUL:
    """Give a new, not yet started association a :class:`GuardedDUL`.

    Parameters
    ----------
    assoc
        A :class:`pynetdicom.association.Association` whose threads have not started
        (its socket may be set).
    limits, on_trip, preread
        See :class:`GuardedDUL`.

    Returns
    -------
    GuardedDUL
        The association's new provider (its socket and timeouts carried over).
    """
    old = assoc.dul
    if old.is_alive():
        raise RuntimeError("the association's DUL thread is already running")
    guarded = GuardedDUL(assoc, limits, on_trip, preread)
    guarded.socket = old.socket
    # a connected AssociationSocket has already queued Evt5 (transport connection
    # indication) on the old provider's queue: the new provider takes that queue over
    guarded.event_queue = old.event_queue
    assoc.dul = guarded
    # the timeout setters write into the DUL's timers: apply them to the new one
    assoc.acse_timeout = assoc.acse_timeout
    assoc.network_timeout = assoc.network_timeout
    assoc.dimse_timeout = assoc.dimse_timeout
    _contain(assoc)
    return guarded


def _contain(assoc: Any) -> None:
    """Make an exception in the association's reactor an A-ABORT and a log line, not a traceback.

    pynetdicom 3.0.4 lets exceptions of its service code end the association thread;
    :func:`threading.excepthook` then prints the traceback (and any value in it) on
    stderr and no A-ABORT is sent, and the association's ``EVT_ABORTED`` handlers (which
    remove unfinished spool files) never run.
    """
    run = assoc._target  # the thread's target, made from run_reactor in Association.__init__

    def contained(*args: Any, **kwargs: Any) -> None:
        try:
            run(*args, **kwargs)
        except Exception as exc:
            log.error("association aborted: pynetdicom failed on what the peer sent (%s)", type(exc).__name__)
            with contextlib.suppress(Exception):
                assoc.abort()

    assoc._target = contained


def receive_temporaries(factory: Callable[[], IO[bytes]] | None) -> None:
    """Send pynetdicom's chunked C-STORE data sets to ``factory()`` instead of the system temp folder.

    Parameters
    ----------
    factory
        Returns a new binary file object with a ``name`` (its path), ``write``,
        ``close`` and a ``file`` attribute with ``flush``, as
        ``NamedTemporaryFile(delete=False)`` does; None restores pynetdicom's own.
        pynetdicom unlinks ``name`` after the C-STORE handler returns, so a handler that
        keeps the file renames it away first.
    """
    check_pinned()
    if factory is None:
        from tempfile import NamedTemporaryFile

        setattr(dimse_messages, "NamedTemporaryFile", NamedTemporaryFile)  # noqa: B010 (a module attribute mypy types as the function)
        return

    def make(**_ignored: Any) -> IO[bytes]:
        return factory()

    setattr(dimse_messages, "NamedTemporaryFile", make)  # noqa: B010
