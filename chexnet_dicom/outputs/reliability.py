"""Which findings a set of weights can be trusted to report, and in which order to list them.

A finding is **unreliable at its threshold** when the model card says that, in
validation, the model did not detect it at its operating point (validation
sensitivity 0) or that the validation split held fewer than :data:`MIN_VALIDATION_POSITIVES`
positives of it (the operating point then rests on a handful of images).  A card that
records neither (an imported checkpoint without validation) marks nothing unreliable:
unknown is not the same as unreliable.

Findings are listed by their **margin**, the probability minus the finding's own
operating point: the present findings first (margin >= 0, largest first), then the
absent ones nearest to their threshold.  Raw probabilities are not comparable across
findings whose thresholds differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.outputs.identity import CardLike

__all__ = [
    "MIN_VALIDATION_POSITIVES",
    "UNRELIABLE_TEXT",
    "by_margin",
    "unreliable_findings",
    "unreliable_reason",
    "validation_positives",
]

#: Fewer validation positives than this make a finding's operating point unreliable.
MIN_VALIDATION_POSITIVES = 5
#: The words every output uses for such a finding.
UNRELIABLE_TEXT = "unreliable at this threshold"
#: A validation sensitivity at or below this counts as "not detected".
_ZERO_SENSITIVITY = 1e-9


def validation_positives(card: CardLike) -> dict[str, int]:
    """Validation positives per finding, as the card's training summary records them (may be empty)."""
    training: Any = getattr(card, "training", None)
    if not isinstance(training, Mapping):
        return {}
    split = training.get("split")
    positives = split.get("positives") if isinstance(split, Mapping) else None
    validation = positives.get("validation") if isinstance(positives, Mapping) else None
    if not isinstance(validation, Mapping):
        return {}
    return {str(k): int(v) for k, v in validation.items() if isinstance(v, (int, float))}


def unreliable_reason(card: CardLike, label: str) -> str | None:
    """Why ``label`` is unreliable at its threshold (short text), or None when it is not known to be."""
    op = card.operating_points.get(label)
    if op is not None and op.sensitivity is not None and op.sensitivity <= _ZERO_SENSITIVITY:
        return "validation sensitivity 0 at its threshold"
    n = validation_positives(card).get(label)
    if n is not None and n < MIN_VALIDATION_POSITIVES:
        return f"{n} validation positives (fewer than {MIN_VALIDATION_POSITIVES})"
    return None


def unreliable_findings(card: CardLike) -> frozenset[str]:
    """The findings of :data:`LABELS` that are unreliable at their threshold."""
    return frozenset(label for label in LABELS if unreliable_reason(card, label) is not None)


def by_margin(probabilities: np.ndarray, card: CardLike) -> list[str]:
    """Every finding, largest margin (probability minus threshold) first; ties in label order."""
    probs = np.asarray(probabilities, dtype=np.float64)
    margins = [float(probs[k]) - float(card.threshold(label)) for k, label in enumerate(LABELS)]
    order = sorted(range(len(LABELS)), key=lambda k: (-margins[k], k))
    return [LABELS[k] for k in order]
