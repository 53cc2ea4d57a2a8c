"""Named fault points: ``CHEXDCM_FAULT=<point>[:<n>]`` kills the node at a step (tests only).

The fault tests set the variable to prove that a node killed at that exact step loses
and duplicates nothing once restarted.  At the ``n``-th time a process reaches the
point (default the first), :func:`fault` sends SIGKILL to the node's main process and
to itself: the same as ``kill -9`` of the node at that step (the worker and sender
processes die with the main one).  The ``receive.enospc`` point does not kill: the
spool's writes fail with ``ENOSPC`` from then on, as on a full disk.

=========================  ===============================================================
point                      where
=========================  ===============================================================
``receive.streaming``      a C-STORE data set is being written to the spool
``receive.after_rename``   an instance is durable on disk, its ledger row not yet written
``receive.before_ack``     the ledger row is written, the C-STORE response not yet sent
``worker.predict``         the model is about to run on a study
``worker.after_write``     a study's results are written, the ledger not yet updated
``worker.model_error``     (not a kill) the model raises an InferenceError for this study
``send.connected``         a result file is about to be sent
``send.after_store``       a result file was stored at the destination, not yet recorded
``receive.enospc``         (not a kill) spool writes fail with ENOSPC
=========================  ===============================================================
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

__all__ = ["ENV", "NODE_PID_ENV", "POINTS", "active", "fault"]

#: The environment variable that names the fault point.
ENV = "CHEXDCM_FAULT"
#: Set by the node for its worker processes: the pid of the main process.
NODE_PID_ENV = "CHEXDCM_NODE_PID"

POINTS = frozenset(
    {
        "receive.streaming",
        "receive.after_rename",
        "receive.before_ack",
        "worker.predict",
        "worker.after_write",
        "worker.model_error",
        "send.connected",
        "send.after_store",
        "receive.enospc",
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
    """Whether the fault variable names ``point`` and this is its ``n``-th hit (counts this hit)."""
    wanted = _wanted()
    if wanted is None or wanted[0] != point:
        return False
    with _lock:
        _hits[point] = _hits.get(point, 0) + 1
        return _hits[point] == wanted[1]


def fault(point: str) -> None:
    """Kill the node here when ``CHEXDCM_FAULT`` names ``point`` (see the module docstring)."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}")
    if not active(point):
        return
    main = os.environ.get(NODE_PID_ENV, "")
    if main.isdigit() and int(main) != os.getpid():
        with contextlib.suppress(OSError):
            os.kill(int(main), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
