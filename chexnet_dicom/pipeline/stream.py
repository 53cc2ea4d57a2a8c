"""The scheduler: each study's result as soon as its last image is predicted.

:func:`results_for_paths` scans files and folders (or takes a scan) and
:func:`results_for_studies` takes studies already grouped (lazily, from an index); both
stream :class:`~chexnet_dicom.results.StudyResult` objects in study order.  Memory is
bounded by a batch of images (and the images of the studies not yet complete), not by
the number of studies.

Images are decoded in this process or in decode worker processes
(:func:`decode_pool`); a worker receives an :class:`~chexnet_dicom.dicom.load.ImageFile`
and returns plain arrays (:func:`~chexnet_dicom.pipeline.stages.decode_for_model`).
Batches of model inputs may span studies.  :class:`StudyCollect` is the one collect
step of a study (what came back for each image, then its result), used here and by the
Ray engine.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.load import LoadedImage
from chexnet_dicom.dicom.pixels import DisplayImage
from chexnet_dicom.dicom.study import Instance, Skipped, Study, StudyScan, scan
from chexnet_dicom.errors import InferenceError
from chexnet_dicom.logs import log_failure, log_key, phi_ref, use_log_key
from chexnet_dicom.model.card import ModelCard, Preprocessing
from chexnet_dicom.model.prediction import Prediction
from chexnet_dicom.model.predictor import PredictorBase
from chexnet_dicom.pipeline.failures import FATAL, failure_of, load_skip
from chexnet_dicom.pipeline.stages import (
    Analysed,
    analysis_preprocessing,
    decode_for_model,
    loaded_image,
    predict_batch,
    study_result,
    worker_input,
)
from chexnet_dicom.results import Failure, StudyResult

__all__ = ["StudyCollect", "decode_pool", "results_for_paths", "results_for_studies"]

log = logging.getLogger(__name__)


def _exit_with_parent(parent: int, every_s: float = 0.5) -> None:  # pragma: no cover - worker thread
    """End this worker when the process that started it is gone (``kill -9``: no shutdown message)."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def _init_worker(key: bytes) -> None:  # pragma: no cover - runs in the worker processes
    # A forked worker inherits the parent's garbage, an earlier run's ONNX Runtime session
    # among it; collecting that here deadlocks on locks of threads that did not fork.
    gc.freeze()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    use_log_key(key)
    # a pool worker whose parent was killed waits for work forever, holding its pipes open
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="parent-watch").start()


def decode_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool for :func:`~chexnet_dicom.pipeline.stages.decode_for_model` whose workers log with this run's key.

    The workers fork at the first submit.  Garbage is collected here first: a forked child
    that collects an inherited, unreachable ONNX Runtime session (an earlier predictor of a
    long-lived process) deadlocks on the locks of threads that were not forked.
    """
    gc.collect()
    return ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(log_key(),))


@dataclass
class StudyCollect:
    """One study's images as they come back from loading and prediction: the one collect step.

    Every scheduler (:func:`results_for_studies`, the Ray engine) records each selected
    image's outcome here and ends the study with :meth:`result`.

    Attributes
    ----------
    study
        The study.
    waiting
        Selected images whose outcome has not been recorded.
    analysed
        Index in ``study.selected`` -> ``(instance, loaded image, prediction)``.
    skipped
        Images that failed to load.
    failure
        The first prediction failure (the study fails with it).
    read_s, predict_s
        Seconds spent loading and predicting its images.
    """

    study: Study
    waiting: int = -1
    analysed: dict[int, Analysed] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    failure: Failure | None = None
    read_s: float = 0.0
    predict_s: float = 0.0

    def __post_init__(self) -> None:
        if self.waiting < 0:
            self.waiting = len(self.study.selected)

    @property
    def complete(self) -> bool:
        """Whether every selected image's outcome is recorded."""
        return self.waiting <= 0

    def not_loaded(self, inst: Instance, exc: BaseException) -> None:
        """An image whose load raised ``exc``: listed as skipped with its reason."""
        self.skipped.append(load_skip(inst, exc))
        self.waiting -= 1

    def predicted(
        self, k: int, inst: Instance, loaded: LoadedImage, prediction: Prediction | InferenceError
    ) -> None:
        """Image ``k`` of the selection was predicted (or its prediction failed: the study fails)."""
        self.waiting -= 1
        if isinstance(prediction, InferenceError):
            log_failure(log, phi_ref(self.study.study_uid, prefix="study"), prediction)
            self.failure = self.failure or failure_of(prediction, "predict")
        else:
            self.analysed[k] = (inst, loaded, prediction)

    def result(self, card: ModelCard, preprocessing: Preprocessing, scan_share: float = 0.0) -> StudyResult:
        """The study's result (:func:`~chexnet_dicom.pipeline.stages.study_result`) with its timings."""
        timings = {"read": self.read_s + scan_share, "predict": self.predict_s}
        return study_result(
            self.study, card, preprocessing, self.analysed, self.skipped, self.failure, timings
        )


