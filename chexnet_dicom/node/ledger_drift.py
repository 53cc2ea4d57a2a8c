"""The ledger's drift tables: the rolling window of observations and the latest drift score.

``drift_observations`` holds what drift monitoring keeps of each analysed image
(:class:`~chexnet_dicom.drift.Observation`: binned metadata as JSON, probabilities and
features as float32 bytes, present calls as bytes; no PHI, no pixels), pruned to the
window size each time one is added.  ``drift_state`` holds the latest score as JSON with
the id of the newest observation it covers, so that with several workers the newest
window's score wins whatever order they finish in.  Both live in the ledger, the only
state the node's processes share, so the window survives a restart.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from chexnet_dicom.drift import Observation
from chexnet_dicom.node.ledger_store import LedgerStore

__all__ = ["DRIFT_STATE", "DriftRecords", "decode_observation"]

#: The ``drift_state`` row of the node's monitor.
DRIFT_STATE = "node"


def _blob(values: np.ndarray | None, dtype: type) -> bytes | None:
    return None if values is None else np.ascontiguousarray(values, dtype=dtype).tobytes()


def decode_observation(row: sqlite3.Row | Mapping[str, Any]) -> Observation:
    """An observation from its ``drift_observations`` row."""
    present = row["present"]
    features = row["features"]
    return Observation(
        metadata={str(k): str(v) for k, v in json.loads(row["metadata"]).items()},
        probabilities=np.frombuffer(bytes(row["probabilities"]), dtype=np.float32).astype(np.float64),
        features=None if features is None else np.frombuffer(bytes(features), dtype=np.float32).copy(),
        present=None if present is None else np.frombuffer(bytes(present), dtype=np.uint8).astype(bool),
    )


class DriftRecords(LedgerStore):
    """The drift window and state of the ledger (mixed into :class:`~chexnet_dicom.node.ledger.NodeLedger`)."""

    def add_observations(
        self, observations: Sequence[Observation], keep: int
    ) -> tuple[list[Observation], int]:
        """Append observations, prune the window to the newest ``keep`` and return it, in one transaction.

        Parameters
        ----------
        observations
            The new observations (one per analysed image).
        keep
            The window size.

        Returns
        -------
        (list of Observation, int)
            The window, oldest first, and the id of its newest observation (0 when empty).
        """
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT INTO drift_observations (ts, metadata, probabilities, present, features) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        now,
                        json.dumps(dict(o.metadata), sort_keys=True),
                        _blob(np.asarray(o.probabilities), np.float32),
                        _blob(None if o.present is None else np.asarray(o.present), np.uint8),
                        _blob(None if o.features is None else np.asarray(o.features), np.float32),
                    )
                    for o in observations
                ],
            )
            db.execute(
                "DELETE FROM drift_observations WHERE id <= (SELECT MAX(id) FROM drift_observations) - ?",
                (int(keep),),
            )
            rows = list(db.execute("SELECT * FROM drift_observations ORDER BY id"))
        return [decode_observation(r) for r in rows], int(rows[-1]["id"]) if rows else 0

    def drift_window(self, keep: int) -> list[Observation]:
        """The newest ``keep`` observations, oldest first."""
        rows = self._read(
            "SELECT * FROM (SELECT * FROM drift_observations ORDER BY id DESC LIMIT ?) ORDER BY id",
            (int(keep),),
        )
        return [decode_observation(r) for r in rows]

    def drift_newest(self) -> int:
        """The id of the newest observation (0 when the window is empty)."""
        rows = self._read("SELECT COALESCE(MAX(id), 0) AS n FROM drift_observations")
        return int(rows[0]["n"])

    def set_drift_state(self, state: Mapping[str, Any], covers: int) -> dict[str, Any] | None:
        """Record the drift state for the window ending at observation ``covers``.

        A state for an older window than the one recorded is ignored (another worker
        scored a newer window meanwhile).

        Returns
        -------
        dict or None
            The state recorded before (None when there was none); when this state was
            ignored, the recorded one is returned with ``"superseded": True``.
        """
        with self._tx() as db:
            row = db.execute(
                "SELECT covers, value FROM drift_state WHERE name = ?", (DRIFT_STATE,)
            ).fetchone()
            previous = json.loads(row["value"]) if row is not None else None
            if row is not None and int(row["covers"]) > covers:
                return {**(previous or {}), "superseded": True}
            db.execute(
                "INSERT OR REPLACE INTO drift_state VALUES (?, ?, ?, ?)",
                (DRIFT_STATE, int(covers), json.dumps(dict(state), sort_keys=True), time.time()),
            )
            return previous

    def drift_state(self) -> dict[str, Any] | None:
        """The latest drift state (None before the monitor first ran)."""
        rows = self._read("SELECT value, updated FROM drift_state WHERE name = ?", (DRIFT_STATE,))
        if not rows:
            return None
        state: dict[str, Any] = json.loads(rows[0]["value"])
        state["updated"] = float(rows[0]["updated"])
        return state
