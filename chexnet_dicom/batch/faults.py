"""Injected crash points: how the resume tests stop a run at a chosen step.

With ``CHEXDCM_BATCH_CRASH_AT=STEP:N`` in the environment, the process kills itself with
``SIGKILL`` (as ``kill -9`` would: no clean-up, no flush) the N-th time it reaches
``STEP`` (N defaults to 1).  The steps, in the order a run meets them:

``discover``
    after a file's header record is added to the index (before the chunk commits);
``predict``
    after a study's images were predicted, before anything of it is recorded;
``write``
    after a study's DICOM results were written (``--write-dicom``), before its rows are
    committed to the ledger;
``commit``
    right after a study's rows were committed;
``export``
    between writing two of the result tables.

Unset (always, outside tests), :func:`crash_point` does nothing.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_ENV", "STEPS", "crash_point"]

CRASH_ENV = "CHEXDCM_BATCH_CRASH_AT"
STEPS = ("discover", "predict", "write", "commit", "export")

_seen: dict[str, int] = {}


def crash_point(step: str) -> None:
    """Kill this process with SIGKILL when ``CHEXDCM_BATCH_CRASH_AT`` names this step and count."""
    wanted = os.environ.get(CRASH_ENV, "")
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if name != step:
        return
    _seen[step] = _seen.get(step, 0) + 1
    if _seen[step] >= max(1, int(count or 1)):
        os.kill(os.getpid(), signal.SIGKILL)
