"""The model's output for one image (:class:`Prediction`): probabilities and heatmaps, shared with the outputs layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chexnet_dicom.model.labels import LABELS

__all__ = ["Prediction"]


@dataclass(frozen=True)
class Prediction:
    """The model's output for one image.

    Attributes
    ----------
    probabilities
        (14,) float64 sigmoid outputs in [0, 1], in :data:`LABELS` order.
    thresholds
        (14,) operating points from the model card.
    cams
        (14, h, w) float32 class activation maps on the *model-input* grid
        (the crop the network saw), in units of the card's fixed ``cam_scale``
        (1.0 = the model's reference activation; never normalised per image), or None.
    model_name, model_version, weights_sha256
        Identify the algorithm (for DICOM Algorithm Identification).
    precision, device, backend
        How the forward pass ran (e.g. ``"fp32"``, ``"cpu"``, ``"onnxruntime"``).
    labels
        Output order.
    logits
        (14,) float64 logits (mean over TenCrop crops), or None.
    features
        (D,) float32 pooled penultimate features (mean over crops), or None when the
        backend's graph has no feature output.
    ood_score, ood_threshold, ood_method
        Out-of-distribution score of :mod:`chexnet_dicom.model.ood` (higher = less like
        the reference images), the card's threshold for it and the method's name; None,
        None and ``""`` when no score could be computed (then :attr:`ood_note` says why).
    ood_note
        Why the score is unavailable (no reference statistics in the card, a graph
        without the feature output); empty when it is available.
    """

    probabilities: np.ndarray
    thresholds: np.ndarray
    model_name: str
    model_version: str
    weights_sha256: str
    cams: np.ndarray | None = None
    precision: str = "fp32"
    device: str = "cpu"
    backend: str = "torch"
    labels: tuple[str, ...] = field(default=LABELS)
    logits: np.ndarray | None = field(default=None, repr=False)
    features: np.ndarray | None = field(default=None, repr=False)
    ood_score: float | None = None
    ood_threshold: float | None = None
    ood_method: str = ""
    ood_note: str = "no out-of-distribution score computed"

    @property
    def out_of_distribution(self) -> bool | None:
        """Score at or above the card's threshold; None when no score is available."""
        if self.ood_score is None or self.ood_threshold is None:
            return None
        return bool(self.ood_score >= self.ood_threshold)

    @property
    def present(self) -> np.ndarray:
        """(14,) bool: probability at or above the finding's operating point."""
        return np.asarray(self.probabilities >= self.thresholds)

    def ood_dict(self) -> dict[str, object]:
        """The out-of-distribution record every output shows (JSON-ready).

        Keys: ``score``, ``threshold``, ``method`` (None when unavailable),
        ``out_of_distribution`` (bool, or None when unavailable) and ``note`` (why not).
        """
        return {
            "score": None if self.ood_score is None else float(f"{self.ood_score:.6g}"),
            "threshold": None if self.ood_threshold is None else float(f"{self.ood_threshold:.6g}"),
            "method": self.ood_method or None,
            "out_of_distribution": self.out_of_distribution,
            "note": self.ood_note,
        }

    def as_dict(self) -> dict[str, float]:
        """Finding name -> probability."""
        return {name: float(p) for name, p in zip(self.labels, self.probabilities, strict=True)}
