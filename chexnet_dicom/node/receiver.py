"""The listener's event handlers: who may associate, and each C-STORE made durable before success.

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

Each kept instance's header bytes (up to its pixel data, when they are at most
:data:`HEADER_VALUE_BYTES`) go into the ledger with its row
(:class:`~chexnet_dicom.node.ledger.StoredHeader`): the worker parses them instead of
reading the file's header a second time.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt

from chexnet_dicom.config import IngestLimits, NodeConfig, parse_allowed
from chexnet_dicom.dicom.attrs import text
from chexnet_dicom.dicom.gate import gate_header
from chexnet_dicom.dicom.read import ScannedHeader, read_header
from chexnet_dicom.dicom.uids import is_valid_uid
from chexnet_dicom.errors import ConfigError, InputError, NotDicomError, StorageError
from chexnet_dicom.faults import fault
from chexnet_dicom.logs import phi_ref
from chexnet_dicom.net.admission import (
    CALLED_NOT_RECOGNISED,
    CALLING_NOT_RECOGNISED,
    AssociateRequest,
)
from chexnet_dicom.node.ledger import DUPLICATE, NewInstance, NodeLedger, StoredHeader
from chexnet_dicom.node.spool import IncomingFile, Spool
from chexnet_dicom.outputs.identity import MANUFACTURER, series_uid

__all__ = [
    "CANNOT_UNDERSTAND",
    "DOES_NOT_MATCH",
    "HEADER_VALUE_BYTES",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "SUCCESS",
    "AccessPolicy",
    "OwnOutputs",
    "Receiver",
    "kept_header",
]

log = logging.getLogger(__name__)


def kept_header(scanned: ScannedHeader) -> StoredHeader | None:
    """The header bytes to keep in the ledger for the worker: None for a deflated file or a
    header over :data:`HEADER_VALUE_BYTES` (the worker then reads the file's header itself).

    Raises
    ------
    InputError
        The file cannot be read back.
    """
    where = scanned.location
    if where is None or where.offset > HEADER_VALUE_BYTES:
        return None
    try:
        with open(where.path, "rb") as fh:
            data = fh.read(where.offset)
    except OSError as exc:
        raise NotDicomError(f"the received file cannot be read back ({type(exc).__name__})") from None
    return StoredHeader(data, where.offset, where.mtime_ns, where.implicit, where.little)


#: C-STORE statuses (PS3.4 B.2.3, PS3.7 annex C).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110

#: Header values longer than this are not read by the listener (at most 16 times it in all).
HEADER_VALUE_BYTES = 1 << 20


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
            scanned = read_header(file.name, limits=self.limits, skip_above=HEADER_VALUE_BYTES)
            header = kept_header(scanned)
        except InputError as exc:
            log.warning("instance refused with 0xC000: its header cannot be read (%s)", exc.reason)
            return CANNOT_UNDERSTAND
        ds = scanned.dataset
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
        new = NewInstance(
            file_id=file.file_id,
            path="",
            sop_uid=sop_uid,
            study_uid=study_uid,
            series_uid=series,
            sop_class_uid=sop_class,
            sha256=file.sha256,
            size=file.size,
            kind=kind,
            reason=reason,
            calling_ae=calling,
            header=header,
        )
        if not keep:
            file.discard()
            self.ledger.record_instance(new, keep=False)
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
            outcome = self.ledger.record_instance(dataclasses.replace(new, path=relative))
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
