"""The one analysis path used by ``chexdcm infer``, the listener node and batch runs.

It is a set of stages with plain-data boundaries, so each front door can schedule them
its own way (in-process, a process pool, a worker behind a ledger, Ray tasks)::

    scan(paths)                      headers only, once per file: gate, studies, selection
      -> load_image(instance)         read pixels, decode (fast path), render   [any process]
      -> model_input(display)         the card's preprocessing                  [any process]
      -> predict_batch(...)           one forward pass per batch; batches may span studies
      -> assemble(study, ...)         a StudyResult; heatmaps mapped lazily, on demand
      -> build_outputs(result)        SR + SC + sidecar, pure (outputs.build)
      -> write_outputs(outputs, dir)  atomic (outputs.write), or send

:func:`iter_results` chains the stages and yields each study's result as soon as its
last image is predicted; memory is bounded by a batch of images (and the images of the
studies not yet complete), not by the number of studies.

Failures stay with their study
------------------------------
An image that cannot be read or decoded is listed in the study's skipped files with
its reason code (an unexpected library error as ``INTERNAL``).  A model, assembly or
output failure for one study gives that study a :class:`~chexnet_dicom.results.Failure`
(reason code, PHI-free message; the traceback goes to the debug log, without values)
and the run goes on: :func:`guarded` is how every front door calls a stage.  Only a
:class:`~chexnet_dicom.errors.WeightsError` or :class:`~chexnet_dicom.errors.ConfigError`
(the same for every study) stops the run.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from chexnet_dicom.config import IngestConfig, IngestLimits, OutputOptions
from chexnet_dicom.dicom.attrs import ordering_int, text
from chexnet_dicom.dicom.load import LoadedImage, load_image
from chexnet_dicom.dicom.pixels import DisplayImage
from chexnet_dicom.dicom.read import read_header
from chexnet_dicom.dicom.reasons import INTERNAL
from chexnet_dicom.dicom.study import Instance, Skipped, Study, StudyScan, scan
from chexnet_dicom.errors import (
    ConfigError,
    InferenceError,
    InputError,
    OutputError,
    StorageError,
    WeightsError,
)
from chexnet_dicom.logs import log_failure, log_key, phi_ref, redact, use_log_key
from chexnet_dicom.model.card import ModelCard, Preprocessing
from chexnet_dicom.model.predictor import PredictorBase
from chexnet_dicom.model.result import Prediction
from chexnet_dicom.preprocess import decode_target_size, prepare_model_input
from chexnet_dicom.results import Failure, ImageResult, StudyResult

if TYPE_CHECKING:
    from pydicom import Dataset

    from chexnet_dicom.outputs.build import StudyOutputs

__all__ = [
    "CarriedImage",
    "CarriedSkip",
    "analysis_preprocessing",
    "assemble",
    "build_and_write",
    "carry",
    "combine",
    "failure_of",
    "guarded",
    "iter_results",
    "load_for_model",
    "load_skip",
    "model_input",
    "predict_batch",
    "restore_image",
    "restore_skip",
    "scan",
    "source_header",
    "stream_results",
    "study_result",
    "write_results",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


# --------------------------------------------------------------------------- failures


def failure_of(exc: BaseException, stage: str) -> Failure:
    """The :class:`Failure` a stage's exception gives its study (no PHI, no traceback).

    Parameters
    ----------
    exc
        What the stage raised.
    stage
        ``"load"``, ``"predict"``, ``"assemble"``, ``"outputs"`` or ``"write"``.
    """
    if isinstance(exc, InputError):
        return Failure(exc.reason, str(exc), stage)
    if isinstance(exc, InferenceError):
        return Failure("INFERENCE_FAILED", str(exc), stage)
    if isinstance(exc, OutputError):
        return Failure("OUTPUT_FAILED", str(exc), stage)
    if isinstance(exc, (StorageError, OSError)):
        why = getattr(exc, "strerror", None) or type(exc).__name__
        return Failure(
            "WRITE_FAILED", f"the results could not be written ({why}); free space or fix permissions", stage
        )
    return Failure(
        INTERNAL,
        f"unexpected {type(exc).__name__} in the {stage} stage ({redact(exc, 80)}); "
        "run with -vv for the traceback and please report it",
        stage,
    )


#: Errors that are the same for every study: they stop a run instead of failing one study.
FATAL = (WeightsError, ConfigError, KeyboardInterrupt, MemoryError)


def guarded(what: str, stage: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | Failure:
    """Run one stage for one study; a failure becomes a :class:`Failure` instead of an exception.

    Parameters
    ----------
    what
        A PHI-free name of the study for the debug log (its reference).
    stage
        The stage's name (see :func:`failure_of`).
    fn, args, kwargs
        The stage.

    Returns
    -------
    T or Failure

    Raises
    ------
    WeightsError, ConfigError
        Problems that are the same for every study.
    """
    try:
        return fn(*args, **kwargs)
    except FATAL:
        raise
    except Exception as exc:  # one study's failure stays with that study
        log_failure(log, f"{what}: {stage}", exc)
        failure = failure_of(exc, stage)
        log.warning("%s: %s failed (%s)", what, stage, failure.reason)
        return failure


# --------------------------------------------------------------------------- stages


def analysis_preprocessing(predictor: PredictorBase) -> Preprocessing:
    """The card's preprocessing with the predictor's test-time augmentation."""
    pre = predictor.card.preprocessing
    if predictor.tta != pre.tta:
        pre = dataclasses.replace(pre, tta=predictor.tta)  # type: ignore[arg-type]
    return pre


def model_input(display: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """The network input of a [0, 1] display image (the card's preprocessing)."""
    return prepare_model_input(
        display,
        resize=preprocessing.resize,
        input_size=preprocessing.input_size,
        tta=preprocessing.tta,
        mean=preprocessing.mean,
        std=preprocessing.std,
    )


def load_for_model(
    source: Any, config: IngestConfig, preprocessing: Preprocessing
) -> tuple[LoadedImage, np.ndarray]:
    """:func:`~chexnet_dicom.dicom.load.load_image` at the model's decode target, plus its input.

    Module level and picklable in and out: what a decode worker runs.
    """
    loaded = load_image(source, config=config, target_size=decode_target_size(preprocessing.resize))
    return loaded, model_input(loaded.display.image, preprocessing)


def predict_batch(
    predictor: PredictorBase, inputs: Sequence[np.ndarray], *, cams: bool = True
) -> list[Prediction | InferenceError]:
    """Predict a batch of model inputs (from any studies); a bad image fails alone.

    The batch runs as one call of the predictor; when it raises an
    :class:`~chexnet_dicom.errors.InferenceError` (a NaN, a wrong shape), the images are
    predicted one by one so that only the image that caused it fails.

    Returns
    -------
    list
        One :class:`~chexnet_dicom.model.result.Prediction` per input, or the
        :class:`~chexnet_dicom.errors.InferenceError` that image raised.
    """
    if not inputs:
        return []
    try:
        return list(predictor.predict_many(list(inputs), cams=cams))
    except WeightsError:
        raise
    except InferenceError:
        if len(inputs) == 1:
            raise
    out: list[Prediction | InferenceError] = []
    for x in inputs:
        try:
            out.append(predictor.predict_many([x], cams=cams)[0])
        except InferenceError as exc:
            out.append(exc)
    return out


def assemble(
    study: Study,
    card: ModelCard,
    preprocessing: Preprocessing,
    analysed: Sequence[tuple[Instance, LoadedImage, Prediction]],
    skipped: Sequence[Skipped] = (),
    timings: dict[str, float] | None = None,
) -> StudyResult:
    """A study's result from its predicted images and everything it did not analyse.

    Parameters
    ----------
    study
        From the scan.
    card
        The model card of the predictor.
    preprocessing
        The CAMs' geometry (:func:`analysis_preprocessing`).
    analysed
        ``(instance, loaded image, prediction)`` in the selection order.
    skipped
        Images that failed to load, after the study's own skipped files.
    timings
        Seconds per stage.
    """
    images = tuple(
        ImageResult(
            path=inst.path,
            dataset=loaded.dataset,
            display=loaded.display,
            prediction=pred,
            preprocessing=preprocessing,
        )
        for inst, loaded, pred in analysed
    )
    return StudyResult(
        study_uid=study.study_uid,
        card=card,
        images=images,
        skipped=tuple(study.skipped) + tuple(skipped),
        timings=dict(timings or {}),
    )


# --------------------------------------------------------------------------- streaming


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
    """A process pool for :func:`load_for_model` whose workers log with this run's key.

    The workers fork at the first submit.  Garbage is collected here first: a forked child
    that collects an inherited, unreachable ONNX Runtime session (an earlier predictor of a
    long-lived process) deadlocks on the locks of threads that were not forked.
    """
    gc.collect()
    return ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(log_key(),))


