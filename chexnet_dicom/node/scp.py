"""The node's DICOM listener: Verification and Storage SCP on pynetdicom, guarded.

Services and syntaxes
---------------------
C-ECHO, and C-STORE for the storage classes that can hold a chest radiograph
(:data:`STORAGE_CLASSES`: CR, DX for presentation and for processing, Secondary
Capture) in every transfer syntax the ingest decodes
(:func:`~chexnet_dicom.dicom.read.decodable_transfer_syntaxes`), Deflate excepted (a
decompression bomb the handler would have to inflate).

Access
------
* Calling AE title (and host) on the allow-list, else A-ASSOCIATE-RJ "calling AE title
  not recognised"; the called AE title must be the node's ("called AE title not
  recognised"); over ``max_associations``, rejected transient "local limit exceeded".
* At most ``max_connections`` TCP connections (idle sockets and TLS handshakes
  included), ``max_connections_per_source`` from one address: more are closed at once.
  Optional TLS (1.2+, mutual): the handshake runs in the connection's own thread, never
  in the accept loop.
* Admission before a slot (:mod:`~chexnet_dicom.net.admission`): the TLS handshake and
  the A-ASSOCIATE-RQ must arrive within ``first_pdu_timeout``; its AE title fields must be
  valid and the calling AE (and host) on the allow-list; only then does the peer take one
  of the ``max_associations`` slots and get a pynetdicom association.  A port scan,
  malformed requests or a slowloris never hold a slot.
* Every association gets :class:`~chexnet_dicom.net.guards.GuardedDUL`: bounded PDUs,
  a deadline per PDU, a byte budget, an instance size cap.

C-STORE
-------
The handlers (:class:`~chexnet_dicom.node.receiver.Receiver`) make every instance
durable, with its ledger row, before they answer 0x0000 (see :mod:`.receiver`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, _config
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from chexnet_dicom.config import NodeConfig
from chexnet_dicom.dicom.read import decodable_transfer_syntaxes
from chexnet_dicom.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from chexnet_dicom.net.admission import (
    LOCAL_LIMIT_EXCEEDED,
    AssociateRequest,
    Refused,
    Slots,
    SourceLimiter,
    parse_request,
    read_first_pdu,
    reject_pdu,
)
from chexnet_dicom.net.guards import ReceiveLimits, install_guard, receive_temporaries
from chexnet_dicom.node.ledger import NodeLedger
from chexnet_dicom.node.receiver import HEADER_VALUE_BYTES, AccessPolicy, OwnOutputs, Receiver
from chexnet_dicom.node.spool import Spool

__all__ = [
    "HEADER_VALUE_BYTES",
    "STORAGE_CLASSES",
    "AccessPolicy",
    "NodeServer",
    "OwnOutputs",
    "Receiver",
    "RunningSCP",
    "ServerGuards",
    "start_scp",
    "transfer_syntaxes",
]

log = logging.getLogger(__name__)


#: Storage SOP classes that can hold a chest radiograph.
STORAGE_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}

#: The Verification SOP class (C-ECHO).
VERIFICATION = "1.2.840.10008.1.1"

#: Deflated Explicit VR Little Endian: never offered.
DEFLATED = "1.2.840.10008.1.2.1.99"

_PREFERRED = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
)


def transfer_syntaxes() -> list[str]:
    """Every transfer syntax the ingest decodes, Deflate excepted; uncompressed first."""
    decodable = decodable_transfer_syntaxes() - {DEFLATED}
    return [ts for ts in _PREFERRED if ts in decodable] + sorted(decodable - set(_PREFERRED))


# --------------------------------------------------------------------------- the server


class _Handler(RequestHandler):
    """pynetdicom's request handler, giving each association the guarded DUL."""

    assoc: Any = None

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        server: NodeServer = self.server  # type: ignore[assignment]
        install_guard(assoc, server.receive_limits, server.on_trip, getattr(server.admitted, "pdu", None))
        self.assoc = assoc
        return assoc


