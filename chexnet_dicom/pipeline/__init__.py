"""The one analysis path used by ``chexdcm infer``, ``chexdcm batch``, Ray and the listener node.

It is a set of stages with plain-data boundaries, so each front door can schedule them
its own way (in-process, a process pool, a worker behind a ledger, Ray tasks)::

    scan(paths)                        headers only, once per file: gate, studies, selection
      -> decode_for_model(ImageFile)    read pixels, decode (fast path), render, model input
                                        [any process: plain data in and out]
      -> predict_batch(...)             one forward pass per batch; batches may span studies
      -> StudyCollect / study_result    the one collect step and the one StudyResult builder
      -> build_and_write(result, dir)   SR + SC + sidecar (outputs.build), written atomically

Module map
----------
:mod:`~chexnet_dicom.pipeline.failures`
    :data:`FATAL`, :func:`failure_of`, :func:`guarded`, :func:`load_skip`: a failure
    stays with its study; only the fatal set (WeightsError, ConfigError, MemoryError,
    KeyboardInterrupt) stops a run.
:mod:`~chexnet_dicom.pipeline.stages`
    :func:`analysis_preprocessing`, :func:`model_input`, :func:`load_for_model`,
    :func:`decode_for_model`, :func:`worker_input`, :func:`loaded_image`,
    :func:`predict_batch`, :func:`study_result`.
:mod:`~chexnet_dicom.pipeline.stream`
    The scheduler: :func:`results_for_paths`, :func:`results_for_studies`,
    :class:`StudyCollect`, :func:`decode_pool`.
:mod:`~chexnet_dicom.pipeline.write`
    :func:`build_and_write`, :func:`write_results`.
:mod:`~chexnet_dicom.pipeline.warm`
    :func:`~chexnet_dicom.pipeline.warm.warm_result_stages`: the result stages imported
    before a long-running door (node worker, batch) takes its first study.

The node's carrying of earlier images into later versions of a study's results lives
in :mod:`chexnet_dicom.node.carry`.

Failures stay with their study
------------------------------
An image that cannot be read or decoded is listed in the study's skipped files with
its reason code (an unexpected library error as ``INTERNAL``).  A model, assembly or
output failure for one study gives that study a :class:`~chexnet_dicom.results.Failure`
(reason code, PHI-free message; the traceback goes to the debug log, without values)
and the run goes on.  Only the errors of :data:`FATAL` stop the run: a
:class:`~chexnet_dicom.errors.WeightsError` or :class:`~chexnet_dicom.errors.ConfigError`
(the same for every study), a :class:`MemoryError` or a :class:`KeyboardInterrupt`.
"""

from __future__ import annotations

from chexnet_dicom.dicom.study import scan
from chexnet_dicom.pipeline.failures import FATAL, STAGES, failure_of, guarded, load_skip
from chexnet_dicom.pipeline.stages import (
    analysis_preprocessing,
    decode_for_model,
    load_for_model,
    loaded_image,
    model_input,
    predict_batch,
    study_result,
    worker_input,
)
from chexnet_dicom.pipeline.stream import StudyCollect, decode_pool, results_for_paths, results_for_studies
from chexnet_dicom.pipeline.write import build_and_write, write_results

__all__ = [
    "FATAL",
    "STAGES",
    "StudyCollect",
    "analysis_preprocessing",
    "build_and_write",
    "decode_for_model",
    "decode_pool",
    "failure_of",
    "guarded",
    "load_for_model",
    "load_skip",
    "loaded_image",
    "model_input",
    "predict_batch",
    "results_for_paths",
    "results_for_studies",
    "scan",
    "study_result",
    "worker_input",
    "write_results",
]
