"""The result of an evaluation (:func:`chexnet_dicom.evaluate.report.evaluate`), as ``metrics.json`` holds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chexnet_dicom.evaluate import metrics as mt

__all__ = ["RESEARCH_NOTICE", "EvalResult"]

RESEARCH_NOTICE = "Research use only. Not for clinical use."


@dataclass
class EvalResult:
    """Everything :func:`write_report` needs (also serialised to ``metrics.json``)."""

    n_images: int
    n_patients: int
    n_boot: int
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    mean_auroc: float = float("nan")
    mean_auroc_ci: dict[str, float] = field(default_factory=dict)
    subgroups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    comparison: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dictionary (curves omitted)."""
        return {
            "notice": RESEARCH_NOTICE,
            "model": self.model,
            "data": self.data,
            "n_images": self.n_images,
            "n_patients": self.n_patients,
            "n_boot": self.n_boot,
            "bootstrap_seed": self.seed,
            "min_events": mt.MIN_EVENTS,
            "mean_auroc": self.mean_auroc,
            "mean_auroc_ci": self.mean_auroc_ci,
            "per_class": self.per_class,
            "subgroups": self.subgroups,
            "comparison": self.comparison,
            "published": self.published,
        }
