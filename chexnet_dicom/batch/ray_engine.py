"""``--engine ray``: the pipeline's stages as a Ray Data pipeline (extra ``[ray]``).

::

    ray.data.from_items(images of a chunk of studies)      the header index's instances
      .map(_decode, num_cpus=ray_decode_cpus)              decode_for_model as CPU tasks
      .map_batches(_PredictorActor, compute=ActorPoolStrategy(size=ray_actors),
                   batch_size=runtime.batch_size, num_gpus=1 on CUDA)
                                                           predict_batch in an actor pool,
                                                           each actor loads the model once
      -> StudyCollect -> finish_study                      in the driver: the collect step of
                                                           the local engine, the same rows,
                                                           ledger and tables

A task receives an :class:`~chexnet_dicom.dicom.load.ImageFile` (path, offsets and the
header bytes the index kept) and returns the display image and model input: plain
data, never a pydicom dataset.

The studies are taken in chunks of about ``ray_chunk_images`` images, so the driver's
memory is bounded by one chunk whatever the export size; each chunk's finished studies
are recorded before the next starts (a killed run resumes from the last chunk).

``ray.init`` joins ``[batch] ray_address`` / ``--ray-address`` (``"auto"``: the cluster
this machine belongs to; ``"ray://head:10001"``: a remote one), else starts a local
instance; an instance already initialised by the caller is used as it is.  The actors
load the weights from the path the driver resolved: on a cluster it must be readable
at the same path on every node (a shared file system), as must the export.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from chexnet_dicom.batch.studies import StudyEntry
from chexnet_dicom.config import BatchConfig, IngestConfig, RuntimeConfig
from chexnet_dicom.dicom.study import Study
from chexnet_dicom.errors import ConfigError
from chexnet_dicom.model.card import Preprocessing
from chexnet_dicom.model.predictor import PredictorBase
from chexnet_dicom.pipeline import (
    FATAL,
    StudyCollect,
    analysis_preprocessing,
    decode_for_model,
    loaded_image,
    predict_batch,
    worker_input,
)
from chexnet_dicom.results import StudyResult

__all__ = ["PREDICTOR_ACTOR", "run_ray"]

log = logging.getLogger(__name__)

#: The class name of the predictor actors (what Ray's state API lists).
PREDICTOR_ACTOR = "_PredictorActor"


def _decode(row: dict[str, Any], cfg: IngestConfig, pre: Preprocessing) -> dict[str, Any]:  # pragma: no cover
    """A Ray task: :func:`~chexnet_dicom.pipeline.decode_for_model` of one image (plain data in and out)."""
    t0 = time.perf_counter()
    try:
        display, x = decode_for_model(pickle.loads(row["image"]), cfg, pre)
    except FATAL:
        raise
    except Exception as exc:  # the image is not analysed; the driver records why
        try:
            error = pickle.dumps(exc)
        except Exception:  # an exception that does not pickle: its type and message
            error = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
        return {"k": row["k"], "display": b"", "x": b"", "error": error, "read_s": time.perf_counter() - t0}
    read_s = time.perf_counter() - t0
    return {
        "k": row["k"],
        "display": pickle.dumps(display),
        "x": pickle.dumps(x),
        "error": b"",
        "read_s": read_s,
    }


class _PredictorActor:  # pragma: no cover - runs in Ray actors
    """A Ray actor: the predictor, loaded once, over batches of decoded images."""

    def __init__(self, card_path: str, runtime: RuntimeConfig, heatmaps: bool) -> None:
        from chexnet_dicom.model.startup import start_model

        self.predictor = start_model(card_path, runtime).predictor
        self.heatmaps = heatmaps

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = list(batch["error"])
        ok = [i for i, e in enumerate(errors) if not e]
        inputs = [pickle.loads(batch["x"][i]) for i in ok]
        preds: list[bytes] = [b""] * len(errors)
        t0 = time.perf_counter()
        for i, pred in zip(ok, predict_batch(self.predictor, inputs, cams=self.heatmaps), strict=True):
            preds[i] = pickle.dumps(pred)
        share = (time.perf_counter() - t0) / max(1, len(ok))
        return {
            "k": batch["k"],
            "display": batch["display"],
            "error": batch["error"],
            "read_s": batch["read_s"],
            "predict_s": np.array([share if not e else 0.0 for e in errors], dtype=np.float64),
            "pred": np.array(preds, dtype=object),
        }


def _init_ray(address: str) -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'chexnet-dicom[ray]' (ray[default])") from None
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    return ray


def _chunks(todo: list[StudyEntry], load: Callable[[StudyEntry], Study], size: int) -> Any:
    chunk: list[tuple[StudyEntry, Study]] = []
    images = 0
    for entry in todo:
        study = load(entry)
        chunk.append((entry, study))
        images += len(study.selected)
        if images >= size:
            yield chunk
            chunk, images = [], 0
    if chunk:
        yield chunk


def run_ray(
    todo: list[StudyEntry],
    load: Callable[[StudyEntry], Study],
    finish: Callable[[StudyEntry, Study, StudyResult], None],
    total: int,
    predictor: PredictorBase,
    settings: BatchConfig,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[int, int]:
    """Analyse the studies ``todo`` with Ray Data; record each as the local engine does.

    Parameters
    ----------
    todo
        The studies to analyse.
    load
        A study's instances, from the header index.
    finish
        The runner's last step for a study (write, send, record its rows).
    total
        Images to analyse (for ``progress``).
    predictor
        The driver's predictor: its card, backend and precision are what the actors load.
    settings
        The run's configuration (``settings.weights``: the model card file).
    progress
        As :func:`~chexnet_dicom.batch.runner.run_batch`'s.

    Returns
    -------
    (int, int)
        Studies analysed, images predicted.

    Raises
    ------
    ConfigError
        Ray is not installed, or ``settings.weights`` names no card file.
    """
    if not todo:
        return 0, 0
    if not settings.weights or not Path(settings.weights).is_file():
        raise ConfigError("--engine ray needs the weights as a model card file the Ray workers can read")
    ray = _init_ray(settings.batch.ray_address)
    opts = settings.batch
    cfg = settings.ingest
    pre = analysis_preprocessing(predictor)
    card = predictor.card
    heatmaps = opts.write_dicom
    # the actors run what the driver chose (the resume fingerprint records it)
    chosen: dict[str, Any] = {"backend": predictor.backend, "precision": predictor.precision}
    runtime = dataclasses.replace(settings.runtime, device=predictor.device, **chosen)
    gpu = predictor.device.startswith("cuda")
    done = analysed = images = 0
    for chunk in _chunks(todo, load, max(1, opts.ray_chunk_images)):
        items = [
            {"k": f"{s}:{k}", "image": pickle.dumps(worker_input(inst))}
            for s, (_entry, study) in enumerate(chunk)
            for k, inst in enumerate(study.selected)
        ]
        got: dict[str, dict[str, Any]] = {}
        if items:
            ds = ray.data.from_items(items)
            ds = ds.map(_decode, fn_kwargs={"cfg": cfg, "pre": pre}, num_cpus=opts.ray_decode_cpus)
            ds = ds.map_batches(
                _PredictorActor,
                fn_constructor_kwargs={
                    "card_path": settings.weights,
                    "runtime": runtime,
                    "heatmaps": heatmaps,
                },
                compute=ray.data.ActorPoolStrategy(size=max(1, opts.ray_actors)),
                batch_size=max(1, runtime.batch_size),
                batch_format="numpy",
                num_gpus=1 if gpu else 0,
                num_cpus=0 if gpu else 1,
            )
            for row in ds.iter_rows():
                got[str(row["k"])] = row
                done += 1
                if progress is not None:
                    progress("analyse", done, total)
        for s, (entry, study) in enumerate(chunk):
            collect = StudyCollect(study)
            for k, inst in enumerate(study.selected):
                row = got[f"{s}:{k}"]
                collect.read_s += float(row["read_s"])
                if row["error"]:
                    collect.not_loaded(inst, pickle.loads(row["error"]))
                    continue
                collect.predict_s += float(row["predict_s"])
                loaded = loaded_image(inst, pickle.loads(row["display"]))
                collect.predicted(k, inst, loaded, pickle.loads(row["pred"]))
            result = collect.result(card, pre)
            finish(entry, study, result)
            analysed += 1
            images += len(result.images)
    return analysed, images
