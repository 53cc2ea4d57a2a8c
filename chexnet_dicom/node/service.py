"""The running node: listener, scheduler, worker process and sender over one spool and ledger.

:class:`Node` wires the pieces together:

* the guarded Storage SCP (:mod:`.scp`) in the main process, receiving into the spool;
* a scheduler thread that marks studies ready (association released and quiet for
  ``listen.quiet_period`` seconds), purges delivered images after
  ``spool.retention_s`` and supervises the worker;
* one or more worker processes (:mod:`.worker`), each loading the model once;
* a sender thread that takes due deliveries from the ledger and sends them with
  :func:`chexnet_dicom.net.sender.send_files`; the ledger owns the attempt count, the
  backoff schedule (``[destination]``) and the dead-letter state, so retries survive
  restarts.  With no destination the worker writes into the outbox and nothing is sent.

Restart recovery (:meth:`Node.recover`, before the listener opens): ``.part`` files are
removed; a stored file without a ledger row is adopted (it was durable, and processing
it again is safe); studies left ``analysing`` are ready again; deliveries left
``sending`` are due again: files recorded ``sent`` stay sent, the one in flight is marked
uncertain and sent again.  C-STORE records each file as its response arrives; STOW-RS
sends one request per file and records it from that response's per-instance result, so
for both "in flight" is one file: the one whose answer had not been recorded.

SIGTERM (:meth:`Node.run`): the listener stops accepting, open associations get
``grace`` seconds, the worker finishes its study, the sender its attempt.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chexnet_dicom.config import NodeConfig
from chexnet_dicom.dicom.attrs import text
from chexnet_dicom.dicom.read import read_header
from chexnet_dicom.errors import ChexDicomError, InputError, TransferError
from chexnet_dicom.faults import MAIN_PID_ENV, fault
from chexnet_dicom.gc_policy import freeze_long_lived, thaw
from chexnet_dicom.logs import persistent_log_key, phi_ref
from chexnet_dicom.net.sender import RetryPolicy
from chexnet_dicom.node.ledger import NewInstance, NodeLedger, QueuedDelivery
from chexnet_dicom.node.scp import HEADER_VALUE_BYTES, OwnOutputs, Receiver, RunningSCP, start_scp
from chexnet_dicom.node.spool import Spool
from chexnet_dicom.node.worker import OUTBOX, worker_main, worker_name

__all__ = ["SWITCH_INTERVAL_S", "Node", "describe_destination", "own_outputs_of"]

log = logging.getLogger(__name__)

#: The main process's interpreter switch interval while the node runs (Python's default is
#: 5 ms).  The listener's threads share the interpreter lock with the sender and the
#: receiving associations; an association with a C-ECHO hands it over a dozen times, so
#: with two busy threads the default made an echo take 180-200 ms at p50, 1 ms 60-70 ms.
SWITCH_INTERVAL_S = 0.001


def describe_destination(destination: Any) -> str:
    """A credential-free name for a destination (what the ledger records), or :data:`OUTBOX`."""
    if destination is None:
        return OUTBOX
    return str(destination.describe())


def own_outputs_of(config: NodeConfig) -> OwnOutputs:
    """How this node's outputs are recognised: the model card's weights hash and device UID."""
    from chexnet_dicom.model.card import ModelCard
    from chexnet_dicom.model.resolve import resolve_weights

    card_path, _ = resolve_weights(config.weights or None)
    card = ModelCard.read(card_path)
    return OwnOutputs(card.weights_sha256, card.device_uid)


class Node:
    """The listener node.

    Parameters
    ----------
    config
        The node's configuration.
    destination
        A destination from :mod:`chexnet_dicom.net.destination`, or None for the outbox.
    tls
        A server TLS context, or None.
    send
        ``send(paths, destination) -> report`` (default
        :func:`chexnet_dicom.net.sender.send_files`); a report has ``deliveries`` with
        ``path`` and ``ok``.
    """

    def __init__(
        self,
        config: NodeConfig,
        destination: Any = None,
        tls: Any = None,
        send: Callable[..., Any] | None = None,
    ) -> None:
        self.config = config
        self.destination = destination
        self.tls = tls
        self._send = send
        self.spool = Spool(config.spool)
        self.stopping = threading.Event()
        self.scp: RunningSCP | None = None
        self.ledger: NodeLedger | None = None
        self._threads: list[threading.Thread] = []
        self._workers: list[Any] = []
        self._mp = multiprocessing.get_context("spawn")
        self._worker_stop = self._mp.Event()
        self.metrics: Any = None
        self._switch_interval: float | None = None
        self._frozen = False

    # -- start-up

    def start(self, *, wait_ready: float | None = 600.0) -> int:
        """Recover, open the listener, start the workers (waiting up to ``wait_ready`` s for
        their models); returns the port it listens on.

        Raises
        ------
        ConfigError
            Another node runs on the spool.
        StorageError
            The ledger cannot be opened.
        """
        self.spool.acquire()
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL_S))  # the listener answers first
        persistent_log_key(self.spool.key_path)
        os.environ[MAIN_PID_ENV] = str(os.getpid())
        self.ledger = NodeLedger(self.spool.ledger_path)
        own = own_outputs_of(self.config)
        receiver = Receiver(self.config, self.spool, self.ledger, own)
        self.recover(receiver)
        # receiving never waits for the model: the listener opens first, studies queue in the ledger
        self.scp = start_scp(self.config, self.spool, self.ledger, own, tls=self.tls, receiver=receiver)
        for _ in range(self.config.work.workers):
            self._workers.append(self._start_worker())
        if wait_ready:
            deadline = time.monotonic() + wait_ready
            while not all(r.is_set() for _, r in self._workers) and time.monotonic() < deadline:
                if any(not p.is_alive() for p, _ in self._workers):
                    break
                time.sleep(0.05)
        if self.config.metrics.enabled:
            from chexnet_dicom.node.metrics import start_metrics

            self.metrics = start_metrics(self.config.metrics.port, self.spool.ledger_path)
        self._spawn(self._schedule, "chexdcm-scheduler")
        if self.destination is not None:
            self._spawn(self._sender, "chexdcm-sender")
        # what the process holds now lives as long as the node: full collections in the
        # listener's process (which hold the interpreter lock) walk only what came after
        freeze_long_lived()
        self._frozen = True
        return self.scp.port

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _start_worker(self) -> tuple[Any, Any]:
        ready = self._mp.Event()
        proc = self._mp.Process(
            target=worker_main,
            args=(self.config, describe_destination(self.destination), self._worker_stop, ready),
            name="chexdcm-worker",
            daemon=True,
        )
        proc.start()
        return proc, ready

    def recover(self, receiver: Receiver) -> dict[str, int]:
        """Restart recovery (see the module docstring); returns what was done."""
        assert self.ledger is not None
        removed, stored = self.spool.recover()
        known = self.ledger.stored_ids()
        adopted = 0
        for file_id, path in sorted(stored.items()):
            if file_id in known:
                continue
            if self._adopt(receiver, file_id, path):
                adopted += 1
        resumed = self.ledger.recover()
        done = {"parts_removed": removed, "adopted": adopted, **resumed}
        if any(done.values()):
            log.info("restart recovery: %s", ", ".join(f"{k} {v}" for k, v in done.items()))
            self.ledger.note("recovery", ", ".join(f"{k} {v}" for k, v in done.items()))
        return done

    def _adopt(self, receiver: Receiver, file_id: str, path: Path) -> bool:
        """Record a durable file the ledger never got a row for (a crash between rename and row)."""
        assert self.ledger is not None
        try:
            ds = read_header(path, limits=self.config.ingest.limits, skip_above=HEADER_VALUE_BYTES).dataset
        except InputError:
            log.warning("a stored file without a ledger row is unreadable; it is left in place")
            return False
        study_uid = text(ds, "StudyInstanceUID")
        kind, reason, _keep = receiver.classify(ds, study_uid)
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                sha.update(chunk)
        self.ledger.record_instance(
            NewInstance(
                file_id=file_id,
                path=self.spool.relative(path),
                sop_uid=text(ds, "SOPInstanceUID"),
                study_uid=study_uid,
                series_uid=text(ds, "SeriesInstanceUID"),
                sop_class_uid=text(ds, "SOPClassUID"),
                sha256=sha.hexdigest(),
                size=path.stat().st_size,
                kind=kind,
                reason=reason,
                calling_ae="",
                adopted=True,
            )
        )
        return True

    # -- the background loops

    def _schedule(self) -> None:
        assert self.ledger is not None and self.scp is not None
        listen = self.config.listen
        last_purge = 0.0
        while not self.stopping.is_set():
            now = time.time()
            try:
                self.ledger.promote_ready(
                    now, listen.quiet_period, listen.open_wait, self.scp.receiver.open_studies()
                )
                if now - last_purge >= min(30.0, max(1.0, self.config.spool.retention_s / 2)):
                    last_purge = now
                    self.purge(now)
                self._supervise()
            except ChexDicomError as exc:
                log.warning("scheduler: %s", exc)
            self.stopping.wait(0.1)

    def _supervise(self) -> None:
        """Restart a worker process that died (its study goes back to the queue)."""
        assert self.ledger is not None
        for k, (proc, _ready) in enumerate(self._workers):
            if proc.is_alive() or self.stopping.is_set():
                continue
            log.error("a worker process ended (exit code %s); starting another", proc.exitcode)
            self.ledger.note(
                "worker", f"a worker process ended (exit code {proc.exitcode}) and was restarted"
            )
            if len(self._workers) == 1:
                self.ledger.recover()
            else:  # the others go on: only the studies this one had claimed return to the queue
                self.ledger.release_claims(worker_name(proc.pid))
            self._workers[k] = self._start_worker()

    def purge(self, now: float | None = None) -> tuple[int, int]:
        """Retention: delete images (and sent results) of delivered studies after the grace period."""
        assert self.ledger is not None
        instances, folders = self.ledger.purgeable(
            time.time() if now is None else now, self.config.spool.retention_s
        )
        for inst in instances:
            if inst.path:
                self.spool.remove_file(inst.path)
        for _delivery, folder in folders:
            self.spool.remove_tree(self.spool.root / folder)
        if instances or folders:
            self.ledger.purged([i.file_id for i in instances], [d for d, _ in folders])
            log.info("retention: purged %d image(s) and %d results folder(s)", len(instances), len(folders))
        cutoff = (time.time() if now is None else now) - self.config.spool.record_retention_days * 86400
        self.ledger.expire(cutoff)
        return len(instances), len(folders)

    def _sender(self) -> None:
        assert self.ledger is not None
        while not self.stopping.is_set():
            try:
                job = self.ledger.claim_delivery()
            except ChexDicomError as exc:
                log.warning("sender: %s", exc)
                job = None
            if job is None:
                self.stopping.wait(0.1)
                continue
            self.deliver(job)

    def deliver(self, job: QueuedDelivery) -> bool:
        """One attempt at one delivery; the ledger records the outcome and the next retry.

        Each file is marked ``inflight`` just before it is sent and ``sent`` as soon as
        its C-STORE response (or its STOW-RS per-instance result) arrives, each a durable
        ledger commit made before the next file is sent.  STOW-RS makes one request per
        file for this (a whole-study request would leave every file of it in flight).  A
        crash therefore leaves at most the one file in flight to be sent again.
        """
        assert self.ledger is not None
        ledger = self.ledger
        folder = self.spool.absolute(job.folder)
        paths = [folder / name for name in job.pending]
        attempt = job.attempts + 1
        policy = RetryPolicy.of(self.config.destination)
        if not paths:
            ledger.delivered(job.id)
            return True
        recorded: set[str] = set()

        def sending(path: Path) -> None:
            ledger.file_inflight(job.id, path.name)
            fault("send.connected")

        def delivered(d: Any) -> None:
            fault("send.after_store")
            name = Path(d.path).name
            ledger.file_sent(job.id, name)
            recorded.add(name)
            fault("send.after_record")

        error = ""
        try:
            report = self._send_files(paths, sending, delivered)
        except TransferError as exc:
            error = str(exc)
            report = None
        except (OSError, ChexDicomError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            report = None
        if report is not None:
            for d in report.deliveries:
                name = Path(d.path).name
                if d.ok and name not in recorded:  # a ``send`` without the callbacks
                    ledger.file_sent(job.id, name)
                elif not d.ok and d.status is not None:  # a definite answer: not uncertain
                    ledger.file_refused(job.id, name)
            failed = [d for d in report.deliveries if not d.ok]
            if not failed:
                ledger.delivered(job.id)
                log.info(
                    "delivery %d (%s): %d file(s) sent",
                    job.id,
                    phi_ref(job.study_uid, prefix="study"),
                    len(paths),
                )
                return True
            error = "; ".join(sorted({f"{d.status or ''} {d.reason or ''}".strip() for d in failed}))[:300]
        retry_at = time.time() + policy.delay(attempt) if attempt < policy.attempts else None
        ledger.delivery_failed(job.id, error or "unknown failure", retry_at)
        if retry_at is None:
            log.error("delivery %d is a dead letter after %d attempts: %s", job.id, attempt, error)
        else:
            log.warning(
                "delivery %d attempt %d failed (%s); retry in %.0f s",
                job.id,
                attempt,
                error,
                retry_at - time.time(),
            )
        return False

    def _send_files(
        self, paths: list[Path], sending: Callable[[Path], None], delivered: Callable[[Any], None]
    ) -> Any:
        if self._send is not None:  # a stand-in transport: its outcomes are recorded when it returns
            for path in paths:
                sending(path)
            return self._send(paths, self.destination)
        from chexnet_dicom.net.destination import StowDestination
        from chexnet_dicom.net.sender import Delivery, SendReport, send_files

        timeouts = self.config.destination.timeouts
        if not isinstance(self.destination, StowDestination):  # C-STORE: one association
            return send_files(
                paths, self.destination, timeouts=timeouts, on_sending=sending, on_delivered=delivered
            )
        # STOW-RS: one request per file, so that (as with C-STORE) at most one file is in
        # flight, its per-instance result recorded before the next request is made
        answers: list[Delivery] = []
        for path in paths:
            one = send_files(
                [path], self.destination, timeouts=timeouts, on_sending=sending, on_delivered=delivered
            )
            answers.extend(one.deliveries)
        return SendReport(str(self.destination.describe()), tuple(answers))

    # -- running and stopping

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT, then stop gracefully; returns the exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.stopping.wait()
        self.stop()
        return 0

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let open associations finish (``grace`` s), stop the workers and loops."""
        self.stopping.set()
        if self.scp is not None:
            self.scp.stop(grace)
        self._worker_stop.set()
        for proc, _ in self._workers:
            proc.join(timeout=grace)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for t in self._threads:
            t.join(timeout=grace)
        if self.metrics is not None:
            self.metrics.shutdown()
        if self.ledger is not None:
            self.ledger.close()
        self.spool.release()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
        if self._frozen:
            thaw()
            self._frozen = False
        log.info("node stopped")
