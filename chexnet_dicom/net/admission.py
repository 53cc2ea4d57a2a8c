"""Admission of a TCP connection before it becomes a pynetdicom association.

pynetdicom 3.0.4 starts an association thread for every accepted socket and counts it
against ``AE.maximum_associations`` while it waits (up to the ACSE timeout) for the
A-ASSOCIATE-RQ.  A port scan, connect-and-close sockets, malformed requests or a
slowloris peer therefore take every association slot before any AE title is checked.
The listener admits a connection in three steps instead, in the connection's own thread:

1. **Per source address**: :class:`SourceLimiter` caps the sockets one address holds
   (the socket-level limit is ``listen.max_connections``, separate from the association
   limit).
2. **First PDU**: :func:`read_first_pdu` reads the A-ASSOCIATE-RQ within a short deadline
   (``listen.first_pdu_timeout``, like dcmtk's ``--acse-timeout`` but for the first PDU)
   and at most ``control_pdu_bytes``.
3. **Who is calling**: :func:`parse_request` checks the called and calling AE title
   fields byte by byte (PS3.5 AE: the default repertoire, no backslash, no control
   character, not all spaces: a NUL- or tab-padded or non-ASCII title is refused) and
   that pynetdicom can decode the PDU; the caller then checks the allow-list, and only
   an admitted peer takes an association slot (:class:`Slots`).

A refused peer gets an A-ASSOCIATE-RJ (:func:`reject_pdu`) or, for something that is not
an A-ASSOCIATE-RQ, an A-ABORT (:func:`abort_pdu`), and its socket is closed at once.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass

from pynetdicom.pdu import A_ASSOCIATE_RQ

__all__ = [
    "AssociateRequest",
    "Refused",
    "SourceLimiter",
    "Slots",
    "abort_pdu",
    "ae_title_field",
    "parse_request",
    "read_first_pdu",
    "reject_pdu",
]

_A_ASSOCIATE_RQ = 0x01
#: Offsets of the called and calling AE title fields in an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2).
_CALLED = slice(10, 26)
_CALLING = slice(26, 42)
_FIXED_PART = 74  # header, protocol version, reserved, two AE titles, 32 reserved bytes

#: A-ASSOCIATE-RJ (result, source, reason) triples (PS3.8 9.3.4).
CALLING_NOT_RECOGNISED = (0x01, 0x01, 0x03)
CALLED_NOT_RECOGNISED = (0x01, 0x01, 0x07)
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


class Refused(Exception):
    """A connection refused before it became an association.

    Parameters
    ----------
    why
        What was wrong, without any value the peer sent (for the log).
    answer
        The PDU to send before closing (an A-ASSOCIATE-RJ or A-ABORT), or empty bytes to
        close without one.
    """

    def __init__(self, why: str, answer: bytes = b"") -> None:
        super().__init__(why)
        self.why = why
        self.answer = answer


def reject_pdu(result: int, source: int, reason: int) -> bytes:
    """An encoded A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return struct.pack(">BBLBBBB", 0x03, 0, 4, 0, result, source, reason)


def abort_pdu(source: int = 0x02, reason: int = 0x00) -> bytes:
    """An encoded A-ABORT PDU (PS3.8 9.3.8); source 2 is the service provider."""
    return struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, source, reason)


def ae_title_field(raw: bytes) -> str | None:
    """The AE title of a 16-byte PDU field, or None when it is not a valid AE title.

    PS3.5 6.2 (AE): characters of the default repertoire (0x20-0x7E) except backslash,
    leading and trailing spaces not significant, not all spaces.  NUL, tab, newline and
    any byte above 0x7E make the field invalid rather than being read as padding.
    """
    if any(b < 0x20 or b > 0x7E or b == 0x5C for b in raw):
        return None
    title = raw.decode("ascii").strip(" ")
    return title or None


