"""The write step of every front door: build one study's outputs and write them atomically."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chexnet_dicom.config import OutputOptions
from chexnet_dicom.gc_policy import import_long_lived
from chexnet_dicom.pipeline.failures import guarded
from chexnet_dicom.results import Failure, StudyResult

if TYPE_CHECKING:
    from pydicom import Dataset

    from chexnet_dicom.outputs.build import StudyOutputs

__all__ = ["build_and_write", "write_results"]


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
    # the output stack is imported on a door's first study: with the collector paused (gc_policy)
    import_long_lived("chexnet_dicom.outputs")
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