@dataclass(frozen=True)
class ServerGuards:
    """What :class:`NodeServer` checks before and while it serves a connection.

    Attributes
    ----------
    tls
        A server TLS context, or None.
    receive_limits
        The guard's limits for every association.
    limiter
        TCP connections at once, in all and per source address.
    slots
        Associations at once (taken only by admitted peers).
    first_pdu_timeout
        Seconds from connect within which the TLS handshake, if any, and the
        A-ASSOCIATE-RQ must be complete.
    admit
        ``admit(request, address)``: None to admit, or the A-ASSOCIATE-RJ triple.
    on_trip
        Called with the reason when a guard cuts an association off.
    on_refused
        Called when a connection is closed at once (over a connection limit).
    """

    receive_limits: ReceiveLimits
    limiter: SourceLimiter
    slots: Slots
    first_pdu_timeout: float
    admit: Callable[[AssociateRequest, str], tuple[int, int, int] | None]
    tls: ssl.SSLContext | None = None
    on_trip: Callable[[str], None] | None = None
    on_refused: Callable[[], None] | None = None


class NodeServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a connection limit and TLS handshakes off the accept loop.

    Parameters
    ----------
    ae, address, ae_title, contexts, ssl_context, evt_handlers
        As for :class:`pynetdicom.transport.AssociationServer` (``ssl_context`` is
        ignored: TLS is ``guards.tls``, negotiated in the connection's own thread).
    guards
        The limits, admission check and hooks (:class:`ServerGuards`).
    """

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        ae: AE,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[Any],
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list[Any] | None = None,
        *,
        guards: ServerGuards,
    ) -> None:
        self.tls = guards.tls
        self.receive_limits = guards.receive_limits
        self.limiter = guards.limiter
        self.slots = guards.slots
        self.first_pdu_timeout = guards.first_pdu_timeout
        self.admit = guards.admit
        self.on_trip = guards.on_trip
        self.on_refused = guards.on_refused
        self.admitted = threading.local()  # the admitted first PDU, for _Handler in this thread
        super().__init__(ae, address, ae_title, contexts, None, evt_handlers, request_handler=_Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection (TLS, if any, is negotiated later in its own thread)."""
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Take a connection slot, or refuse (the socket is closed at once)."""
        limit = self.limiter.acquire(str(client_address[0]))
        if limit is not None:
            log.warning("connection closed: too many connections open (%s)", limit)
            if self.on_refused is not None:
                self.on_refused()
            return False
        return True

    def _admit(self, request: Any, address: str) -> tuple[Any, bool]:
        """TLS, the first PDU and the AE check within the deadline: (socket, took a slot)."""
        deadline = time.monotonic() + self.first_pdu_timeout
        if self.tls is not None:
            request.settimeout(self.first_pdu_timeout)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                raise Refused(f"TLS handshake refused or failed ({type(exc).__name__})") from None
        pdu = parse_request(read_first_pdu(request, deadline, self.receive_limits.control_pdu_bytes))
        answer = self.admit(pdu, address)
        if answer is None and not self.slots.take():
            log.warning("association refused: all listen.max_associations slots are in use")
            answer = LOCAL_LIMIT_EXCEEDED
        if answer is not None:
            raise Refused("", reject_pdu(*answer))
        self.admitted.pdu = pdu.pdu
        return request, True

    def _refuse(self, request: Any, refused: Refused) -> None:
        if refused.why:
            log.info("connection closed before an association: %s", refused.why)
        with contextlib.suppress(OSError, ValueError):
            request.settimeout(1.0)
            if refused.answer:
                request.sendall(refused.answer)
        self.shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> Any:
        """Run pynetdicom's handler; return it (it holds the association)."""
        return self.RequestHandlerClass(request, client_address, self)  # type: ignore[arg-type]

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Admit the peer (TLS, A-ASSOCIATE-RQ, AE check), serve the association, free the slots when it ends."""
        slot = False
        try:
            try:
                request, slot = self._admit(request, str(client_address[0]))
            except Refused as refused:
                self._refuse(request, refused)
                return
            request.settimeout(self.receive_limits.pdu_timeout)
            handler = self.finish_request(request, client_address)
            assoc = getattr(handler, "assoc", None)
            if assoc is not None:
                assoc.join()
                sock = getattr(assoc.dul.socket, "socket", None)
                if sock is not None:
                    self.shutdown_request(sock)
        except Exception:
            log.exception("a connection failed unexpectedly")
            self.shutdown_request(request)
        finally:
            self.admitted.pdu = None
            if slot:
                self.slots.give()
            self.limiter.release(str(client_address[0]))


@dataclass
class RunningSCP:
    """A started listener.

    Attributes
    ----------
    server
        The pynetdicom server.
    receiver
        Its handlers (open studies).
    port
        The port it listens on.
    """

    server: NodeServer
    receiver: Receiver
    thread: threading.Thread
    port: int

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, give open associations ``grace`` seconds, then abort them."""
        with contextlib.suppress(ValueError):  # made by make_server, not listed in the AE's servers
            self.server.shutdown()
        deadline = time.monotonic() + grace
        while self.server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self.server.active_associations:
            assoc.abort()
        self.server.server_close()


def start_scp(
    config: NodeConfig,
    spool: Spool,
    ledger: NodeLedger,
    own: OwnOutputs,
    tls: ssl.SSLContext | None = None,
    receiver: Receiver | None = None,
) -> RunningSCP:
    """Start the listener in a background thread.

    Parameters
    ----------
    config
        The node's configuration.
    spool, ledger
        Where instances and their rows go.
    own
        How the node's own outputs are recognised.
    tls
        A server TLS context (from :func:`chexnet_dicom.net.tls.server_context`), or None.
    receiver
        The handlers to use (a new :class:`Receiver` when None).

    Returns
    -------
    RunningSCP
    """
    listen, access = config.listen, config.access
    # pynetdicom logs identifiers (AE titles, UIDs, data set dumps) by default: never here
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.STORE_RECV_CHUNKED_DATASET = True
    max_bytes = min(access.max_instance_bytes + 64 * 1024, config.ingest.limits.max_file_bytes)
    receive_temporaries(lambda: spool.incoming(threading.current_thread(), max_bytes))
    receiver = receiver or Receiver(config, spool, ledger, own)
    ae = AE(listen.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.maximum_associations = listen.max_associations
    ae.maximum_pdu_size = listen.max_pdu
    ae.acse_timeout = listen.acse_timeout
    ae.dimse_timeout = listen.dimse_timeout
    ae.network_timeout = listen.socket_timeout
    ae.require_called_aet = access.check_called_aet
    syntaxes = transfer_syntaxes()
    for uid in STORAGE_CLASSES:
        ae.add_supported_context(uid, syntaxes)
    ae.add_supported_context(VERIFICATION)
    limits = ReceiveLimits(
        max_pdu=listen.max_pdu,
        pdu_timeout=listen.socket_timeout,
        association_bytes=access.max_association_bytes,
        instance_bytes=access.max_instance_bytes,
        min_rate=listen.min_receive_rate,
    )

    def tripped(reason: str) -> None:
        ledger.count("guard_trips")
        ledger.note("guard", f"an association was cut off: {reason}")

    server = ae.make_server(
        (listen.bind, listen.port),
        evt_handlers=receiver.handlers(),
        server_class=NodeServer,
        guards=ServerGuards(
            receive_limits=limits,
            limiter=SourceLimiter(
                listen.max_connections, min(listen.max_connections_per_source, listen.max_connections)
            ),
            slots=Slots(listen.max_associations),
            first_pdu_timeout=listen.first_pdu_timeout,
            admit=receiver.admit,
            tls=tls,
            on_trip=tripped,
            on_refused=lambda: ledger.count("connections_refused"),
        ),
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="chexdcm-scp", daemon=True
    )
    thread.start()
    port = int(server.server_address[1])
    log.info("listening as %s on %s:%d (%s)", listen.ae_title, listen.bind, port, "TLS" if tls else "TCP")
    assert isinstance(server, NodeServer)
    return RunningSCP(server, receiver, thread, port)