@dataclass(frozen=True)
class AssociateRequest:
    """An A-ASSOCIATE-RQ whose AE title fields are valid.

    Attributes
    ----------
    called_ae, calling_ae
        The AE titles, without their padding.
    pdu
        The whole PDU as received (handed to the association unchanged).
    """

    called_ae: str
    calling_ae: str
    pdu: bytes


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Refused("no complete A-ASSOCIATE-RQ within listen.first_pdu_timeout")
        try:
            sock.settimeout(remaining)
            chunk = sock.recv(min(n - len(buf), 65536))
        except TimeoutError:
            raise Refused("no complete A-ASSOCIATE-RQ within listen.first_pdu_timeout") from None
        except (OSError, ssl.SSLError, ValueError):
            raise Refused("the connection closed before its A-ASSOCIATE-RQ") from None
        if not chunk:
            raise Refused("the connection closed before its A-ASSOCIATE-RQ")
        buf += chunk
    return bytes(buf)


def read_first_pdu(sock: socket.socket, deadline: float, max_bytes: int) -> bytes:
    """Read the first PDU of a connection, which must be an A-ASSOCIATE-RQ.

    Parameters
    ----------
    sock
        The connected socket (plain or TLS).
    deadline
        ``time.monotonic()`` value by which the whole PDU must have arrived.
    max_bytes
        The largest PDU body accepted.

    Returns
    -------
    bytes
        The whole PDU, header included.

    Raises
    ------
    Refused
        On a deadline missed, a closed connection, another PDU type or an over-long PDU.
    """
    header = _recv_exact(sock, 6, deadline)
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type != _A_ASSOCIATE_RQ:
        raise Refused("the first PDU was not an A-ASSOCIATE-RQ", abort_pdu(0x02, 0x02))
    if length > max_bytes or length + 6 < _FIXED_PART:
        raise Refused("an A-ASSOCIATE-RQ of a length this node does not accept", abort_pdu(0x02, 0x06))
    return header + _recv_exact(sock, length, deadline)


def parse_request(pdu: bytes) -> AssociateRequest:
    """Check the AE title fields of an A-ASSOCIATE-RQ and that pynetdicom decodes it.

    Raises
    ------
    Refused
        With an A-ASSOCIATE-RJ for an invalid AE title, an A-ABORT for an undecodable PDU.
    """
    called = ae_title_field(pdu[_CALLED])
    calling = ae_title_field(pdu[_CALLING])
    if calling is None:
        raise Refused(
            "the calling AE title has characters an AE title may not have",
            reject_pdu(*CALLING_NOT_RECOGNISED),
        )
    if called is None:
        raise Refused(
            "the called AE title has characters an AE title may not have",
            reject_pdu(*CALLED_NOT_RECOGNISED),
        )
    try:
        A_ASSOCIATE_RQ().decode(pdu)
    except Exception:
        raise Refused("an A-ASSOCIATE-RQ that cannot be decoded", abort_pdu(0x02, 0x06)) from None
    return AssociateRequest(called, calling, pdu)


class SourceLimiter:
    """At most ``per_source`` sockets per source address and ``total`` in all.

    Parameters
    ----------
    total
        Sockets at once (``listen.max_connections``).
    per_source
        Sockets at once from one address (``listen.max_connections_per_source``).
    """

    def __init__(self, total: int, per_source: int) -> None:
        self.total = total
        self.per_source = per_source
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, address: str) -> str | None:
        """Take a socket slot for ``address``; None, or which limit refused it."""
        with self._lock:
            if sum(self._counts.values()) >= self.total:
                return "listen.max_connections"
            if self._counts[address] >= self.per_source:
                return "listen.max_connections_per_source"
            self._counts[address] += 1
            return None

    def release(self, address: str) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        with self._lock:
            self._counts[address] -= 1
            if self._counts[address] <= 0:
                del self._counts[address]

    @property
    def open(self) -> int:
        """Sockets held now."""
        with self._lock:
            return sum(self._counts.values())


class Slots:
    """A counting limit (association slots, taken only by admitted peers)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take a slot if one is free."""
        with self._lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True

    def give(self) -> None:
        """Give back a slot taken by :meth:`take`."""
        with self._lock:
            self.used -= 1
