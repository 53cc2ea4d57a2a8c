"""Named fault points: ``CHEXDCM_FAULT=<point>[:<n>]`` (tests only) fails a run at one step.

The fault tests of the node and of batch set the variable to prove that a process killed
at that exact step loses and duplicates nothing once restarted.  The ``n``-th time a
process reaches the point (default the first), :func:`fault` sends ``SIGKILL`` to
itself (as ``kill -9`` would: no clean-up, no flush) and, when :data:`MAIN_PID_ENV`
names another process (the node sets it for its worker and sender processes), to that
one first.  A point marked "not a kill" does not kill: the code asks :func:`active`
and misbehaves as the point says.  Unset (always, outside tests), nothing happens.

=========================  ===============================================================
point                      where
=========================  ===============================================================
``receive.streaming``      the node: a C-STORE data set is being written to the spool
``receive.after_rename``   the node: an instance is durable on disk, its ledger row not yet written
``receive.before_ack``     the node: the ledger row is written, the C-STORE response not yet sent
``receive.enospc``         the node (not a kill): spool writes fail with ENOSPC
``worker.predict``         the node: the model is about to run on a study
``worker.after_write``     the node: a study's results are written, the ledger not yet updated
``worker.model_error``     the node (not a kill): the model raises an InferenceError for this study
``send.connected``         the node: a result file is marked in flight and about to be sent
``send.after_store``       the node: a result file's C-STORE response (or STOW-RS result) arrived, not yet recorded
``send.after_record``      the node: a result file's delivery is recorded, the next file not yet sent
``batch.discover``         batch: a file's header record is added to the index (chunk not committed)
``batch.predict``          batch: a study's images were predicted, nothing of it recorded
``batch.write``            batch: a study's DICOM results are written, its rows not yet committed
``batch.commit``           batch: right after a study's rows were committed
``batch.export``           batch: between writing two of the result tables
=========================  ===============================================================
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

__all__ = ["ENV", "MAIN_PID_ENV", "POINTS", "active", "fault"]

#: The environment variable that names the fault point.
ENV = "CHEXDCM_FAULT"
#: Set by the node for its worker and sender processes: the main process, killed with them.
MAIN_PID_ENV = "CHEXDCM_NODE_PID"

POINTS = frozenset(
    {
        "receive.streaming",
        "receive.after_rename",
        "receive.before_ack",
        "receive.enospc",
        "worker.predict",
        "worker.after_write",
        "worker.model_error",
        "send.connected",
        "send.after_store",
        "send.after_record",
        "batch.discover",
        "batch.predict",
        "batch.write",
        "batch.commit",
        "batch.export",
    }
)

_hits: dict[str, int] = {}
_lock = threading.Lock()


def _wanted() -> tuple[str, int] | None:
    value = os.environ.get(ENV, "")
    if not value:
        return None
    point, _, count = value.partition(":")
    return point, int(count) if count.isdigit() else 1


def active(point: str) -> bool:
    """Whether :data:`ENV` names ``point`` and this is its ``n``-th hit in this process (counts the hit).

    Raises
    ------
    ValueError
        For a point that is not in :data:`POINTS` (a typo in the code, not in the variable).
    """
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}")
    wanted = _wanted()
    if wanted is None or wanted[0] != point:
        return False
    with _lock:
        _hits[point] = _hits.get(point, 0) + 1
        return _hits[point] == wanted[1]


def fault(point: str) -> None:
    """Kill this process (and the node's main one) here when :data:`ENV` names ``point`` (module docstring)."""
    if not active(point):
        return
    main = os.environ.get(MAIN_PID_ENV, "")
    if main.isdigit() and int(main) != os.getpid():
        with contextlib.suppress(OSError):
            os.kill(int(main), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