def results_for_paths(
    found: StudyScan | Iterable[str | os.PathLike[str]],
    predictor: PredictorBase,
    *,
    config: IngestConfig | None = None,
    heatmaps: bool = True,
    workers: int | Executor = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[StudyResult]:
    """Analyse every study under files and folders (or of a scan) and yield each result when complete.

    Parameters
    ----------
    found
        Files and folders to scan, or a :class:`~chexnet_dicom.dicom.study.StudyScan`.
    predictor
        Loaded once per process.
    config
        Reading limits and pixel policy.
    heatmaps
        Compute the class activation maps (needed for SR regions and overlays).
    workers
        Decode worker processes (0: decode in this process), or an executor to use.
    progress
        Called as ``progress(done, total)`` after each image is loaded.

    Yields
    ------
    StudyResult
        In scan order; a study that failed carries its :class:`~chexnet_dicom.results.Failure`.

    Raises
    ------
    WeightsError, ConfigError, MemoryError, KeyboardInterrupt
        :data:`~chexnet_dicom.pipeline.failures.FATAL`.
    """
    cfg = config or IngestConfig()
    t0 = time.perf_counter()
    # with workers, keep the header bytes: a worker parses them instead of reading the header again
    keep_raw = not isinstance(workers, int) or workers > 0
    studies = found if isinstance(found, StudyScan) else scan(found, config=cfg, keep_raw=keep_raw)
    scan_share = (time.perf_counter() - t0) / max(1, len(studies.studies))
    yield from results_for_studies(
        studies.studies,
        predictor,
        config=cfg,
        heatmaps=heatmaps,
        workers=workers,
        progress=progress,
        total=sum(len(s.selected) for s in studies.studies),
        scan_share=scan_share,
    )


def results_for_studies(
    studies: Iterable[Study],
    predictor: PredictorBase,
    *,
    config: IngestConfig | None = None,
    heatmaps: bool = True,
    workers: int | Executor = 0,
    progress: Callable[[int, int], None] | None = None,
    total: int = 0,
    scan_share: float = 0.0,
) -> Iterator[StudyResult]:
    """:func:`results_for_paths` over studies that are already grouped, taken lazily one by one.

    A front door that keeps its own index of an export (``chexdcm batch``) feeds its
    studies from there, so memory stays bounded by the decode window and the studies not
    yet complete, whatever the number of studies.

    Parameters
    ----------
    studies
        The studies, in the order their results are yielded (an iterator is read lazily).
    predictor, config, heatmaps, workers, progress
        As :func:`results_for_paths`.
    total
        The number of selected images, for ``progress`` (0 when unknown).
    scan_share
        Seconds of scanning to add to each study's ``read`` timing.

    Yields
    ------
    StudyResult
        In the order of ``studies``.

    Raises
    ------
    WeightsError, ConfigError, MemoryError, KeyboardInterrupt
        :data:`~chexnet_dicom.pipeline.failures.FATAL`.
    """
    own_pool: ProcessPoolExecutor | None = None
    executor: Executor | None
    if isinstance(workers, int):
        executor = own_pool = decode_pool(workers) if workers > 0 else None
    else:
        executor = workers
    try:
        scheduler = _Scheduler(
            predictor, config or IngestConfig(), executor, heatmaps=heatmaps, progress=progress, total=total
        )
        yield from scheduler.run(studies, scan_share)
    finally:
        if own_pool is not None:
            own_pool.shutdown(wait=True, cancel_futures=True)


#: An image on its way to a batch: its study, index in the selection, instance, image, model input.
_Batched = tuple[StudyCollect, int, Instance, LoadedImage, np.ndarray]
#: An image submitted for decoding (the future is None when it is decoded in this process).
_Queued = tuple[StudyCollect, int, Instance, Future[tuple[DisplayImage, np.ndarray]] | None]


class _Scheduler:
    """The state of one :func:`results_for_studies` run: the decode window, the batch, the open studies."""

    def __init__(
        self,
        predictor: PredictorBase,
        cfg: IngestConfig,
        executor: Executor | None,
        *,
        heatmaps: bool,
        progress: Callable[[int, int], None] | None,
        total: int,
    ) -> None:
        self.predictor = predictor
        self.cfg = cfg
        self.executor = executor
        self.heatmaps = heatmaps
        self.progress = progress
        self.total = total
        self.pre = analysis_preprocessing(predictor)
        self.batch_size = max(1, predictor.batch_size)
        self.window = self.batch_size + 2 * (getattr(executor, "_max_workers", 1) or 1)
        self.pending: deque[StudyCollect] = deque()
        self.batch: list[_Batched] = []
        self.done = 0

    def run(self, studies: Iterable[Study], scan_share: float) -> Iterator[StudyResult]:
        """Decode, batch and predict every selected image; yield each study when complete."""
        queue: deque[_Queued] = deque()
        source = self._jobs(studies)
        while True:
            self._fill(queue, source)
            if not queue:
                break
            self._take(*queue.popleft())
            if len(self.batch) >= self.batch_size:
                self._flush()
            yield from self._complete(scan_share)
        self._flush()
        yield from self._complete(scan_share)

    def _jobs(self, studies: Iterable[Study]) -> Iterator[tuple[StudyCollect, int, Instance]]:
        for study in studies:
            state = StudyCollect(study)
            self.pending.append(state)
            yield from ((state, k, inst) for k, inst in enumerate(study.selected))

    def _fill(self, queue: deque[_Queued], source: Iterator[tuple[StudyCollect, int, Instance]]) -> None:
        """Submit images until the decode window is full (or no image is left)."""
        while len(queue) < self.window and (nxt := next(source, None)) is not None:
            state, k, inst = nxt
            fut = None
            if self.executor is not None:  # plain data in and out (never a live dataset)
                fut = self.executor.submit(decode_for_model, worker_input(inst), self.cfg, self.pre)
            queue.append((state, k, inst, fut))

    def _take(
        self,
        state: StudyCollect,
        k: int,
        inst: Instance,
        fut: Future[tuple[DisplayImage, np.ndarray]] | None,
    ) -> None:
        """One decoded image: into the batch, or listed as not loaded (its study goes on)."""
        started = time.perf_counter()
        try:
            display, x = decode_for_model(inst.scanned, self.cfg, self.pre) if fut is None else fut.result()
        except FATAL:
            raise
        except Exception as exc:  # the image is not analysed; its study goes on
            state.not_loaded(inst, exc)
        else:
            self.batch.append((state, k, inst, loaded_image(inst, display), x))
        state.read_s += time.perf_counter() - started
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    def _flush(self) -> None:
        """Predict the batch and record each image's prediction in its study."""
        if not self.batch:
            return
        t = time.perf_counter()
        predictions = predict_batch(self.predictor, [x for *_, x in self.batch], cams=self.heatmaps)
        share = (time.perf_counter() - t) / len(self.batch)
        for (state, k, inst, loaded, _x), pred in zip(self.batch, predictions, strict=True):
            state.predict_s += share
            state.predicted(k, inst, loaded, pred)
        self.batch.clear()

    def _complete(self, scan_share: float) -> Iterator[StudyResult]:
        """The results of the complete studies at the head of the line, in order."""
        while self.pending and self.pending[0].complete:
            yield self.pending.popleft().result(self.predictor.card, self.pre, scan_share)
