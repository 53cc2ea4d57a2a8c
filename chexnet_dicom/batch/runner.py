"""The batch runner: discover, plan, analyse each unfinished study, record it, write the tables.

::

    discover(export)         header index (OUT/state/index.sqlite), new/changed files only
      -> study_plan(shard)    studies in the scan's order, each with a content key
      -> skip finished        the ledger (OUT/state/ledger.sqlite) has it with that key
      -> load_study           instances rebuilt from the stored headers (scan's rules)
      -> results_for_studies  the pipeline's stages: decode worker processes (fast path),
                              batches that span studies, decode overlapped with inference
      -> write_results        --write-dicom: SR + SC per study (deterministic UIDs)
      -> study_rows + record  the study's rows, committed in one transaction
      -> write_tables         predictions.parquet/.csv, studies, files, errors (atomic)
      -> write_shift          shift.json + shift.md: the export against the model's drift
                              reference, from the observations the ledger recorded
                              (:mod:`chexnet_dicom.batch.shift`)

Memory is bounded by the pipeline's window (a batch plus the decode queue, and the
studies not yet complete), the plan (one small record per study) and a Parquet row
group, whatever the export size.  The engine ``"ray"`` replaces the middle three steps
(:mod:`chexnet_dicom.batch.ray_engine`) and records the same rows.

Choosing the predictor for large batches (``--backend auto``)
-------------------------------------------------------------
On a GPU: PyTorch bf16 + channels_last (``load_predictor``'s own choice).  On a CPU
with AMX-BF16 tiles and a batch of 8 or more: PyTorch bf16 + channels_last; its
probabilities differ from float32 by at most 0.005 (``tests/model/test_torch_backend.py``).
Otherwise ONNX Runtime float32, as ``infer``.  AVX512-BF16 alone is not enough: on this
project's 2-core Xeon (AVX512-BF16, no AMX) ONNX Runtime float32 predicts a batch of 8
at 79 ms per image against 252 ms for torch bf16 + channels_last (the same process,
alternated; ``benchmarks/batch.py``'s notes).  The rule is fixed (no timing at
start-up), so the same machine and options always give the same backend, which the
resume fingerprint records.  It reads the CPU flags, and imports torch only on a CPU
with AMX.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.batch.discover import DiscoveryReport, discover
from chexnet_dicom.batch.index import HeaderIndex
from chexnet_dicom.batch.ledger import RunLedger
from chexnet_dicom.batch.pseudonym import Pseudonymizer
from chexnet_dicom.batch.rows import study_rows
from chexnet_dicom.batch.schema import FileStatus, StudyStatus
from chexnet_dicom.batch.shift import write_shift
from chexnet_dicom.batch.studies import WHOLE, Shard, StudyEntry, load_study, study_plan
from chexnet_dicom.batch.tables import write_tables
from chexnet_dicom.config import BatchConfig, NetTimeouts, RuntimeConfig, check_pseudonymization
from chexnet_dicom.dicom.study import Study
from chexnet_dicom.errors import EXIT_FAILURE, EXIT_INCOMPLETE, EXIT_OK, ConfigError
from chexnet_dicom.faults import fault
from chexnet_dicom.model.predictor import PredictorBase, cpu_flags
from chexnet_dicom.net.destination import Destination
from chexnet_dicom.net.sender import RetryPolicy
from chexnet_dicom.pipeline import results_for_studies, write_results
from chexnet_dicom.results import FAILURE_REASONS, StudyResult

__all__ = [
    "BatchReport",
    "ResultSender",
    "Progress",
    "batch_runtime",
    "fingerprint",
    "run_batch",
    "state_paths",
]

log = logging.getLogger(__name__)

#: ``progress(stage, done, total)``: stage ``"discover"`` (files; total 0: unknown) or
#: ``"analyse"`` (images of the studies to analyse).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ResultSender:
    """``--send``: where each study's DICOM results go, through :mod:`chexnet_dicom.net.sender`.

    Attributes
    ----------
    destination
        From :func:`~chexnet_dicom.net.destination.parse_destination`.
    policy
        Tries per study and the capped exponential backoff between them.
    timeouts
        Network timeouts; None: the sender's defaults.
    """

    destination: Destination
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: NetTimeouts | None = None

    def send(self, paths: list[str], study_uid: str, out: Path) -> list[dict[str, Any]]:
        """Send one study's SR and SC files; return ``errors`` rows for those not delivered.

        Raises
        ------
        TransferError
            The destination could not be reached on any try (the run stops; a resume
            analyses and sends the study again, with the same UIDs).
        """
        from chexnet_dicom.net.sender import send_with_retry

        files = [p for p in paths if p.endswith(".dcm")]
        if not files:
            return []
        report = send_with_retry(
            files,
            self.destination,
            policy=self.policy,
            timeouts=self.timeouts,
        )
        return [
            {
                "path": os.path.relpath(d.path, out),
                "study_uid": study_uid,
                "stage": "send",
                "reason": SEND_FAILED,
                "message": f"not delivered to {report.destination}: {d.reason}",
            }
            for d in report.failed
        ]


#: ``errors.csv`` reason of a DICOM result the destination did not accept.
SEND_FAILED = "SEND_FAILED"


@dataclass
class BatchReport:
    """What a batch run did (``OUT/summary.json``; no PHI).

    Attributes
    ----------
    discovery
        The discovery's counts.
    studies_planned
        Studies of the shard.
    studies_resumed
        Studies already finished by an earlier run with the same content (not recomputed).
    studies_analysed
        Studies analysed by this run.
    images_predicted
        Images this run predicted.
    tables
        Row counts of the tables: files and studies per status.
    shift
        The cohort shift's status, combined score and alarm (``shift.json`` has the rest).
    seconds
        Wall time per step.
    exit_code
        0, 1 or 3 (see the README's exit code table).
    """

    discovery: DiscoveryReport
    studies_planned: int = 0
    studies_resumed: int = 0
    studies_analysed: int = 0
    images_predicted: int = 0
    tables: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    model: dict[str, str] = field(default_factory=dict)
    shift: dict[str, Any] = field(default_factory=dict)
    exit_code: int = EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        out = dataclasses.asdict(self)
        out["seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}
        return out


def state_paths(out: Path) -> tuple[Path, Path]:
    """The header index and the ledger of the run in ``out``."""
    return out / "state" / "index.sqlite", out / "state" / "ledger.sqlite"


def batch_runtime(runtime: RuntimeConfig) -> RuntimeConfig:
    """``runtime`` with the batch rule for ``backend = precision = "auto"`` applied (module docstring)."""
    if runtime.backend != "auto" or runtime.precision != "auto" or runtime.device.startswith("cuda"):
        return runtime
    from chexnet_dicom.model.predictor import cuda_may_be_present

    if runtime.device == "auto" and cuda_may_be_present():
        return runtime
    if runtime.batch_size < 8 or "amx_bf16" not in cpu_flags():
        return runtime
    from chexnet_dicom.model.torch_backend import cpu_has_native_bf16

    if cpu_has_native_bf16():
        return dataclasses.replace(runtime, backend="torch", precision="bf16")
    return runtime


def fingerprint(
    predictor: PredictorBase,
    settings: BatchConfig,
    shard: Shard,
    pseudonymizer: Pseudonymizer | None,
    root: str,
) -> dict[str, Any]:
    """What a resume must share with the run it continues (see :mod:`chexnet_dicom.batch.ledger`)."""
    card = predictor.card
    write_dicom = settings.batch.write_dicom
    return {
        "weights_sha256": card.weights_sha256,
        "model": f"{card.name} {card.version}",
        "backend": predictor.backend,
        "precision": predictor.precision,
        "tta": predictor.tta,
        "ingest": dataclasses.asdict(settings.ingest),
        "write_dicom": write_dicom,
        "outputs": dataclasses.asdict(settings.outputs) if write_dicom else {},
        "shard": str(shard),
        "pseudonymize": pseudonymizer.key_id if pseudonymizer is not None else "off",
        "export_root": os.path.realpath(root),
    }


def _exit_code(tables: dict[str, Any], ledger: RunLedger) -> int:
    files = tables.get("files", {})
    whole_study = any(
        row["reason"] in FAILURE_REASONS and row["status"] == StudyStatus.FAILED for row in ledger.studies()
    )
    if whole_study or files.get(FileStatus.PENDING, 0) or ledger.undelivered():
        return EXIT_FAILURE
    return EXIT_INCOMPLETE if files.get(FileStatus.FAILED, 0) else EXIT_OK


def run_batch(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    predictor: PredictorBase,
    settings: BatchConfig,
    *,
    shard: Shard = WHOLE,
    pseudonymizer: Pseudonymizer | None = None,
    delivery: ResultSender | None = None,
    progress: Progress | None = None,
) -> BatchReport:
    """Run (or resume) a batch over the export at ``root`` into ``out``.

    Parameters
    ----------
    root
        The export root.
    out
        The run folder: tables, ``summary.json``, ``dicom/`` and ``state/``.
    predictor
        Loaded once (:func:`batch_runtime` chooses its backend).
    settings
        The configuration; ``runtime.workers`` decode worker processes.
    shard
        The part of the export this run takes.
    pseudonymizer
        Pseudonymise the tables (refused with ``write_dicom`` and ``delivery``).
    delivery
        Send each study's DICOM results (needs ``write_dicom``).  Studies whose results
        were not all accepted are analysed and sent again by the next run.
    progress
        Progress callback.

    Raises
    ------
    ConfigError
        A resume with other settings, ``write_dicom`` or ``delivery`` with
        pseudonymisation, ``delivery`` without ``write_dicom``.
    TransferError
        The destination could not be reached (the finished studies stay recorded).
    WeightsError
        Weights that fail for every study.
    """
    root_s, out_p = os.fspath(root), Path(out)
    check_pseudonymization(
        pseudonymizer is not None, write_dicom=settings.batch.write_dicom, send=delivery is not None
    )
    if settings.batch.write_dicom:  # the first study must cost what a warm one does
        from chexnet_dicom.pipeline.warm import warm_result_stages

        warm_result_stages(predictor, settings.outputs, settings.ingest)
    if delivery is not None and not settings.batch.write_dicom:
        raise ConfigError("--send needs --write-dicom: the results are written, then sent")
    if not os.path.isdir(root_s):
        raise ConfigError("EXPORT_ROOT must be a folder")
    t0 = time.perf_counter()
    index_path, ledger_path = state_paths(out_p)
    index, ledger = HeaderIndex(index_path), RunLedger(ledger_path)
    try:
        resumed = ledger.check_fingerprint(fingerprint(predictor, settings, shard, pseudonymizer, root_s))
        log.info("%s the run in the output folder", "resuming" if resumed else "starting")
        found = discover(
            root_s,
            index,
            config=settings.ingest,
            commit_every=settings.batch.commit_every,
            progress=(lambda n: progress("discover", n, 0)) if progress is not None else None,
        )
        t1 = time.perf_counter()
        plan = list(study_plan(index, shard))
        ledger.forget_others({e.study_uid for e in plan})
        undelivered = ledger.undelivered() if delivery is not None else set()
        todo = [e for e in plan if ledger.done(e.study_uid) != e.content or e.study_uid in undelivered]
        report = BatchReport(found, studies_planned=len(plan), studies_resumed=len(plan) - len(todo))
        card = predictor.card
        report.model = {
            "name": card.name, "version": card.version, "weights_sha256": card.weights_sha256,
            "backend": predictor.backend, "precision": predictor.precision, "device": predictor.device,
        }  # fmt: skip
        engine = settings.batch.engine
        if engine == "ray":
            from chexnet_dicom.batch.ray_engine import run_ray

            def load(entry: StudyEntry) -> Study:
                return load_study(index, entry.study_uid, root_s, settings.ingest)

            def finish(entry: StudyEntry, study: Study, result: StudyResult) -> None:
                finish_study(entry, study, result, ledger, root_s, out_p, settings, delivery)

            total = images_to_analyse(index, todo)
            analysed, images = run_ray(todo, load, finish, total, predictor, settings, progress)
        else:
            analysed, images = _run_local(
                todo, index, ledger, root_s, out_p, predictor, settings, delivery, progress
            )
        report.studies_analysed, report.images_predicted = analysed, images
        t2 = time.perf_counter()
        report.tables = write_tables(out_p, index, ledger, shard, pseudonymizer)
        report.exit_code = _exit_code(report.tables, ledger)
        t3 = time.perf_counter()
        shift = write_shift(out_p, ledger, card, _card_dir(settings), pseudonymizer)
        report.shift = {k: shift[k] for k in ("status", "combined", "alarm") if k in shift}
        report.seconds = {
            "discover": t1 - t0,
            "analyse": t2 - t1,
            "tables": t3 - t2,
            "shift": time.perf_counter() - t3,
            "total": time.perf_counter() - t0,
        }
        atomic_write(out_p / "summary.json", json.dumps(report.to_dict(), indent=2, sort_keys=True))
        return report
    finally:
        index.close()
        ledger.close()


def _card_dir(settings: BatchConfig) -> Path | None:
    """The folder of the model card (``settings.weights`` once resolved to a card file), None when unknown."""
    if settings.weights and Path(settings.weights).is_file():
        return Path(settings.weights).resolve().parent
    return None


def images_to_analyse(index: HeaderIndex, todo: list[StudyEntry]) -> int:
    """The accepted, kept images of the studies to analyse (the progress total)."""
    if not todo:
        return 0
    uids = {e.study_uid for e in todo}
    return sum(1 for uid in index.accepted_study_uids() if uid in uids)


def finish_study(
    entry: StudyEntry,
    study: Study,
    result: StudyResult,
    ledger: RunLedger,
    root: str,
    out: Path,
    settings: BatchConfig,
    delivery: ResultSender | None = None,
) -> None:
    """Write a study's DICOM results (``write_dicom``), send them, record its rows: every engine's last step."""
    fault("batch.predict")
    not_sent: list[dict[str, Any]] = []
    if settings.batch.write_dicom:
        result, written = write_results(result, out / "dicom" / result.ref, settings.outputs)
        fault("batch.write")
        if delivery is not None:
            not_sent = delivery.send(written, result.study_uid, out)
    rows = study_rows(study, result, root)
    rows.errors.extend(not_sent)
    ledger.record(entry, rows)
    fault("batch.commit")


def _run_local(
    todo: list[StudyEntry],
    index: HeaderIndex,
    ledger: RunLedger,
    root: str,
    out: Path,
    predictor: PredictorBase,
    settings: BatchConfig,
    delivery: ResultSender | None,
    progress: Progress | None,
) -> tuple[int, int]:
    fed: deque[tuple[StudyEntry, Study]] = deque()
    total = images_to_analyse(index, todo)

    def studies() -> Iterator[Study]:
        for entry in todo:
            study = load_study(index, entry.study_uid, root, settings.ingest)
            fed.append((entry, study))
            yield study

    analysed = images = 0
    for result in results_for_studies(
        studies(),
        predictor,
        config=settings.ingest,
        heatmaps=settings.batch.write_dicom,
        workers=settings.runtime.workers,
        progress=(lambda done, _n: progress("analyse", done, total)) if progress is not None else None,
        total=total,
    ):
        entry, study = fed.popleft()
        assert entry.study_uid == result.study_uid
        finish_study(entry, study, result, ledger, root, out, settings, delivery)
        analysed += 1
        images += len(result.images)
    return analysed, images
