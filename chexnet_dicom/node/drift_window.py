"""Drift monitoring in the node: a rolling window of analysed images scored against the model's reference.

After each analysed study the worker hands its newly analysed images to
:meth:`DriftMonitor.observe`.  Each becomes a PHI-free
:class:`~chexnet_dicom.drift.Observation` (the header binned by
:func:`~chexnet_dicom.drift.metadata_of` with the transfer syntax the image arrived in,
the probabilities, the present calls and the pooled features as float32), appended to
the ledger's window of the most recent ``[drift] window`` images
(:class:`~chexnet_dicom.node.ledger_drift.DriftRecords`: it survives a restart and is
shared by every worker).  Once the window holds ``min_window`` images it is scored by
:func:`~chexnet_dicom.drift.score_window` against the reference that travels with the
weights (the card's ``drift`` entry, loaded once when the worker starts); the score goes
into the ledger for ``chexdcm status`` and the Prometheus gauges, and a crossing of the
threshold (combined score 1.0) is logged once as a WARNING (and its return below it as
an INFO), without any identifier.

Without a reference (an old bundle, ``[drift] enabled = false``) monitoring is off and
the recorded state says why.  Drift monitoring never fails a study: a storage error
while recording an observation is logged and the study's results stand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chexnet_dicom import drift
from chexnet_dicom.errors import StorageError, WeightsError

if TYPE_CHECKING:
    from chexnet_dicom.config.node import DriftConfig, NodeConfig
    from chexnet_dicom.node.ledger import NodeLedger
    from chexnet_dicom.results import ImageResult

__all__ = ["DriftMonitor", "observation_of", "reference_of"]

log = logging.getLogger(__name__)


def observation_of(image: ImageResult) -> drift.Observation:
    """What drift monitoring keeps of one analysed image (binned header, outputs, features; no PHI)."""
    meta = getattr(image.dataset, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
    p = image.prediction
    probabilities = np.asarray(p.probabilities, dtype=np.float64)
    return drift.Observation(
        metadata=drift.metadata_of(image.dataset, syntax or None),
        probabilities=probabilities,
        features=None if p.features is None else np.asarray(p.features, dtype=np.float32),
        present=probabilities >= np.asarray(p.thresholds, dtype=np.float64),
    )


def reference_of(config: NodeConfig, predictor: Any) -> tuple[drift.DriftReference | None, str]:
    """The model's drift reference (the card's ``drift`` entry), or None and why monitoring is off."""
    if not config.drift.enabled:
        return None, "off: [drift] enabled = false"
    card = getattr(predictor, "card", None)
    entry = getattr(card, "drift", None)
    if not entry:
        return None, "off: the model card has no drift reference (chexdcm weights calibrate-ood)"
    from chexnet_dicom.model.resolve import resolve_weights

    try:
        card_path, _why = resolve_weights(config.weights or None)
        return drift.load_reference(Path(card_path).parent, entry), "on"
    except WeightsError as exc:
        return None, f"off: {exc}"


@dataclass
class DriftMonitor:
    """One worker's view of the node's drift window (the state itself lives in the ledger).

    Attributes
    ----------
    ledger
        This process's ledger connection.
    settings
        The ``[drift]`` table.
    reference
        The model's reference sample, or None (monitoring off).
    status
        ``"on"``, or ``"off: <why>"``.
    findings
        The model's finding names (for the per-finding details).
    """

    ledger: NodeLedger
    settings: DriftConfig
    reference: drift.DriftReference | None
    status: str
    findings: tuple[str, ...] = ()

    @classmethod
    def start(cls, config: NodeConfig, ledger: NodeLedger, predictor: Any) -> DriftMonitor:
        """Load the reference once and record whether monitoring is on (and, if not, why)."""
        reference, status = reference_of(config, predictor)
        labels = tuple(getattr(getattr(predictor, "card", None), "labels", ()) or ())
        monitor = cls(ledger, config.drift, reference, status, labels)
        log.info("drift monitoring %s", status)
        try:
            state = ledger.drift_state()
            if reference is None or state is None or state.get("status") != "on":
                # an "on" state (with its last score and alarm) stands across a restart
                size = len(ledger.drift_window(config.drift.window))
                monitor._record(None, ledger.drift_newest(), size)
        except StorageError as exc:
            log.warning("drift state not read: %s", exc)
        return monitor

    def _record(
        self,
        score: drift.DriftScore | None,
        covers: int,
        size: int,
        alarm_since: dict[str, float] | None = None,
    ) -> dict[str, Any] | None:
        s = self.settings
        state: dict[str, Any] = {
            "status": self.status,
            "window": size,
            "window_size": s.window,
            "min_window": s.min_window,
            "alpha": s.alpha,
            "reference_size": 0 if self.reference is None else self.reference.size,
            "observed": covers,
            "alarm_since": alarm_since,
        }
        if score is not None:
            state["score"] = score.to_json()
        try:
            return self.ledger.set_drift_state(state, covers)
        except StorageError as exc:
            log.warning("drift state not recorded: %s", exc)
            return None

    def observe(self, images: Sequence[ImageResult]) -> drift.DriftScore | None:
        """Add the newly analysed images (not those carried from earlier versions) to the window and score it.

        Returns
        -------
        DriftScore or None
            As :meth:`add`.
        """
        if self.reference is None:
            return None
        return self.add([observation_of(i) for i in images if not i.carried])

    def add(self, observations: Sequence[drift.Observation]) -> drift.DriftScore | None:
        """Add observations to the ledger's window and score it (never raises for storage faults).

        Returns
        -------
        DriftScore or None
            The window's score, or None (monitoring off, nothing to add, the window under
            its minimum, the ledger unavailable).
        """
        if self.reference is None or not observations:
            return None
        try:
            window, covers = self.ledger.add_observations(observations, self.settings.window)
            before = self.ledger.drift_state() or {}
        except StorageError as exc:
            log.warning("drift observation not recorded: %s", exc)
            return None
        if len(window) < self.settings.min_window:
            self._record(None, covers, len(window))
            return None
        try:
            score = drift.score_window(
                self.reference, window, alpha=self.settings.alpha, findings=self.findings
            )
        except ValueError as exc:  # a reference that does not fit this model's outputs: stop, say why
            self.reference, self.status = None, f"off: the drift reference does not fit the model ({exc})"
            log.warning("drift monitoring %s", self.status)
            self._record(None, covers, len(window))
            return None
        was = bool((before.get("score") or {}).get("alarm", False))
        since = before.get("alarm_since") if was and score.alarm else None
        if score.alarm and since is None:
            since = {"observation": covers, "time": time.time()}
        previous = self._record(score, covers, len(window), since)
        if previous is not None and previous.get("superseded"):
            return score  # another worker scored a newer window: it announces
        self._announce(bool(((previous or {}).get("score") or {}).get("alarm", False)), score)
        return score

    def _announce(self, was: bool, score: drift.DriftScore) -> None:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in score.parts.items())
        if score.alarm and not was:
            message = (
                f"input drift: combined score {score.combined:.2f} reached its threshold 1.0 over the "
                f"last {score.window} analysed images ({parts})"
            )
            log.warning("%s", message)
            self.ledger.note("drift-alarm", message)
        elif was and not score.alarm:
            message = (
                f"input drift ended: combined score {score.combined:.2f} is below its threshold 1.0 over "
                f"the last {score.window} analysed images ({parts})"
            )
            log.info("%s", message)
            self.ledger.note("drift-cleared", message)
