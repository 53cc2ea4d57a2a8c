"""The cohort shift of a batch run: the whole export against the model's drift reference.

At the end of every run, ``OUT/shift.json`` and ``OUT/shift.md`` (also a section of the
cohort report of ``--labels``) compare the analysed images of the export with the
reference sample shipped beside the model card (``card.drift``,
:func:`chexnet_dicom.drift.load_reference`), by :func:`chexnet_dicom.drift.score_window`:
the same three parts as the node's drift monitor (metadata G-tests, feature KS per
principal component, output KS per finding, weighted Bonferroni; a score of 1.0 is the
alarm threshold), with the tables that explain the score:

- per metadata variable: its p-value and the count of each category in the reference
  and in the export (variables the reference does not know are listed as not tested);
- per principal component of the features: the KS p-value, and the export's mean and
  standard deviation of the projection in units of the reference's standard deviation;
- per finding: the KS p-value, the present-call rate and the mean probability in the
  reference and in the export.

A table lists the :data:`TOP_OOD` images with the highest out-of-distribution score
(paths relative to the export root, pseudonymised in a pseudonymised run), for review.

Each image's observation is what the run recorded when it analysed it (the ledger's
``observations``: binned header metadata and float32 features, and the prediction row):
nothing is decoded or predicted again.  An export of more than :data:`MAX_IMAGES`
analysed images is scored on a seeded uniform subsample of that many (reservoir
sampling, so memory stays bounded); the OOD table always covers every image.  With a
very large window the tests detect very small differences: read the per-variable
tables, not only the alarm.

When the card has no drift reference (or it cannot be read), ``shift.json`` has
``status`` other than ``"scored"`` and a ``reason``, and the section says the same.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.batch.ledger import RunLedger
from chexnet_dicom.batch.pseudonym import Pseudonymizer
from chexnet_dicom.drift import METADATA_KEYS, DriftReference, Observation, load_reference, score_window
from chexnet_dicom.errors import WeightsError
from chexnet_dicom.model.card import ModelCard
from chexnet_dicom.model.labels import LABELS

__all__ = [
    "ALPHA",
    "MAX_IMAGES",
    "SHIFT_JSON",
    "SHIFT_MD",
    "TOP_OOD",
    "export_shift",
    "shift_markdown",
    "write_shift",
]

log = logging.getLogger(__name__)

#: The run's shift files, in its output folder.
SHIFT_JSON = "shift.json"
SHIFT_MD = "shift.md"
#: False-alarm level of the export's one evaluation (the node's default).
ALPHA = 1e-3
#: Analysed images scored at most (a seeded uniform subsample beyond).
MAX_IMAGES = 20_000
#: Rows of the most out-of-distribution table.
TOP_OOD = 20
#: Categories listed per metadata variable (the rest are summed in ``(other)``).
_MAX_CATEGORIES = 12


def _observation(row: dict[str, Any], metadata: dict[str, str], features: bytes | None) -> Observation:
    probs = np.array([float(row[f"prob_{name}"]) for name in LABELS], dtype=np.float64)
    present = np.array([bool(row[f"present_{name}"]) for name in LABELS], dtype=bool)
    feats = None if features is None else np.frombuffer(features, dtype="<f4")
    return Observation(metadata=metadata, probabilities=probs, features=feats, present=present)


def _categories(ref: dict[str, int], seen: Counter[str]) -> list[dict[str, Any]]:
    names = sorted(set(ref) | set(seen), key=lambda c: (-(ref.get(c, 0) + seen.get(c, 0)), c))
    if len(names) > _MAX_CATEGORIES:
        kept, rest = names[: _MAX_CATEGORIES - 1], names[_MAX_CATEGORIES - 1 :]
    else:
        kept, rest = names, []
    rows: list[dict[str, Any]] = [
        {"category": c, "reference": int(ref.get(c, 0)), "export": int(seen.get(c, 0))} for c in kept
    ]
    if rest:
        rows.append(
            {
                "category": f"(other: {len(rest)})",
                "reference": sum(int(ref.get(c, 0)) for c in rest),
                "export": sum(int(seen.get(c, 0)) for c in rest),
            }
        )
    return rows


def _metadata_table(
    reference: DriftReference, window: list[Observation], p_values: dict[str, float]
) -> list[dict[str, Any]]:
    out = []
    for key in METADATA_KEYS:
        ref = reference.metadata_counts.get(key, {})
        seen = Counter(str(o.metadata.get(key, "unknown")) for o in window)
        out.append(
            {
                "variable": key,
                "tested": key in p_values,
                "p": p_values.get(key),
                "why_not_tested": (
                    ""
                    if key in p_values
                    else (
                        "the reference does not know it: all unknown"
                        if set(ref) <= {"unknown"}
                        else "fewer than 2 categories in the reference and the export"
                    )
                ),
                "categories": _categories(ref, seen),
            }
        )
    return out


def _features_table(
    reference: DriftReference, window: list[Observation], p_values: dict[str, float]
) -> list[dict[str, Any]]:
    if reference.components is None or reference.projections is None or reference.feature_mean is None:
        return []
    feats = [o.features for o in window if o.features is not None]
    if not feats or len(feats) < len(window):
        return []
    projected = (np.stack(feats).astype(np.float64) - reference.feature_mean) @ reference.components.T
    ref_sd = reference.projections.std(axis=0)
    out = []
    for i in range(projected.shape[1]):
        sd = float(ref_sd[i]) or 1.0
        out.append(
            {
                "component": f"pc{i + 1}",
                "p": p_values.get(f"pc{i + 1}"),
                "export_mean_sd": float(projected[:, i].mean() - reference.projections[:, i].mean()) / sd,
                "export_sd_ratio": float(projected[:, i].std()) / sd,
            }
        )
    return out


def _outputs_table(
    reference: DriftReference, window: list[Observation], details: dict[str, float]
) -> list[dict[str, Any]]:
    probs = np.stack([o.probabilities for o in window])
    present = np.stack([np.asarray(o.present, dtype=bool) for o in window])
    ref_mean = reference.probabilities.mean(axis=0)
    out = []
    for i, name in enumerate(LABELS):
        ref_rate = reference.present_rate
        out.append(
            {
                "finding": name,
                "p": details.get(f"{name}.p"),
                "reference_present_rate": None if ref_rate is None else float(ref_rate[i]),
                "export_present_rate": float(present[:, i].mean()),
                "reference_mean_probability": float(ref_mean[i]),
                "export_mean_probability": float(probs[:, i].mean()),
            }
        )
    return out


def _not_scored(status: str, reason: str, analysed: int, most_ood: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "status": status,
        "reason": reason,
        "analysed_images": analysed,
        "most_out_of_distribution": most_ood,
    }


def export_shift(
    observations: Iterable[tuple[dict[str, Any], dict[str, str] | None, bytes | None]],
    card: ModelCard,
    card_dir: str | Path | None,
    *,
    pseudonymizer: Pseudonymizer | None = None,
    alpha: float = ALPHA,
    max_images: int = MAX_IMAGES,
    seed: int = 0,
) -> dict[str, Any]:
    """The export's cohort shift against the card's drift reference (JSON-ready; see the module docstring).

    Parameters
    ----------
    observations
        ``(predictions row, drift metadata, float32 feature bytes)`` per analysed image
        (:meth:`~chexnet_dicom.batch.ledger.RunLedger.observations`).
    card
        The model card the run used.
    card_dir
        The folder of the card (where its drift reference lies); None when unknown.
    pseudonymizer
        Pseudonymise the paths of the OOD table as the tables do.
    alpha
        False-alarm level of the evaluation (the score's 1.0).
    max_images
        Score a seeded uniform subsample of at most this many images.
    seed
        Seed of the subsample.

    Returns
    -------
    dict
        ``status`` (``"scored"``, ``"no_reference"``, ``"unreadable_reference"`` or
        ``"too_few_images"``), ``reason``, the score and its tables, the OOD table.
    """
    rng = random.Random(seed)
    window: list[Observation] = []
    top: list[tuple[float, int, str, Any, Any]] = []
    analysed = unrecorded = 0
    for row, metadata, features in observations:
        analysed += 1
        score = row.get("ood_score")
        if score is not None:
            item = (
                float(score),
                -analysed,
                str(row["path"]),
                row.get("ood_threshold"),
                row.get("out_of_distribution"),
            )
            (heapq.heappush if len(top) < TOP_OOD else heapq.heappushpop)(top, item)
        if metadata is None:
            unrecorded += 1
            continue
        obs = _observation(row, metadata, features)
        seen = analysed - unrecorded
        if len(window) < max_images:
            window.append(obs)
        elif (j := rng.randrange(seen)) < max_images:
            window[j] = obs
    most_ood = [
        {
            "path": pseudonymizer.ident("path", path) if pseudonymizer is not None else path,
            "ood_score": s,
            "ood_threshold": thr,
            "out_of_distribution": flag,
        }
        for s, _, path, thr, flag in sorted(top, reverse=True)
    ]
    if not card.drift:
        return _not_scored(
            "no_reference",
            "the model card has no drift reference (card field 'drift'): run `chexdcm weights calibrate-ood` "
            "to ship one with the weights",
            analysed,
            most_ood,
        )
    if card_dir is None:
        return _not_scored(
            "unreadable_reference", "the folder of the model card is not known", analysed, most_ood
        )
    try:
        reference = load_reference(card_dir, card.drift)
    except WeightsError as exc:
        return _not_scored("unreadable_reference", str(exc), analysed, most_ood)
    if len(window) < 2:
        return _not_scored(
            "too_few_images",
            f"{len(window)} analysed image(s) with an observation: 2 needed",
            analysed,
            most_ood,
        )
    result = score_window(reference, window, alpha=alpha, findings=LABELS)
    details = result.details
    return {
        "status": "scored",
        "reason": "",
        "analysed_images": analysed,
        "scored_images": len(window),
        "subsampled": len(window) < analysed - unrecorded,
        "images_without_observation": unrecorded,
        "reference_images": reference.size,
        "reference": {k: card.drift.get(k) for k in ("file", "sha256", "size", "images") if k in card.drift},
        "alpha": alpha,
        "combined": result.combined,
        "alarm": result.alarm,
        "parts": dict(result.parts),
        "p_values": dict(result.p_values),
        "metadata": _metadata_table(reference, window, details.get("metadata", {})),
        "features": _features_table(reference, window, details.get("features", {})),
        "outputs": _outputs_table(reference, window, details.get("outputs", {})),
        "most_out_of_distribution": most_ood,
    }


def _num(value: Any, fmt: str = ".3g") -> str:
    return "-" if value is None else format(float(value), fmt)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\u00a6").replace("\n", " ")  # a "|" would split the cell


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return [*lines, ""]


def shift_markdown(shift: dict[str, Any]) -> str:
    """The shift as a Markdown section (``## Cohort shift against the model's reference``)."""
    lines = ["## Cohort shift against the model's reference", ""]
    if shift["status"] != "scored":
        lines += [f"Not scored ({shift['status']}): {shift['reason']}.", ""]
    else:
        verdict = "**shift alarm**" if shift["alarm"] else "no alarm"
        sub = f" (a seeded subsample of {shift['scored_images']})" if shift.get("subsampled") else ""
        lines += [
            f"{shift['analysed_images']} analysed images{sub} against the {shift['reference_images']}-image "
            f"reference shipped with the model: combined score {shift['combined']:.2f} ({verdict}; 1.0 is the "
            f"alarm threshold at alpha {shift['alpha']:g}, weighted Bonferroni over the parts).",
            "",
        ]
        if shift.get("images_without_observation"):
            lines += [
                f"{shift['images_without_observation']} images recorded by an earlier version have no "
                "observation and are left out.",
                "",
            ]
        untested = not any(v["tested"] for v in shift["metadata"])

        def p_text(part: str) -> str:
            note = " (no variable tested)" if part == "metadata" and untested else ""
            return _num(shift["p_values"].get(part)) + note

        lines += _table(
            ["part", "score", "p-value"], [[p, f"{s:.2f}", p_text(p)] for p, s in shift["parts"].items()]
        )
        lines += ["### Metadata", ""]
        for var in shift["metadata"]:
            if not var["tested"]:
                seen = ", ".join(f"{c['category']} {c['export']}" for c in var["categories"] if c["export"])
                lines.append(
                    f"- {var['variable']}: not tested ({var['why_not_tested']}); export: {seen or '-'}"
                )
        lines.append("")
        for var in (v for v in shift["metadata"] if v["tested"]):
            lines += [f"{var['variable']}: p = {_num(var['p'])}", ""]
            lines += _table(
                ["category", "reference", "export"],
                [[c["category"], str(c["reference"]), str(c["export"])] for c in var["categories"]],
            )
        lines += ["### Features (principal components of the reference)", ""]
        if shift["features"]:
            lines += _table(
                [
                    "component",
                    "KS p-value",
                    "export mean - reference mean (ref. SD)",
                    "export SD / reference SD",
                ],
                [
                    [
                        f["component"],
                        _num(f["p"]),
                        f"{f['export_mean_sd']:+.2f}",
                        f"{f['export_sd_ratio']:.2f}",
                    ]
                    for f in shift["features"]
                ],
            )
        else:
            lines += ["Not tested: the reference or the weights give no features.", ""]
        lines += ["### Outputs", ""]
        lines += _table(
            ["finding", "KS p-value", "present rate ref.", "present rate export", "mean prob. ref.",
             "mean prob. export"],
            [
                [o["finding"], _num(o["p"]), _num(o["reference_present_rate"], ".3f"),
                 _num(o["export_present_rate"], ".3f"), _num(o["reference_mean_probability"], ".3f"),
                 _num(o["export_mean_probability"], ".3f")]
                for o in shift["outputs"]
            ],
        )  # fmt: skip
    lines += [f"### The {TOP_OOD} most out-of-distribution images", ""]
    if shift["most_out_of_distribution"]:
        lines += _table(
            ["path", "OOD score", "threshold", "flagged"],
            [
                [r["path"], _num(r["ood_score"], ".4g"), _num(r["ood_threshold"], ".4g"),
                 "" if r["out_of_distribution"] is None else ("yes" if r["out_of_distribution"] else "no")]
                for r in shift["most_out_of_distribution"]
            ],
        )  # fmt: skip
    else:
        lines += ["No image has an OOD score (the weights were never calibrated for it).", ""]
    return "\n".join(lines)


def write_shift(
    out: Path,
    ledger: RunLedger,
    card: ModelCard,
    card_dir: str | Path | None,
    pseudonymizer: Pseudonymizer | None = None,
) -> dict[str, Any]:
    """Write ``OUT/shift.json`` and ``OUT/shift.md`` (atomic) from the ledger; return the shift."""
    shift = export_shift(ledger.observations(), card, card_dir, pseudonymizer=pseudonymizer)
    atomic_write(out / SHIFT_JSON, json.dumps(shift, indent=2, sort_keys=True))
    atomic_write(out / SHIFT_MD, shift_markdown(shift) + "\n")
    if shift["status"] == "scored":
        log.info("cohort shift: combined score %.2f (alarm: %s)", shift["combined"], shift["alarm"])
    else:
        log.info("cohort shift not scored: %s", shift["reason"])
    return shift
