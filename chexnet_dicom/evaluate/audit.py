"""Labels audited by confident learning (Northcutt, Jiang & Chuang, *JAIR* 2021; cleanlab 2.x).

Given out-of-sample probabilities and the labels they are scored against, each finding is
a one-vs-rest binary problem (cleanlab's multi-label treatment):

* ``flagged``: the images whose label confident learning finds likely wrong
  (:func:`cleanlab.multilabel_classification.filter.find_multilabel_issues_per_class`,
  pruning by the estimated noise rate);
* ``quality``: cleanlab's label quality score with class-threshold-adjusted
  probabilities (``adjust_pred_probs=True``: each class's probabilities are compared with
  the mean probability of the images carrying that label, so a rare finding's positives
  are not all suspect merely because their probabilities are low); the lower, the more
  likely the label is wrong, and the review order;
* the estimated label-noise rate: flagged / images, with a Wilson 95% interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chexnet_dicom.evaluate.metrics import auroc, wilson_ci

__all__ = ["FindingAudit", "audit_labels", "rescore"]


@dataclass(frozen=True)
class FindingAudit:
    """The audit of one finding's labels.

    Attributes
    ----------
    name
        The finding.
    quality
        (n,) label quality in [0, 1]; low = likely wrong.
    flagged
        (n,) True where confident learning flags the label.
    noise_rate, noise_low, noise_high
        Flagged fraction and its Wilson 95% interval.
    """

    name: str
    quality: np.ndarray
    flagged: np.ndarray
    noise_rate: float
    noise_low: float
    noise_high: float

    def order(self) -> np.ndarray:
        """Image indices from most to least suspect."""
        return np.argsort(self.quality, kind="mergesort")


def audit_labels(y: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> dict[str, FindingAudit]:
    """Audit every finding's labels (see the module docstring).

    Parameters
    ----------
    y
        (n, C) 0/1 labels.
    probs
        (n, C) out-of-sample probabilities.
    names
        C finding names.
    """
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class
    from cleanlab.rank import get_label_quality_scores

    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    if y.shape != p.shape or y.shape[1] != len(names):
        raise ValueError("labels, probabilities and names disagree in shape")
    masks = find_multilabel_issues_per_class(
        labels=[list(np.flatnonzero(row)) for row in y], pred_probs=p, low_memory=False
    )
    out = {}
    n = y.shape[0]
    for k, name in enumerate(names):
        binary = np.column_stack([1 - p[:, k], p[:, k]])
        if 0 < y[:, k].sum() < n:
            quality = get_label_quality_scores(y[:, k], binary, adjust_pred_probs=True)
        else:  # one class only: nothing to calibrate against
            quality = binary[np.arange(n), y[:, k]]
        flagged = np.asarray(masks, dtype=bool)[:, k]  # (n, C) in cleanlab 2.9
        lo, hi = wilson_ci(int(flagged.sum()), n)
        out[name] = FindingAudit(name, np.asarray(quality, np.float64), flagged, flagged.mean(), lo, hi)
    return out


def rescore(y: np.ndarray, score: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """AUROC as labelled, with the flagged images removed, and with their labels flipped."""
    y = np.asarray(y).astype(int)
    keep = ~flagged
    flipped = np.where(flagged, 1 - y, y)
    return {
        "as_labelled": auroc(y, score),
        "flagged_removed": auroc(y[keep], score[keep]),
        "flagged_relabelled": auroc(flipped, score),
    }
