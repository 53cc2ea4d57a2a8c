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
}

_P_DATA_TF = 0x04
_KNOWN_PDU_TYPES = frozenset(range(1, 8))
_C_STORE_RQ = 0x0001


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
    """

    max_pdu: int = 131072
    pdu_timeout: float = 60.0
    association_bytes: int = 8 * 1024 * MiB
    instance_bytes: int = 1024 * MiB
    other_dataset_bytes: int = 1 * MiB
    command_bytes: int = 64 * 1024
    control_pdu_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for name in ("max_pdu", "association_bytes", "instance_bytes", "other_dataset_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"receive limit {name} must be positive")
        if self.pdu_timeout <= 0:
            raise ConfigError("the PDU timeout must be positive")


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

    def _reset(self) -> None:
        self.command = bytearray()
        self.command_done = False
        self.field = None
        self.dataset = 0

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
                if self.command_done:  # the previous message had no data set
                    self._reset()
                if len(self.command) + len(fragment) > self.limits.command_bytes:
                    return "command-too-large"
                self.command += fragment
                if header & 2:
                    self.command_done = True
                    elements = _command_elements(bytes(self.command))  # parsed once per message
                    if not _well_formed(elements):
                        return "malformed-command"
                    assert elements is not None
                    self.field = int(struct.unpack("<H", elements[0x0100])[0])
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
    """

    def __init__(
        self,
        assoc: Any,
        limits: ReceiveLimits,
        on_trip: Callable[[str], None] | None = None,
    ) -> None:
        check_pinned()
        super().__init__(assoc)
        self.limits = limits
        self.on_trip = on_trip
        self.tripped: str | None = None
        self.received = 0
        self._framing = _Framing(limits)

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
        deadline = time.monotonic() + self.limits.pdu_timeout
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
            if reason is not None:
                self._trip(reason)
                return
        try:
            pdu, event = self._decode_pdu(header + body)
        except Exception:  # as pynetdicom: an undecodable PDU is invalid
            log.warning("an undecodable PDU was received")
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)


def install_guard(
    assoc: Any, limits: ReceiveLimits, on_trip: Callable[[str], None] | None = None
) -> GuardedDUL:
    """Give a new, not yet started association a :class:`GuardedDUL`.

    Parameters
    ----------
    assoc
        A :class:`pynetdicom.association.Association` whose threads have not started
        (its socket may be set).
    limits, on_trip
        See :class:`GuardedDUL`.

    Returns
    -------
    GuardedDUL
        The association's new provider (its socket and timeouts carried over).
    """
    old = assoc.dul
    if old.is_alive():
        raise RuntimeError("the association's DUL thread is already running")
    guarded = GuardedDUL(assoc, limits, on_trip)
    guarded.socket = old.socket
    # a connected AssociationSocket has already queued Evt5 (transport connection
    # indication) on the old provider's queue: the new provider takes that queue over
    guarded.event_queue = old.event_queue
    assoc.dul = guarded
    # the timeout setters write into the DUL's timers: apply them to the new one
    assoc.acse_timeout = assoc.acse_timeout
    assoc.network_timeout = assoc.network_timeout
    assoc.dimse_timeout = assoc.dimse_timeout
    return guarded


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
