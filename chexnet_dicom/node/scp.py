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

C-STORE, durable before success
-------------------------------
The data set was streamed into the spool while it arrived (:mod:`.spool`); the handler
reads only its header, with values over :data:`HEADER_VALUE_BYTES` left unread (so the
listener's memory does not grow with the instance: no pixel data, overlay or private
blob is read), decides its kind (own output, in scope,
out of scope), and then fsyncs and renames the file and commits its ledger row before
it returns 0x0000.  Statuses (PS3.4 B.2.3): 0xA700 (out of resources) when the disk
is full or the spool above its watermark or cap, or a write fails; 0xA900 (data set
does not match SOP class) when the data set's SOP class or instance differs from the
command's, a UID is missing or not a valid UID; 0xC000 (cannot understand) when the
header cannot be read; 0x0110 (processing failure) for anything unexpected.
The same instance again (same UID, same bytes) is acknowledged and not kept twice.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from chexnet_dicom.config import IngestLimits, NodeConfig, parse_allowed
from chexnet_dicom.dicom.attrs import text
from chexnet_dicom.dicom.gate import gate_header
from chexnet_dicom.dicom.read import decodable_transfer_syntaxes, read_header
from chexnet_dicom.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, is_valid_uid
from chexnet_dicom.errors import ConfigError, InputError, StorageError
from chexnet_dicom.faults import fault
from chexnet_dicom.logs import phi_ref
from chexnet_dicom.net.admission import (
    CALLED_NOT_RECOGNISED,
    CALLING_NOT_RECOGNISED,
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
from chexnet_dicom.node.ledger import DUPLICATE, NodeLedger
from chexnet_dicom.node.spool import IncomingFile, Spool
from chexnet_dicom.outputs.identity import MANUFACTURER, series_uid

__all__ = [
    "STORAGE_CLASSES",
    "AccessPolicy",
    "NodeServer",
    "OwnOutputs",
    "Receiver",
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

#: C-STORE statuses (PS3.4 B.2.3, PS3.7 annex C).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110

#: Header values longer than this are not read by the listener (at most 16 times it in all).
HEADER_VALUE_BYTES = 1 << 20

_PREFERRED = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
)


def transfer_syntaxes() -> list[str]:
    """Every transfer syntax the ingest decodes, Deflate excepted; uncompressed first."""
    decodable = decodable_transfer_syntaxes() - {DEFLATED}
    return [ts for ts in _PREFERRED if ts in decodable] + sorted(decodable - set(_PREFERRED))


@dataclass(frozen=True)
class OwnOutputs:
    """How the node recognises its own results coming back.

    Attributes
    ----------
    weights_sha256
        The model's weights hash (its SR and SC series UIDs derive from it).
    device_uid
        The model's device UID (in every output's Contributing Equipment).
    """

    weights_sha256: str
    device_uid: str

    def matches(self, ds: Any, study_uid: str) -> bool:
        """Whether ``ds`` is a result of this software (this model's series or device,
        or any model's: this manufacturer in its Contributing Equipment)."""
        if text(ds, "SeriesInstanceUID") in {
            series_uid(kind, study_uid, self.weights_sha256) for kind in ("sr", "sc")
        }:
            return True
        for item in ds.get("ContributingEquipmentSequence", None) or []:
            if text(item, "DeviceUID") == self.device_uid or text(item, "Manufacturer") == MANUFACTURER:
                return True
        return text(ds, "Manufacturer") == MANUFACTURER


class AccessPolicy:
    """The calling AE allow-list (``MODALITY`` or ``MODALITY@host``, hosts resolved once).

    Parameters
    ----------
    allow
        Entries of ``access.allow``.
    open_
        Accept any calling AE title.
    """

    def __init__(self, allow: tuple[str, ...], open_: bool) -> None:
        self.open = open_
        self.rules: dict[str, set[str] | None] = {}
        for entry in allow:
            ae, host = parse_allowed(entry)
            if not host:
                self.rules[ae] = None
                continue
            try:
                addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
            except OSError:
                raise ConfigError(f"access.allow entry {entry!r}: host {host!r} does not resolve") from None
            current = self.rules.get(ae, set())
            if current is not None:
                self.rules[ae] = current | addresses

    def allows(self, calling_ae: str, address: str) -> bool:
        """Whether ``calling_ae`` may associate from ``address``."""
        if self.open:
            return True
        ae = calling_ae.strip()
        if ae not in self.rules:
            return False
        hosts = self.rules[ae]
        return hosts is None or address in hosts


@dataclass
class _Association:
    calling_ae: str = ""
    studies: set[str] = field(default_factory=set)


class Receiver:
    """The event handlers of the listener, and which studies have an open association.

    Parameters
    ----------
    config
        The node's configuration.
    spool, ledger
        Where instances and their rows go.
    own
        How the node's own outputs are recognised.
    """

    def __init__(self, config: NodeConfig, spool: Spool, ledger: NodeLedger, own: OwnOutputs) -> None:
        self.config = config
        self.spool = spool
        self.ledger = ledger
        self.own = own
        self.policy = AccessPolicy(config.access.allow, config.access.open)
        self.limits: IngestLimits = config.ingest.limits
        self._open: dict[int, _Association] = {}
        self._lock = threading.Lock()
        self.stored = 0
        self.refused = 0

    # -- open associations

    def open_studies(self) -> set[str]:
        """Studies that an association still open has sent instances of."""
        with self._lock:
            return {uid for a in self._open.values() for uid in a.studies}

    def _track(self, assoc: Any) -> _Association:
        with self._lock:
            return self._open.setdefault(id(assoc), _Association(assoc.requestor.ae_title))

    def _ended(self, event: Any) -> None:
        with self._lock:
            self._open.pop(id(event.assoc), None)
        removed = self.spool.abandon(event.assoc.dul)
        if removed:
            log.info("removed %d unfinished instance(s) of an ended association", removed)

    # -- handlers

    def handlers(self) -> list[Any]:
        """``(event, handler)`` pairs for pynetdicom."""
        return [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._ended),
            (evt.EVT_ABORTED, self._ended),
            (evt.EVT_CONN_CLOSE, self._ended),
        ]

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title or "").strip()
        address = str(assoc.requestor.address)
        if not self.policy.allows(calling, address):
            log.warning(
                "association refused: calling AE title not on the allow-list (%s)",
                phi_ref(calling, prefix="ae"),
            )
            self.ledger.count("associations_refused")
            self.ledger.note(
                "access", "an association from a calling AE title not on the allow-list was rejected"
            )
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected permanent, user, calling AE not recognised
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
            return
        self._track(assoc)

    def admit(self, request: AssociateRequest, address: str) -> tuple[int, int, int] | None:
        """Check an A-ASSOCIATE-RQ before it takes a slot: None, or the A-ASSOCIATE-RJ reason."""
        if self.config.access.check_called_aet and request.called_ae != self.config.listen.ae_title:
            why, answer = "called AE title is not this node's", CALLED_NOT_RECOGNISED
        elif not self.policy.allows(request.calling_ae, address):
            why, answer = "calling AE title not on the allow-list", CALLING_NOT_RECOGNISED
        else:
            return None
        log.warning("association refused: %s (%s)", why, phi_ref(request.calling_ae, prefix="ae"))
        self.ledger.count("associations_refused")
        self.ledger.note("access", f"an association was rejected before taking a slot: {why}")
        return answer

    def _on_echo(self, event: Any) -> int:
        return SUCCESS

    def _on_store(self, event: Any) -> int:
        file = self.spool.find(str(event.dataset_path))
        if file is None:  # not one of ours: pynetdicom was not set up by start_scp
            log.error("a C-STORE data set was not received into the spool")
            return PROCESSING_FAILURE
        try:
            status = self._store(event, file)
        except Exception:  # never let pynetdicom answer for us; never keep a half-handled file
            log.exception("unexpected failure while storing an instance")
            status = PROCESSING_FAILURE
        if status != SUCCESS:
            file.discard()
            self.refused += 1
            self.ledger.count(f"refused_{status:04x}")
        return status

    def classify(self, ds: Any, study_uid: str) -> tuple[str, str | None, bool]:
        """An instance's kind (``own_output``, ``image``, ``out_of_scope``), the gate's
        reason for an out-of-scope one, and whether the configuration keeps it."""
        if self.own.matches(ds, study_uid):
            return "own_output", None, self.config.spool.own_outputs == "store"
        decision = gate_header(ds, limits=self.limits)
        if decision.accepted:
            return "image", None, True
        return "out_of_scope", decision.reason, self.config.spool.out_of_scope == "store"

    def _store(self, event: Any, file: IncomingFile) -> int:
        req = event.request
        if file.error is not None:
            self.ledger.note(
                "storage", f"an instance was refused with 0xA700: the write failed ({file.error})"
            )
            return OUT_OF_RESOURCES
        try:
            self.spool.check_space(self.ledger.stored_bytes, file.size)
        except StorageError as exc:
            log.warning("instance refused with 0xA700: %s", exc)
            self.ledger.note("storage", f"an instance was refused with 0xA700: {exc}")
            return OUT_OF_RESOURCES
        try:
            # the header only, its large values (overlays, private blobs) left unread: the
            # listener's memory does not grow with the instance
            ds = read_header(file.name, limits=self.limits, skip_above=HEADER_VALUE_BYTES).dataset
        except InputError as exc:
            log.warning("instance refused with 0xC000: its header cannot be read (%s)", exc.reason)
            return CANNOT_UNDERSTAND
        sop_uid, sop_class = str(req.AffectedSOPInstanceUID or ""), str(req.AffectedSOPClassUID or "")
        study_uid, series = text(ds, "StudyInstanceUID"), text(ds, "SeriesInstanceUID")
        uids = (sop_uid, sop_class, study_uid, series)
        if (
            not all(is_valid_uid(u) for u in uids)
            or text(ds, "SOPInstanceUID") != sop_uid
            or text(ds, "SOPClassUID") != sop_class
        ):
            log.warning("instance refused with 0xA900: missing, invalid or mismatched UIDs")
            return DOES_NOT_MATCH
        kind, reason, keep = self.classify(ds, study_uid)
        calling = self._track(event.assoc).calling_ae
        what = phi_ref(sop_uid, prefix="instance")
        if self.ledger.known(sop_uid, file.sha256):
            log.info("%s: received again with the same bytes; acknowledged, not kept twice", what)
            self.ledger.count("duplicates")
            file.discard()
            return SUCCESS
        common: dict[str, Any] = dict(
            sop_uid=sop_uid,
            study_uid=study_uid,
            series_uid=series,
            sop_class_uid=sop_class,
            sha256=file.sha256,
            size=file.size,
            kind=kind,
            reason=reason,
            calling_ae=calling,
        )
        if not keep:
            file.discard()
            self.ledger.record_instance(file_id=file.file_id, path="", keep=False, **common)
            log.info("%s: %s, dropped as configured", what, kind)
            return SUCCESS
        try:
            path = file.commit()
        except StorageError as exc:
            log.warning("instance refused with 0xA700: %s", exc)
            self.ledger.note("storage", f"an instance was refused with 0xA700: {exc}")
            return OUT_OF_RESOURCES
        fault("receive.after_rename")
        relative = self.spool.relative(path)
        try:
            outcome = self.ledger.record_instance(file_id=file.file_id, path=relative, **common)
        except StorageError as exc:
            self.spool.remove_file(relative)  # refused: the sender sends it again
            log.warning("instance refused with 0xA700: %s", exc)
            return OUT_OF_RESOURCES
        if outcome == DUPLICATE:  # the same copy arrived on another association meanwhile
            self.spool.remove_file(relative)
        elif kind != "own_output":
            with self._lock:
                self._open.setdefault(id(event.assoc), _Association(calling)).studies.add(study_uid)
        self.stored += 1
        log.debug("%s stored (%s, %s)", what, kind, outcome)
        fault("receive.before_ack")
        return SUCCESS


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


class NodeServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a connection limit and TLS handshakes off the accept loop.

    Parameters
    ----------
    ae, address, ae_title, contexts, evt_handlers
        As for :class:`pynetdicom.transport.AssociationServer`.
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
        tls: ssl.SSLContext | None = None,
        receive_limits: ReceiveLimits,
        limiter: SourceLimiter,
        slots: Slots,
        first_pdu_timeout: float,
        admit: Callable[[AssociateRequest, str], tuple[int, int, int] | None],
        on_trip: Callable[[str], None] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.tls = tls
        self.receive_limits = receive_limits
        self.limiter = limiter
        self.slots = slots
        self.first_pdu_timeout = first_pdu_timeout
        self.admit = admit
        self.on_trip = on_trip
        self.on_refused = on_refused
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
        tls=tls,
        receive_limits=limits,
        limiter=SourceLimiter(
            listen.max_connections, min(listen.max_connections_per_source, listen.max_connections)
        ),
        slots=Slots(listen.max_associations),
        first_pdu_timeout=listen.first_pdu_timeout,
        admit=receiver.admit,
        on_trip=tripped,
        on_refused=lambda: ledger.count("connections_refused"),
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="chexdcm-scp", daemon=True
    )
    thread.start()
    port = int(server.server_address[1])
    log.info("listening as %s on %s:%d (%s)", listen.ae_title, listen.bind, port, "TLS" if tls else "TCP")
    assert isinstance(server, NodeServer)
    return RunningSCP(server, receiver, thread, port)
