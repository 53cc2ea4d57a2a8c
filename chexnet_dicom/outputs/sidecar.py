"""JSON sidecar: the same result for programs that do not read DICOM.

The sidecar holds per-image probabilities and present flags, the operating points, the
ingest provenance flags, a model card summary, the study-level summary and the UIDs of
the DICOM outputs. It holds no patient data: source instances are referred to by
``"sha256:<first 16 hex digits of sha256(SOP Instance UID)>"`` (stable across runs, so
a sidecar can be matched to its source by whoever holds the source), and only UIDs
that the DICOM outputs carry anyway appear in clear. It is deterministic: the same
inputs give byte-identical JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from chexnet_dicom import __version__
from chexnet_dicom.dicom.study import Skipped
from chexnet_dicom.model.labels import FINDING_CODES, LABELS
from chexnet_dicom.outputs.identity import RESEARCH_USE_ONLY, CardLike
from chexnet_dicom.outputs.ood_items import withholds
from chexnet_dicom.results import ImageResult, study_summary

__all__ = ["SIDECAR_SCHEMA", "build_sidecar", "hashed_ref", "sidecar_text"]

#: Identifier and version of the sidecar layout.
SIDECAR_SCHEMA = "chexnet-dicom.result/1"


def hashed_ref(uid: str) -> str:
    """Return a stable non-identifying reference to a source UID."""
    return "sha256:" + hashlib.sha256(str(uid).encode("ascii", "replace")).hexdigest()[:16]


def _output(ds: Dataset) -> dict[str, str]:
    return {
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
    }


def _card_summary(card: CardLike) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for label in LABELS:
        op = card.operating_points.get(label)
        ops[label] = {
            "threshold": float(card.threshold(label)),
            "method": op.method if op is not None else "default 0.5 (none in the model card)",
            "sensitivity": op.sensitivity if op is not None else None,
            "specificity": op.specificity if op is not None else None,
            "sensitivity_ci": list(op.sensitivity_ci) if op is not None and op.sensitivity_ci else None,
            "specificity_ci": list(op.specificity_ci) if op is not None and op.specificity_ci else None,
        }
    return {
        "name": str(card.name),
        "version": str(card.version),
        "weights_sha256": str(card.weights_sha256),
        "device_uid": str(card.device_uid),
        "cam_threshold": float(card.cam_threshold),
        "intended_use": str(card.intended_use),
        "operating_points": ops,
    }


def build_sidecar(
    results: Sequence[ImageResult],
    card: CardLike,
    *,
    skipped: Sequence[Skipped] = (),
    sr: Dataset | None = None,
    overlays: Sequence[Dataset] = (),
    ood_policy: str = "flag",
) -> dict[str, Any]:
    """Build the sidecar dictionary of one study.

    Parameters
    ----------
    results
        Analysed images.
    card
        The model card.
    skipped
        Instances not analysed, with reasons.
    sr, overlays
        The DICOM outputs written for the study (their UIDs are listed; each overlay
        is attached to the image whose SOP Instance UID it references).
    ood_policy
        ``[outputs] ood``: ``images[].ood.findings_withheld`` says whether the SR and SC
        withhold the image's findings (the probabilities stay in the sidecar, for the record).

    Returns
    -------
    dict
        JSON-ready.
    """
    by_source: dict[str, list[dict[str, str]]] = {}
    for out in overlays:
        for item in out.get("SourceImageSequence", []):
            by_source.setdefault(str(item.ReferencedSOPInstanceUID), []).append(_output(out))
    images = []
    for n, r in enumerate(results, start=1):
        probs = np.asarray(r.prediction.probabilities, dtype=np.float64)
        sop = str(r.dataset.SOPInstanceUID)
        images.append(
            {
                "image": n,
                "source_ref": hashed_ref(sop),
                "rows": int(r.dataset.Rows),
                "columns": int(r.dataset.Columns),
                "probabilities": {label: float(p) for label, p in zip(LABELS, probs, strict=True)},
                "present": {
                    label: bool(p >= card.threshold(label)) for label, p in zip(LABELS, probs, strict=True)
                },
                "flags": list(r.flags),
                "ood": {**r.prediction.ood_dict(), "findings_withheld": withholds(r.prediction, ood_policy)},
                "precision": r.prediction.precision,
                "device": r.prediction.device,
                "backend": r.prediction.backend,
                "outputs": by_source.get(sop, []),
            }
        )
    return {
        "schema": SIDECAR_SCHEMA,
        "notice": f"{RESEARCH_USE_ONLY}. Not a medical device; not for clinical decisions.",
        "generator": f"chexnet-dicom {__version__}",
        "model": _card_summary(card),
        "finding_codes": {label: list(FINDING_CODES[label]) for label in LABELS},
        "images": images,
        "skipped": [
            {
                "source_ref": hashed_ref(str(s.dataset.SOPInstanceUID)) if s.dataset is not None else None,
                "reason": s.reason,
                "message": s.message,
            }
            for s in skipped
        ],
        "study_summary": {
            "rule": "maximum probability per finding over the analysed images; present when it reaches the operating point",
            "findings": {
                label: {
                    "max_probability": f.probability,
                    "image_index": f.image_index,
                    "threshold": f.threshold,
                    "present": f.present,
                }
                for label, f in study_summary(results).items()
            },
        },
        "outputs": {
            "sr": _output(sr) if sr is not None else None,
            "predecessors": [
                str(ref.ReferencedSOPInstanceUID)
                for series in (sr.get("PredecessorDocumentsSequence", []) if sr is not None else [])
                for s in series.ReferencedSeriesSequence
                for ref in s.ReferencedSOPSequence
            ],
            "overlays": [_output(o) for o in overlays],
            "parametric_maps": [],
        },
    }


def sidecar_text(sidecar: dict[str, Any]) -> str:
    """The sidecar as indented, key-sorted, ASCII JSON (byte-identical for the same inputs).

    Parameters
    ----------
    sidecar
        From :func:`build_sidecar`.

    Returns
    -------
    str
    """
    return json.dumps(sidecar, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
