"""How a stage's failure stays with its study: :func:`failure_of`, :data:`FATAL`, :func:`guarded`.

An image that cannot be read or decoded is listed in the study's skipped files with its
reason code (:func:`load_skip`; an unexpected library error as ``INTERNAL``).  A model,
assembly or output failure for one study gives that study a
:class:`~chexnet_dicom.results.Failure` (reason code, PHI-free message; the traceback
goes to the debug log, without values) and the run goes on: :func:`guarded` is how every
front door calls a stage.

Only the errors of :data:`FATAL` stop a run: a
:class:`~chexnet_dicom.errors.WeightsError` or :class:`~chexnet_dicom.errors.ConfigError`
(the same for every study), a :class:`MemoryError` (the process cannot be trusted to go
on) and a :class:`KeyboardInterrupt`.  Every front door uses this one set; the node's
worker process ends on one, leaving its study queued for the worker that replaces it
(:mod:`chexnet_dicom.node.worker`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from chexnet_dicom.dicom.reasons import INTERNAL
from chexnet_dicom.dicom.study import Instance, Skipped
from chexnet_dicom.errors import (
    ConfigError,
    InferenceError,
    InputError,
    OutputError,
    StorageError,
    WeightsError,
)
from chexnet_dicom.logs import log_failure, phi_ref, redact
from chexnet_dicom.results import Failure

__all__ = ["FATAL", "STAGES", "failure_of", "guarded", "load_skip"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The stages a :class:`~chexnet_dicom.results.Failure` names.
STAGES = ("load", "predict", "assemble", "outputs", "write")

#: Errors that are not one study's: they stop a run (or a node's worker) instead of failing one study.
FATAL: tuple[type[BaseException], ...] = (WeightsError, ConfigError, KeyboardInterrupt, MemoryError)


def failure_of(exc: BaseException, stage: str) -> Failure:
    """The :class:`Failure` a stage's exception gives its study (no PHI, no traceback).

    Parameters
    ----------
    exc
        What the stage raised.
    stage
        One of :data:`STAGES`.

    Raises
    ------
    ValueError
        ``stage`` is not one of :data:`STAGES` (a programming error).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
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


def guarded(what: str, stage: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | Failure:
    """Run one stage for one study; a failure becomes a :class:`Failure` instead of an exception.

    Parameters
    ----------
    what
        A PHI-free name of the study for the debug log (its reference).
    stage
        The stage's name (one of :data:`STAGES`).
    fn, args, kwargs
        The stage.

    Returns
    -------
    T or Failure

    Raises
    ------
    WeightsError, ConfigError, MemoryError, KeyboardInterrupt
        :data:`FATAL`: not one study's problem.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    try:
        return fn(*args, **kwargs)
    except FATAL:
        raise
    except Exception as exc:  # one study's failure stays with that study
        log_failure(log, f"{what}: {stage}", exc)
        failure = failure_of(exc, stage)
        log.warning("%s: %s failed (%s)", what, stage, failure.reason)
        return failure


def load_skip(inst: Instance, exc: BaseException) -> Skipped:
    """The record of an image whose load raised ``exc`` (logged without PHI): the ``load`` stage's failure."""
    ref = phi_ref(inst.path, prefix="file")
    if isinstance(exc, InputError):
        log.warning("%s: not analysed (%s)", ref, exc.reason)
        return Skipped(inst.path, "error", exc.reason, str(exc), inst.dataset)
    log_failure(log, ref, exc)
    log.warning("%s: not analysed (unexpected %s)", ref, type(exc).__name__)
    return Skipped(
        inst.path,
        "error",
        INTERNAL,
        f"unexpected {type(exc).__name__} while decoding ({redact(exc, 80)}); run with -vv and please report it",
        inst.dataset,
    )
