"""The node's analysis worker: holds the model (loaded once) and takes ready studies from the ledger.

It runs in its own process (:func:`worker_main`, started by :mod:`.service`), so
decoding and inference never share an interpreter lock with the listener.  Each study
goes through the same stages as ``chexdcm infer`` (:mod:`chexnet_dicom.pipeline`,
:func:`chexnet_dicom.pipeline.build_and_write`):

1. :meth:`~chexnet_dicom.node.ledger.NodeLedger.claim` gives the study's stored
   instances and what earlier versions of its results left (records);
2. the instances not analysed before are scanned from the header bytes the listener
   kept in the ledger (:func:`scan_stored`: no header is read from a file again; the
   bytes also go into the records) and go through
   :func:`~chexnet_dicom.pipeline.results_for_paths`;
3. the earlier images come back from their records
   (:func:`~chexnet_dicom.node.carry.restore_image`) and
   :func:`~chexnet_dicom.node.carry.combine` merges them with the new analysis, so a
   re-opened study's SR covers every image and lists the earlier SR as predecessor;
4. the results are written into the spool (``results/<study ref>/<version>/``, DICOM
   only: no PNG previews), or the outbox when no destination is configured, and
   :meth:`~chexnet_dicom.node.ledger.NodeLedger.finish` records the records, the version
   and the delivery in one transaction.

A failure of one study (unreadable pixels everywhere, a model error, outputs that
cannot be built) marks that study ``failed`` with its reason and stage, through
:func:`~chexnet_dicom.pipeline.guarded` as in every front door, and the worker goes on.
An error of the shared fatal set (:data:`~chexnet_dicom.pipeline.FATAL`: WeightsError,
ConfigError, MemoryError, KeyboardInterrupt) ends the worker process cleanly instead
(ledger closed, exit status 1): the study stays claimed, and the node's supervisor
starts another worker and returns the study to the queue.  The listener and the sender
go on; no study is marked failed for a fault that was not its own.
Output UIDs are deterministic (:mod:`chexnet_dicom.outputs.identity`): an analysis
repeated after a crash produces the same files, so the destination never sees two.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from chexnet_dicom.config import IngestConfig, NodeConfig, OutputOptions
from chexnet_dicom.dicom.read import PixelLocation, ScannedHeader, header_from_raw, read_header
from chexnet_dicom.dicom.study import (
    Instance,
    Skipped,
    StudyScan,
    build_study,
    duplicate_skipped,
    instance_from_header,
    kept_index,
    study_order,
)
from chexnet_dicom.errors import InferenceError, InputError
from chexnet_dicom.faults import active, fault
from chexnet_dicom.logs import persistent_log_key, phi_ref, redact
from chexnet_dicom.node.carry import CarriedImage, carry, combine, header_bytes, restore_image, restore_skip
from chexnet_dicom.node.drift_window import DriftMonitor
from chexnet_dicom.node.ledger import Claimed, NodeLedger, StoredInstance
from chexnet_dicom.node.records import decode_record, encode_record
from chexnet_dicom.node.spool import Spool
from chexnet_dicom.pipeline import FATAL, analysis_preprocessing, build_and_write, guarded, results_for_paths
from chexnet_dicom.results import Failure, ImageResult, StudyFailure, StudyResult, study_ref

if TYPE_CHECKING:
    from chexnet_dicom.outputs.build import StudyOutputs

__all__ = ["OUTBOX", "Analyser", "previous_sr", "worker_main", "worker_name"]

log = logging.getLogger(__name__)

#: The destination name the ledger records for the local outbox.
OUTBOX = "outbox"


def worker_name(pid: int) -> str:
    """The name a worker process claims studies under in the ledger."""
    return f"worker-{pid}"


def previous_sr(uids: tuple[str, str, str], study_uid: str) -> Dataset:
    """The identifiers of an earlier SR, as the new SR's predecessor (its file may be purged).

    Parameters
    ----------
    uids
        ``(SOPInstanceUID, SeriesInstanceUID, SOPClassUID)`` kept in the ledger.
    study_uid
        The study.
    """
    ds = Dataset()
    ds.StudyInstanceUID = study_uid
    ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID = uids
    return ds


#: A scan of claimed instances and the results of its studies.
_Predicted = tuple[StudyScan, list[StudyResult]]


class Analyser:
    """One worker's model and the steps it runs on a claimed study.

    Parameters
    ----------
    config
        The node's configuration.
    spool, ledger
        The node's spool and this process's ledger connection.
    predictor
        A loaded predictor (:func:`chexnet_dicom.model.backends.load_predictor`).
    destination
        The destination's description, or :data:`OUTBOX`.
    """

    def __init__(
        self, config: NodeConfig, spool: Spool, ledger: NodeLedger, predictor: Any, destination: str
    ) -> None:
        self.config = config
        self.spool = spool
        self.ledger = ledger
        self.predictor = predictor
        self.destination = destination
        self.name = worker_name(os.getpid())
        self.drift = DriftMonitor.start(config, ledger, predictor)  # reference loaded once

    def output_options(self) -> OutputOptions:
        """What this worker writes: the configured outputs, without PNG previews for a PACS."""
        options = self.config.outputs
        if self.destination != OUTBOX:  # a PACS gets DICOM; PNG previews are for the local outbox
            options = dataclasses.replace(options, previews=False)
        return options

    def warm_up(self) -> float:
        """Run one tiny real study through every stage (:func:`~chexnet_dicom.pipeline.warm.warm_result_stages`)."""
        from chexnet_dicom.pipeline.warm import warm_result_stages

        return warm_result_stages(self.predictor, self.output_options(), self.config.ingest)

    def run_once(self) -> int:
        """Claim ready studies and analyse them; returns how many were taken.

        Several claimed studies (``work.max_studies`` > 1) are decoded and predicted
        together (:meth:`predict_together`: their images share model batches), then each
        is assembled, built, written and recorded on its own.
        """
        claimed = self.ledger.claim(self.name, self.config.work.max_studies)
        together = self.predict_together(claimed) if len(claimed) > 1 else None
        for study in claimed:
            self.analyse(study, together)
        return len(claimed)

    def _new_instances(self, claimed: Claimed) -> list[StoredInstance]:
        known_files = {file_id for file_id, _ in claimed.records.values()}
        return [i for i in claimed.instances if i.file_id not in known_files]

    def predict_together(self, claimed: Sequence[Claimed]) -> _Predicted | None:
        """Scan, decode and predict the new images of several claimed studies in shared batches.

        Returns None when that fails for any reason other than the fatal set: each study
        is then predicted on its own, where a failure is that study's alone.

        Raises
        ------
        WeightsError, ConfigError, MemoryError, KeyboardInterrupt
            :data:`~chexnet_dicom.pipeline.failures.FATAL`.
        """
        new = [inst for c in claimed for inst in self._new_instances(c)]
        if not new:
            return None
        try:
            found = scan_stored(new, self.spool, self.config.ingest)
            return found, list(results_for_paths(found, self.predictor, config=self.config.ingest))
        except FATAL:
            raise
        except Exception as exc:  # each study on its own then: a failure is that study's alone
            log.warning(
                "shared prediction failed (%s); the studies are predicted one by one", type(exc).__name__
            )
            return None

    def analyse(self, claimed: Claimed, together: _Predicted | None = None) -> None:
        """Analyse one claimed study and record the outcome (never raises for the study's own faults).

        A failure of one of its stages (:data:`~chexnet_dicom.pipeline.failures.STAGES`)
        marks the study ``failed`` with its reason, as ``chexdcm infer`` and ``batch``
        fail one study.  An error of the shared fatal set
        (:data:`~chexnet_dicom.pipeline.failures.FATAL`: WeightsError, ConfigError,
        MemoryError, KeyboardInterrupt) is not the study's: it propagates, this worker
        process ends (:func:`worker_main`) and the study stays claimed until the node's
        supervisor starts another worker and returns it to the queue
        (:meth:`~chexnet_dicom.node.ledger.NodeLedger.recover`).  The node itself (listener,
        sender) keeps running; a MemoryError never fails a study it did not cause.

        ``together`` is what :meth:`predict_together` returned for the studies claimed with
        this one (None: it is predicted on its own).

        Raises
        ------
        WeightsError, ConfigError, MemoryError, KeyboardInterrupt
            :data:`~chexnet_dicom.pipeline.failures.FATAL`.
        """
        ref = phi_ref(claimed.study_uid, prefix="study")
        t0 = time.perf_counter()
        failure = self._analyse(claimed, ref, together)
        if failure is not None:
            self.ledger.fail(claimed, failure.reason, failure.message)
        log.info("%s: version %d handled in %.2f s", ref, claimed.version, time.perf_counter() - t0)

    def _predicted(self, new: list[StoredInstance], together: _Predicted | None) -> _Predicted:
        fault("worker.predict")
        if active("worker.model_error"):
            raise InferenceError("the model failed on this study (injected fault worker.model_error)")
        if together is not None:
            return together
        found = scan_stored(new, self.spool, self.config.ingest)
        return found, list(results_for_paths(found, self.predictor, config=self.config.ingest))

    def _combined(self, claimed: Claimed, fresh: StudyResult | None) -> StudyResult:
        limits = self.config.ingest.limits
        pre = analysis_preprocessing(self.predictor)
        carried_images: list[ImageResult] = []
        carried_skipped = []
        for _sop, (_file_id, data) in claimed.records.items():
            record = decode_record(data)
            if isinstance(record, CarriedImage):
                carried_images.append(restore_image(record, pre, limits))
            else:
                carried_skipped.append(restore_skip(record, limits))
        return combine(claimed.study_uid, self.predictor.card, fresh, carried_images, carried_skipped)

    def _analyse(self, claimed: Claimed, ref: str, together: _Predicted | None) -> Failure | None:
        new = self._new_instances(claimed)
        if not new:
            self.ledger.unchanged(claimed)
            return None
        predicted = guarded(ref, "predict", self._predicted, new, together)
        if isinstance(predicted, Failure):
            return predicted
        found, results = predicted
        fresh = next((r for r in results if r.study_uid == claimed.study_uid), None)
        if fresh is not None and fresh.failed:
            return fresh.failure
        result = guarded(ref, "assemble", self._combined, claimed, fresh)
        if isinstance(result, Failure):
            return result
        if not result.images and not result.skipped:
            return Failure(StudyFailure.NO_INSTANCES, "none of the study's instances could be read", "load")
        previous = [previous_sr(claimed.previous_sr, claimed.study_uid)] if claimed.previous_sr else []
        options = self.output_options()
        to_outbox = self.destination == OUTBOX
        base = self.spool.outbox if to_outbox else self.spool.results
        folder = base / study_ref(claimed.study_uid) / str(claimed.version)
        done = build_and_write(result, folder, options, previous)
        if isinstance(done, Failure):
            return done
        outputs, written = done
        recorded = guarded(
            ref, "write", self._record, claimed, new, fresh, header_bytes(found), outputs, written, folder
        )
        if isinstance(recorded, Failure):
            return recorded
        if fresh is not None:  # the newly analysed images join the drift window
            self.drift.observe(fresh.images)
        return None

    def _record(
        self,
        claimed: Claimed,
        new: list[StoredInstance],
        fresh: StudyResult | None,
        headers: dict[str, bytes | None],
        outputs: StudyOutputs,
        written: list[Path],
        folder: Path,
    ) -> None:
        """Record the version: the records for later versions, the SR's identifiers and the delivery."""
        files = sorted(p.name for p in written if p.suffix == ".dcm")
        limits = self.config.ingest.limits
        images, skipped = carry(fresh, limits, headers) if fresh is not None else ({}, {})
        file_of = {i.sop_uid: i.file_id for i in new}
        records: dict[str, tuple[str, str, bytes]] = {}
        for sop, item in images.items():
            records[sop] = (file_of.get(sop, ""), "image", encode_record(item))
        for sop, skip in skipped.items():
            records[sop] = (file_of.get(sop, ""), "skipped", encode_record(skip))
        sr = None
        if outputs.sr is not None:
            sr = (
                str(outputs.sr.SOPInstanceUID),
                str(outputs.sr.SeriesInstanceUID),
                str(outputs.sr.SOPClassUID),
            )
        fault("worker.after_write")
        to_outbox = self.destination == OUTBOX
        relative = str(folder.relative_to(self.spool.root)) if not to_outbox else str(folder)
        self.ledger.finish(
            claimed,
            records=records,
            analysed_files=[i.file_id for i in new],
            sr=sr,
            destination=self.destination,
            folder=relative,
            files=files,
            delivered=to_outbox,
        )
        self.ledger.count("studies_analysed")
        self.ledger.count("images_analysed", len(fresh.images) if fresh is not None else 0)


def _scanned(inst: StoredInstance, path: str, cfg: IngestConfig) -> ScannedHeader:
    """The header the listener kept (parsed from its bytes), or, without one, the file's (kept raw)."""
    h = inst.header
    if h is None:
        return read_header(path, limits=cfg.limits, keep_raw=True)
    location = PixelLocation(path, h.offset, inst.size, h.mtime_ns, h.implicit, h.little)
    return header_from_raw(h.data, location, limits=cfg.limits)


def scan_stored(instances: Sequence[StoredInstance], spool: Spool, cfg: IngestConfig) -> StudyScan:
    """A claimed study's instances as :func:`~chexnet_dicom.dicom.study.scan` would find them.

    The header of each comes from the bytes the listener kept in the ledger
    (:class:`~chexnet_dicom.node.ledger.StoredHeader`), so the worker never reads a
    header from the file again; one without kept bytes (deflated, a large header, a
    row from before the ledger kept them) is read from its file.  The scan's rules
    then apply as in batch (:func:`~chexnet_dicom.batch.studies.load_study`):
    :func:`~chexnet_dicom.dicom.study.instance_from_header`, one copy per SOP Instance
    UID (:func:`~chexnet_dicom.dicom.study.kept_index`) and
    :func:`~chexnet_dicom.dicom.study.build_study`.
    """
    unassigned: list[Skipped] = []
    found: list[tuple[Instance, tuple[str, str]]] = []
    for inst in instances:
        path = str(spool.absolute(inst.path))
        try:
            result = instance_from_header(path, _scanned(inst, path, cfg), cfg)
        except InputError as exc:
            unassigned.append(Skipped(path, "error", exc.reason, str(exc)))
            continue
        if isinstance(result, Skipped):
            unassigned.append(result)
        else:
            found.append(result)
    by_sop: dict[str, list[int]] = {}
    for k, (one, _) in enumerate(found):
        by_sop.setdefault(one.sop_uid, []).append(k)
    best = {sop: group[kept_index([found[i][0].accepted for i in group])] for sop, group in by_sop.items()}
    members: dict[str, list[Instance]] = {}
    skipped: dict[str, list[Skipped]] = {}
    when: dict[str, tuple[str, str]] = {}
    for k, (one, one_when) in enumerate(found):
        if best[one.sop_uid] != k:
            skipped.setdefault(one.study_uid, []).append(
                duplicate_skipped(one, found[best[one.sop_uid]][0].path)
            )
            continue
        members.setdefault(one.study_uid, []).append(one)
        when.setdefault(one.study_uid, one_when)
    built = [
        build_study(uid, members.get(uid, []), skipped.get(uid, []), when.get(uid, ("", "")))
        for uid in set(members) | set(skipped)
    ]
    return StudyScan(tuple(sorted(built, key=study_order)), tuple(unassigned))


def load_node_predictor(config: NodeConfig) -> Any:
    """Load the node's model once (weights resolved as for ``chexdcm infer``).

    With several worker processes and ``runtime.threads = 0`` each model gets its share
    of the CPUs (at least one thread), so that the workers do not oversubscribe them.
    """
    from chexnet_dicom.model.predictor import available_cpus
    from chexnet_dicom.model.startup import start_model

    runtime = config.runtime
    if config.work.workers > 1 and runtime.threads == 0:
        runtime = dataclasses.replace(runtime, threads=max(1, available_cpus() // config.work.workers))
    return start_model(config.weights, runtime).predictor


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the node's main process dies (kill -9 included)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent check in the loop remains
        pass


def worker_main(config: NodeConfig, destination: str, stop: Any = None, ready: Any = None) -> None:
    """The worker process: load the model once, then analyse ready studies until stopped.

    Parameters
    ----------
    config
        The node's configuration.
    destination
        The destination's description, or :data:`OUTBOX`.
    stop
        A ``multiprocessing.Event`` that ends the loop (after the study in hand).
    ready
        A ``multiprocessing.Event`` set once the model is loaded.
    """
    from chexnet_dicom.logs import setup_logging

    parent = os.getppid()
    _die_with_parent()
    setup_logging(int(os.environ.get("CHEXDCM_VERBOSITY", "0") or 0))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if config.work.nice > 0:  # the listener and the sender (main process) come first
        os.nice(config.work.nice)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    spool = Spool(config.spool)
    persistent_log_key(spool.key_path)
    ledger = NodeLedger(spool.ledger_path)
    analyser = Analyser(config, spool, ledger, load_node_predictor(config), destination)
    analyser.warm_up()  # before the first study: it must cost what a warm one does
    if ready is not None:
        ready.set()
    try:
        while not stopping.is_set() and not (stop is not None and stop.is_set()):
            if os.getppid() != parent:  # the node is gone (kill -9): never run orphaned
                break
            if analyser.run_once() == 0:
                time.sleep(config.work.poll_s)
    except FATAL as exc:  # not a study's fault: end this worker; the supervisor starts another
        log.error(
            "worker stops: %s (%s); its study goes back to the queue", type(exc).__name__, redact(exc, 120)
        )
        raise SystemExit(1) from None
    finally:
        ledger.close()


def result_files(folder: Path, names: Sequence[str]) -> list[Path]:
    """The result files of a delivery, in sending order."""
    return [folder / n for n in names]