@dataclass
class _Pending:
    """A study whose images are being loaded and predicted."""

    study: Study
    index: int
    waiting: int
    analysed: dict[int, tuple[Instance, LoadedImage, Prediction]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    failure: Failure | None = None
    read_s: float = 0.0
    predict_s: float = 0.0


def load_skip(inst: Instance, exc: BaseException) -> Skipped:
    """The record of an image whose :func:`load_for_model` raised ``exc`` (logged without PHI)."""
    return _load_skip(inst, exc)


def _load_skip(inst: Instance, exc: BaseException) -> Skipped:
    if isinstance(exc, InputError):
        log.warning("%s: not analysed (%s)", phi_ref(inst.path, prefix="file"), exc.reason)
        return Skipped(inst.path, "error", exc.reason, str(exc), inst.dataset)
    log_failure(log, phi_ref(inst.path, prefix="file"), exc)
    log.warning("%s: not analysed (unexpected %s)", phi_ref(inst.path, prefix="file"), type(exc).__name__)
    return Skipped(
        inst.path,
        "error",
        INTERNAL,
        f"unexpected {type(exc).__name__} while decoding ({redact(exc, 80)}); run with -vv and please report it",
        inst.dataset,
    )


def iter_results(
    found: StudyScan | Iterable[str | os.PathLike[str]],
    predictor: PredictorBase,
    *,
    config: IngestConfig | None = None,
    heatmaps: bool = True,
    workers: int | Executor = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[StudyResult]:
    """Analyse every study and yield each result as soon as it is complete.

    Parameters
    ----------
    found
        A :class:`~chexnet_dicom.dicom.study.StudyScan`, or files and folders to scan.
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
    WeightsError, ConfigError
        Problems that are the same for every study.
    """
    cfg = config or IngestConfig()
    t0 = time.perf_counter()
    studies = found if isinstance(found, StudyScan) else scan(found, config=cfg)
    scan_share = (time.perf_counter() - t0) / max(1, len(studies.studies))
    yield from stream_results(
        studies.studies,
        predictor,
        config=cfg,
        heatmaps=heatmaps,
        workers=workers,
        progress=progress,
        total=sum(len(s.selected) for s in studies.studies),
        scan_share=scan_share,
    )


def stream_results(
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
    """:func:`iter_results` over studies that are already grouped, taken lazily one by one.

    A front door that keeps its own index of an export (``chexdcm batch``) feeds its
    studies from there, so memory stays bounded by the decode window and the studies not
    yet complete, whatever the number of studies.

    Parameters
    ----------
    studies
        The studies, in the order their results are yielded (an iterator is read lazily).
    predictor, config, heatmaps, workers, progress
        As :func:`iter_results`.
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
    WeightsError, ConfigError
        Problems that are the same for every study.
    """
    cfg = config or IngestConfig()
    pre = analysis_preprocessing(predictor)
    card = predictor.card
    batch_size = max(1, predictor.batch_size)
    own_pool: ProcessPoolExecutor | None = None
    executor: Executor | None
    if isinstance(workers, int):
        executor = own_pool = decode_pool(workers) if workers > 0 else None
    else:
        executor = workers
    window = batch_size + 2 * (getattr(executor, "_max_workers", 1) or 1)

    pending: deque[_Pending] = deque()
    batch: list[tuple[_Pending, int, Instance, LoadedImage, np.ndarray]] = []
    done = 0

    def flush() -> None:
        if not batch:
            return
        t = time.perf_counter()
        predictions = predict_batch(predictor, [x for *_, x in batch], cams=heatmaps)
        share = (time.perf_counter() - t) / len(batch)
        for (state, k, inst, loaded, _x), pred in zip(batch, predictions, strict=True):
            state.predict_s += share
            state.waiting -= 1
            if isinstance(pred, InferenceError):
                log_failure(log, phi_ref(state.study.study_uid, prefix="study"), pred)
                state.failure = state.failure or failure_of(pred, "predict")
            else:
                state.analysed[k] = (inst, loaded, pred)
        batch.clear()

    def complete() -> Iterator[StudyResult]:
        while pending and pending[0].waiting == 0:
            state = pending.popleft()
            yield _finish(state, card, pre, scan_share)

    def jobs() -> Iterator[tuple[_Pending, int, Instance]]:
        for index, study in enumerate(studies):
            state = _Pending(study, index, waiting=len(study.selected))
            pending.append(state)
            yield from ((state, k, inst) for k, inst in enumerate(study.selected))

    try:
        queue: deque[tuple[_Pending, int, Instance, Future[tuple[LoadedImage, np.ndarray]] | None]] = deque()
        source = jobs()
        while True:
            while len(queue) < window and (nxt := next(source, None)) is not None:
                state, k, inst = nxt
                fut = (
                    executor.submit(load_for_model, inst.scanned, cfg, pre) if executor is not None else None
                )
                queue.append((state, k, inst, fut))
            if not queue:
                break
            state, k, inst, fut = queue.popleft()
            started = time.perf_counter()
            try:
                loaded, x = load_for_model(inst.scanned, cfg, pre) if fut is None else fut.result()
            except FATAL:
                raise
            except Exception as exc:  # the image is not analysed; its study goes on
                state.skipped.append(_load_skip(inst, exc))
                state.waiting -= 1
            else:
                batch.append((state, k, inst, loaded, x))
            state.read_s += time.perf_counter() - started
            done += 1
            if progress is not None:
                progress(done, total)
            if len(batch) >= batch_size:
                flush()
            yield from complete()
        flush()
        yield from complete()
    finally:
        if own_pool is not None:
            own_pool.shutdown(wait=True, cancel_futures=True)


def study_result(
    study: Study,
    card: ModelCard,
    preprocessing: Preprocessing,
    analysed: dict[int, tuple[Instance, LoadedImage, Prediction]],
    skipped: Sequence[Skipped] = (),
    failure: Failure | None = None,
    timings: dict[str, float] | None = None,
) -> StudyResult:
    """A study's result from images loaded and predicted by another scheduler (Ray tasks and actors).

    The last step of :func:`stream_results`, for front doors that run :func:`load_for_model`
    and :func:`predict_batch` their own way.

    Parameters
    ----------
    study, card, preprocessing
        As :func:`assemble`.
    analysed
        Index in ``study.selected`` -> ``(instance, loaded image, prediction)``.
    skipped
        Images that failed to load (:func:`load_skip`).
    failure
        The failure of a prediction (:func:`failure_of` with stage ``"predict"``).
    timings
        ``read`` and ``predict`` seconds.
    """
    t = timings or {}
    state = _Pending(
        study, 0, 0, dict(analysed), list(skipped), failure, t.get("read", 0.0), t.get("predict", 0.0)
    )
    return _finish(state, card, preprocessing, 0.0)


def _finish(state: _Pending, card: ModelCard, pre: Preprocessing, scan_share: float) -> StudyResult:
    timings = {"read": state.read_s + scan_share, "predict": state.predict_s}
    what = phi_ref(state.study.study_uid, prefix="study")
    if state.failure is not None:
        base = assemble(state.study, card, pre, [], state.skipped, timings)
        return base.with_failure(state.failure)
    analysed = [state.analysed[k] for k in sorted(state.analysed)]
    result = guarded(what, "assemble", assemble, state.study, card, pre, analysed, state.skipped, timings)
    if isinstance(result, Failure):
        return assemble(state.study, card, pre, [], state.skipped, timings).with_failure(result)
    log.info(
        "%s: %d analysed, %d skipped (read %.2fs, predict %.2fs)",
        what,
        len(result.images),
        len(result.skipped),
        timings["read"],
        timings["predict"],
    )
    return result


# --------------------------------------------------------------------------- carrying
#
# A study that gains images after its results went out is analysed again (a front door
# that keeps studies open, such as the listener node).  Its new SR must cover the
# earlier images too, whose pixels may be gone by then (received images are purged
# after delivery), so each analysed image leaves behind a CarriedImage: the source
# header and the prediction with the display geometry that places its heatmaps.
# restore_image turns one back into an ImageResult (``carried=True``: the SR covers it,
# no overlay is rebuilt) and combine merges them with the new analysis.


@dataclass(frozen=True)
class CarriedImage:
    """What an analysed image leaves for a later version of its study's results (no pixels).

    Attributes
    ----------
    header
        The source file's bytes up to its pixel data (file meta and header).
    prediction
        The model's output, CAMs included.
    source_shape, display_shape
        (Rows, Columns) of the stored image and of the display image the model saw.
    orientation_ops, decode_factor, provenance
        As in :class:`~chexnet_dicom.dicom.pixels.DisplayImage`.
    """

    header: bytes = field(repr=False)
    prediction: Prediction = field(repr=False)
    source_shape: tuple[int, int]
    display_shape: tuple[int, int]
    orientation_ops: tuple[str, ...] = ()
    decode_factor: int = 1
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class CarriedSkip:
    """An instance a study's analysis did not analyse, kept for later versions of its SR.

    Attributes
    ----------
    header
        The file's bytes up to its pixel data.
    status, reason, message
        As in :class:`~chexnet_dicom.dicom.study.Skipped`.
    """

    header: bytes = field(repr=False)
    status: str
    reason: str
    message: str


def source_header(path: str | os.PathLike[str], limits: IngestLimits | None = None) -> bytes:
    """A file's bytes up to its pixel data: its header, byte for byte, without re-encoding.

    Raises
    ------
    InputError
        The file cannot be read as DICOM.
    """
    scanned = read_header(path, limits=limits)
    with open(path, "rb") as fh:
        if scanned.location is None:  # nothing after the header
            return fh.read((limits or IngestLimits()).max_file_bytes)
        return fh.read(scanned.location.offset)


def carry(
    result: StudyResult, limits: IngestLimits | None = None
) -> tuple[dict[str, CarriedImage], dict[str, CarriedSkip]]:
    """What a study's analysed and skipped instances leave behind, by SOP Instance UID.

    Carried images of an earlier version (``carried=True``) are not included: the
    caller still holds them.  Skipped files without a header or whose file is gone are
    left out.

    Returns
    -------
    images, skipped : dict
    """
    images: dict[str, CarriedImage] = {}
    for im in result.images:
        if im.carried:
            continue
        d = im.display
        images[str(im.dataset.SOPInstanceUID)] = CarriedImage(
            header=source_header(im.path, limits),
            prediction=im.prediction,
            source_shape=(int(d.source_shape[0]), int(d.source_shape[1])),
            display_shape=(int(d.image.shape[0]), int(d.image.shape[1])),
            orientation_ops=tuple(d.orientation_ops),
            decode_factor=int(d.decode_factor),
            provenance=dict(d.provenance),
        )
    skipped: dict[str, CarriedSkip] = {}
    for sk in result.skipped:
        if sk.dataset is None or not sk.path or not os.path.isfile(sk.path):
            continue
        uid = text(sk.dataset, "SOPInstanceUID")
        if uid:
            skipped[uid] = CarriedSkip(source_header(sk.path, limits), sk.status, sk.reason, sk.message)
    return images, skipped


def restore_image(
    carried: CarriedImage, preprocessing: Preprocessing, limits: IngestLimits | None = None
) -> ImageResult:
    """An :class:`~chexnet_dicom.results.ImageResult` again, from what the image left behind.

    Its display image is a zero-strided placeholder of the right shape (no memory): the
    heatmaps and SR regions need only the geometry; ``carried=True`` keeps overlays from
    being rebuilt from it.
    """
    import io

    header = read_header(io.BytesIO(carried.header), limits=limits).dataset
    display = DisplayImage(
        image=np.broadcast_to(np.float32(0.0), carried.display_shape),
        source_shape=carried.source_shape,
        orientation_ops=carried.orientation_ops,
        decode_factor=carried.decode_factor,
        provenance=carried.provenance,
    )
    return ImageResult(
        path="",
        dataset=header,
        display=display,
        prediction=carried.prediction,
        preprocessing=preprocessing,
        carried=True,
    )


def restore_skip(carried: CarriedSkip, limits: IngestLimits | None = None) -> Skipped:
    """A :class:`~chexnet_dicom.dicom.study.Skipped` again (its file may be gone)."""
    import io

    header = read_header(io.BytesIO(carried.header), limits=limits).dataset
    return Skipped("", carried.status, carried.reason, carried.message, header)  # type: ignore[arg-type]


def _image_order(image: ImageResult) -> tuple[Any, ...]:
    ds = image.dataset
    numbers = [ordering_int(ds, k) for k in ("SeriesNumber", "InstanceNumber")]
    return (
        *((1, 0) if n is None else (0, n) for n in numbers),
        text(ds, "SeriesInstanceUID"),
        text(ds, "SOPInstanceUID"),
    )


def combine(
    study_uid: str,
    card: ModelCard,
    new: StudyResult | None,
    carried_images: Sequence[ImageResult] = (),
    carried_skipped: Sequence[Skipped] = (),
) -> StudyResult:
    """One study's result over its new analysis and what earlier versions left behind.

    An instance analysed anew (a changed copy of an earlier one) replaces its carried
    version; images are in the selection rule's order, skipped files new ones first.

    Parameters
    ----------
    study_uid
        The study.
    card
        The model card.
    new
        The analysis of the instances that arrived since (None: none did); a failed
        one is returned as it is.
    carried_images, carried_skipped
        From :func:`restore_image` and :func:`restore_skip`.
    """
    if new is not None and new.failed:
        return new
    fresh = list(new.images) if new is not None else []
    fresh_skipped = list(new.skipped) if new is not None else []
    seen = {text(im.dataset, "SOPInstanceUID") for im in fresh}
    seen |= {text(s.dataset, "SOPInstanceUID") for s in fresh_skipped if s.dataset is not None}
    images = fresh + [im for im in carried_images if text(im.dataset, "SOPInstanceUID") not in seen]
    analysed = {text(im.dataset, "SOPInstanceUID") for im in images}
    skipped = fresh_skipped + [
        s
        for s in carried_skipped
        if s.dataset is not None and text(s.dataset, "SOPInstanceUID") not in seen | analysed
    ]
    images.sort(key=_image_order)
    return StudyResult(
        study_uid=study_uid,
        card=card,
        images=tuple(images),
        skipped=tuple(skipped),
        timings=dict(new.timings) if new is not None else {},
    )


# --------------------------------------------------------------------------- writing


def build_and_write(
    result: StudyResult,
    out_dir: str | os.PathLike[str],
    options: OutputOptions | None = None,
    previous: Sequence[Dataset] | None = None,
) -> tuple[StudyOutputs, list[Path]] | Failure:
    """Build one study's outputs and write them atomically into ``out_dir``: every front door's write step.

    Parameters
    ----------
    result
        A study result that did not fail.
    out_dir
        The study's output folder.
    options
        What to write.
    previous
        Earlier SRs of the study that the new SR supersedes; None: the SR an earlier run
        left in ``out_dir`` for other instances (:func:`~chexnet_dicom.outputs.write.earlier_sr`).
        A front door that keeps its own record of earlier versions (the node) passes them.

    Returns
    -------
    (StudyOutputs, list of Path) or Failure
        The outputs and the files written, or why building or writing failed.
    """
    from chexnet_dicom.outputs.build import build_outputs
    from chexnet_dicom.outputs.write import earlier_sr, write_outputs

    if previous is None:
        previous = earlier_sr(out_dir, result)
    outputs = guarded(result.ref, "outputs", build_outputs, result, options, previous)
    if isinstance(outputs, Failure):
        return outputs
    written = guarded(result.ref, "write", write_outputs, outputs, out_dir)
    if isinstance(written, Failure):
        return written
    return outputs, written


def write_results(
    result: StudyResult, out_dir: str | os.PathLike[str], options: OutputOptions | None = None
) -> tuple[StudyResult, list[str]]:
    """Build and write one study's outputs into ``out_dir``; a failure fails the study, not the run.

    An SR already in ``out_dir`` for other instances of the study becomes the new SR's
    predecessor; the same instances give the same UIDs, so writing again (a resumed
    run) rewrites the same objects.

    Returns
    -------
    (StudyResult, list of str)
        The result (with its :class:`~chexnet_dicom.results.Failure` when building or
        writing failed, its ``write`` timing otherwise) and the files written.
    """
    if result.failed:
        return result, []
    t0 = time.perf_counter()
    done = build_and_write(result, out_dir, options)
    if isinstance(done, Failure):
        return result.with_failure(done), []
    result.timings["write"] = time.perf_counter() - t0
    return result, [str(p) for p in done[1]]
