"""Full evaluation of a predictions table, and the report files.

:func:`evaluate` scores, in this order of importance:

1. **The model as deployed**: the model card's operating points (the thresholds the SR
   uses for present/absent): sensitivity, specificity, PPV, NPV, F1, alerts and true
   findings per 100 studies and net benefit, with patient-level 95% intervals (Wilson
   for small or degenerate proportions, see :func:`~.metrics.operating_point_stats`).
2. AUROC and PR-AUC per finding and their mean, with patient-level bootstrap CIs;
   calibration (ECE); decision curves; PPV/NPV at a stated local prevalence.
3. Thresholds chosen on the scored data (Youden's J, a fixed sensitivity), labelled as
   optimistic: their intervals re-choose the threshold inside every resample and an
   optimism-corrected value is given (:func:`~.metrics.rechosen_threshold_stats`).
4. Subgroups (sex, age band, view, manufacturer), a paired comparison with a second
   model read against a minimal clinically important difference, published AUROCs.

One seeded set of patient-level bootstrap weights serves every table: a subgroup's
resamples are the same resamples restricted to its images, so a subgroup equal to the
whole cohort has the whole cohort's intervals.  :func:`write_report` writes
``report.md``, ``report.html``, ``metrics.json``, ``per_class.csv`` and the plots.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.evaluate import metrics as mt
from chexnet_dicom.evaluate import utility as ut
from chexnet_dicom.evaluate.result import RESEARCH_NOTICE, EvalResult
from chexnet_dicom.evaluate.tables import EvalData
from chexnet_dicom.model.labels import LABELS

__all__ = ["AGE_BANDS", "EvalResult", "evaluate", "read_published", "write_report"]

log = logging.getLogger(__name__)

#: Age bands (years, inclusive lower bound) for subgroup tables.
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("0-17", 0, 18),
    ("18-39", 18, 40),
    ("40-59", 40, 60),
    ("60-79", 60, 80),
    ("80+", 80, 1000),
)


def _ci(c: mt.BinaryCI) -> dict[str, float]:
    return {"value": c.value, "low": c.low, "high": c.high}


def read_published(path: str | Path) -> dict[str, dict[str, float]]:
    """Read ``published_auroc.csv``: source -> finding -> AUROC."""
    out: dict[str, dict[str, float]] = {}
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = row.pop("label")
            for source, value in row.items():
                out.setdefault(source, {})[label] = float(value)
    return out


def _deployed(
    y: np.ndarray, s: np.ndarray, thr: float, boot_w: np.ndarray | None, source: str
) -> dict[str, Any]:
    stats = mt.operating_point_stats(y, s, thr, boot_w)
    entry: dict[str, Any] = {"threshold": thr, "source": source}
    for name, c in stats.items():
        entry[name] = (
            int(c.value) if name in ("tp", "fn", "fp", "tn") else {**_ci(c), "wilson": c.n_boot == 0}
        )
    entry["net_benefit_treat_all"] = float(ut.net_benefit_treat_all(y, thr)[0]) if thr < 1 else float("nan")
    return entry


def _prevalence_entry(
    y: np.ndarray, s: np.ndarray, thr: float, boot_w: np.ndarray | None, prevalence: float
) -> dict[str, Any]:
    yb = y.astype(bool)
    pred = s >= thr
    w = np.ones((1, y.size)) if boot_w is None else np.vstack([np.ones((1, y.size)), boot_w])
    with np.errstate(invalid="ignore", divide="ignore"):
        se = (w * (pred & yb)).sum(1) / (w * yb).sum(1)
        sp = (w * (~pred & ~yb)).sum(1) / (w * ~yb).sum(1)
    return {"prevalence": prevalence, **ut.prevalence_adjusted(se, sp, prevalence)}


@dataclass(frozen=True)
class Comparison:
    """A second model or run scored on the same images, and what difference matters.

    Attributes
    ----------
    scores
        Its scores, aligned with the evaluated data (images x findings).
    name
        Its name in the report.
    mcid
        Minimal clinically important differences by measure (``auroc``, ``net_benefit``).
    """

    scores: np.ndarray
    name: str = "model B"
    mcid: dict[str, float] | None = None


@dataclass(frozen=True)
class ReportContext:
    """What the report says about the model and the data besides the numbers.

    Attributes
    ----------
    model
        The model's identity (name, version, weights hash, backend, precision, device).
    provenance
        The data's provenance (label source, join key, counts joined and unjoined).
    """

    model: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None


def evaluate(
    data: EvalData,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    thresholds: dict[str, float] | None = None,
    threshold_source: str = "model card",
    fixed_sensitivity: float = 0.9,
    comparison: Comparison | None = None,
    published: dict[str, dict[str, float]] | None = None,
    prevalence: dict[str, float] | None = None,
    context: ReportContext | None = None,
) -> EvalResult:
    """Evaluate aligned labels and scores (see the module docstring).

    Parameters
    ----------
    data
        Output of :func:`chexnet_dicom.evaluate.tables.join_tables`.
    n_boot
        Patient-level bootstrap resamples for CIs (0 disables CIs).
    seed
        Bootstrap seed (stated in the report; results are reproducible).
    thresholds
        The deployed operating points per finding (a model card's, chosen on validation
        data); scored first.  None: no deployed table (it cannot be scored).
    threshold_source
        Where ``thresholds`` come from, for the report.
    fixed_sensitivity
        Target of the data-chosen fixed-sensitivity threshold.
    comparison
        A second model or run on the same images (its scores and name) and the minimal
        clinically important differences, for a paired comparison.
    comparison.mcid
        Minimal clinically important differences, keys ``"auroc"`` and ``"net_benefit"``.
    published
        Published AUROCs (:func:`read_published`) to show side by side.
    prevalence
        Finding -> local prevalence at which to report PPV and NPV.
    context.model, context.provenance
        Model identity (name, version, weights_sha256, backend, precision, ...) and the
        data's provenance (label source, join key, counts joined/unjoined), for the report.
    """
    n = len(data.ids)
    boot_w = mt.bootstrap_weights(data.patients, n_boot, seed) if n_boot > 0 else None
    res = EvalResult(n_images=n, n_patients=len(set(data.patients)), n_boot=n_boot, seed=seed)
    context = context or ReportContext()
    model, provenance = context.model, context.provenance
    compare_scores = comparison.scores if comparison is not None else None
    compare_name = comparison.name if comparison is not None else "model B"
    mcid = comparison.mcid if comparison is not None else None
    res.model = dict(model or {})
    res.model.setdefault("notice", RESEARCH_NOTICE)
    res.data = dict(provenance or {})
    res.published = published or {}
    prevalence = prevalence or {}
    mcid = mcid or {}
    for k, label in enumerate(LABELS):
        y = data.y[:, k]
        s = data.scores[:, k]
        pos = int(y.sum())
        auc = mt.auroc_ci(y, s, boot_w)
        entry: dict[str, Any] = {
            "positives": pos,
            "negatives": int(y.size - pos),
            "small_n": pos < mt.MIN_EVENTS or y.size - pos < mt.MIN_EVENTS,
            "prevalence": pos / y.size if y.size else float("nan"),
            "auroc": _ci(auc),
            "pr_auc": mt.pr_auc(y, s),
            "ece": mt.expected_calibration_error(y, s),
        }
        thr = None if thresholds is None else thresholds.get(label)
        if thr is not None:
            entry["deployed"] = _deployed(y, s, float(thr), boot_w, threshold_source)
            if label in prevalence:
                entry["at_prevalence"] = _prevalence_entry(y, s, float(thr), boot_w, prevalence[label])
        if boot_w is not None and 0 < pos < y.size:
            entry["data_chosen"] = {
                "youden-on-this-data": mt.rechosen_threshold_stats(y, s, "youden", boot_w),
                f"sensitivity>={fixed_sensitivity:g}-on-this-data": mt.rechosen_threshold_stats(
                    y, s, "sensitivity", boot_w, target=fixed_sensitivity
                ),
            }
        elif 0 < pos < y.size:
            entry["data_chosen"] = {
                "youden-on-this-data": {"threshold": mt.youden_threshold(y, s)},
                f"sensitivity>={fixed_sensitivity:g}-on-this-data": {
                    "threshold": mt.threshold_at_sensitivity(y, s, fixed_sensitivity)
                },
            }
        res.per_class[label] = entry
        if compare_scores is not None and boot_w is not None:
            res.comparison[label] = _compare(
                y, s, compare_scores[:, k], boot_w, None if thr is None else float(thr), mcid
            )
            res.comparison[label]["model_b"] = compare_name
    mean = mt.mean_auroc_ci(data.y, data.scores, boot_w)
    res.mean_auroc = mean.value
    res.mean_auroc_ci = _ci(mean)
    res.subgroups = _subgroups(data, boot_w)
    res.curves = _curves(data, boot_w)
    return res


def _compare(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, boot_w: np.ndarray, thr: float | None, mcid: dict[str, float]
) -> dict[str, Any]:
    diff, p = mt.paired_auroc_difference(y, a, b, boot_w)
    out: dict[str, Any] = {
        "auroc_a": mt.auroc(y, a),
        "auroc_b": mt.auroc(y, b),
        "difference": _ci(diff),
        "p_value": p,
        "mcid_auroc": mcid.get("auroc"),
        "verdict_auroc": ut.mcid_verdict(diff.low, diff.high, mcid.get("auroc")),
    }
    if thr is not None and thr < 1:
        w = np.vstack([np.ones((1, y.size)), boot_w])
        d = ut.net_benefit(y, a, thr, w)[:, 0] - ut.net_benefit(y, b, thr, w)[:, 0]
        lo, hi, _ = mt._percentile_ci(d[1:], 0.05)
        out["net_benefit_difference"] = {"value": float(d[0]), "low": lo, "high": hi, "threshold": thr}
        out["mcid_net_benefit"] = mcid.get("net_benefit")
        out["verdict_net_benefit"] = ut.mcid_verdict(lo, hi, mcid.get("net_benefit"))
    return out


def _subgroup_masks(data: EvalData) -> dict[str, dict[str, np.ndarray]]:
    groups: dict[str, dict[str, np.ndarray]] = {"sex": {}, "age": {}, "view": {}, "manufacturer": {}}
    for value in sorted(set(data.sex) - {""}):
        groups["sex"][value] = data.sex == value
    for name, lo, hi in AGE_BANDS:
        mask = (data.age >= lo) & (data.age < hi)
        if mask.any():
            groups["age"][name] = mask
    for value in sorted(set(data.view) - {""}):
        groups["view"][value] = data.view == value
    if data.manufacturer is not None:
        for value in sorted(set(data.manufacturer) - {""}):
            groups["manufacturer"][value] = data.manufacturer == value
    return {k: v for k, v in groups.items() if v}


def _subgroups(data: EvalData, boot_w: np.ndarray | None) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for attr, members in _subgroup_masks(data).items():
        for value, mask in members.items():
            sub_w = None if boot_w is None else boot_w[:, mask]  # the shared resamples, restricted
            per: dict[str, Any] = {}
            for k, label in enumerate(LABELS):
                y = data.y[mask, k]
                pos = int(y.sum())
                per[label] = {
                    "positives": pos,
                    "small_n": pos < mt.MIN_EVENTS or y.size - pos < mt.MIN_EVENTS,
                    "auroc": _ci(mt.auroc_ci(y, data.scores[mask, k], sub_w)),
                }
            out.setdefault(attr, {})[value] = {"n_images": int(mask.sum()), "per_class": per}
    return out


def _curves(data: EvalData, boot_w: np.ndarray | None) -> dict[str, Any]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    grid = np.linspace(0.0, 1.0, 101)
    curves: dict[str, Any] = {"roc": {}, "roc_band": {}, "pr": {}, "calibration": {}, "dca": {}}
    for k, label in enumerate(LABELS):
        y = data.y[:, k].astype(bool)
        s = data.scores[:, k]
        curves["calibration"][label] = mt.calibration_bins(y, s)
        if not 0 < y.sum() < y.size:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        prec, rec, _ = precision_recall_curve(y, s)
        curves["roc"][label] = (fpr, tpr)
        curves["pr"][label] = (rec, prec)
        t = ut.DCA_THRESHOLDS
        dca = {"t": t, "model": ut.net_benefit(y, s, t), "all": ut.net_benefit_treat_all(y, t)}
        if boot_w is not None and boot_w.shape[0] >= 10:
            curves["roc_band"][label] = (grid, *_roc_band(y, s, boot_w, grid))
            nb = ut.net_benefit(y, s, t, boot_w)
            dca["low"], dca["high"] = np.nanpercentile(nb, [2.5, 97.5], axis=0)
        curves["dca"][label] = dca
    return curves


def _roc_band(
    y: np.ndarray, s: np.ndarray, boot_w: np.ndarray, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise 95% band of the bootstrap ROC curves' sensitivity at each false-positive rate."""
    _, tp, fp = mt.weighted_roc_counts(y, s, boot_w)
    ok = (tp[:, -1] > 0) & (fp[:, -1] > 0)
    zero = np.zeros((tp.shape[0], 1))
    tpr = np.hstack([zero, tp / np.maximum(tp[:, -1:], 1e-12)])[ok]
    fpr = np.hstack([zero, fp / np.maximum(fp[:, -1:], 1e-12)])[ok]
    curves = np.stack([np.interp(grid, f, t) for f, t in zip(fpr, tpr, strict=True)])
    lo, hi = np.percentile(curves, [2.5, 97.5], axis=0)
    return lo, hi


def write_report(result: EvalResult, out_dir: str | Path, *, plots: bool = True) -> Path:
    """Write the report files into ``out_dir``; return the Markdown report's path."""
    from chexnet_dicom.evaluate.plots import plot_all
    from chexnet_dicom.evaluate.render import markdown, to_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = plot_all(result, out) if plots else []
    md = markdown(result, images)
    atomic_write(out / "report.md", md)
    atomic_write(out / "report.html", to_html(md))
    atomic_write(out / "metrics.json", json.dumps(result.to_json(), indent=2, allow_nan=True, default=float))
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["label", "positives", "auroc", "auroc_low", "auroc_high", "pr_auc", "ece", "small_n"])
    for label, e in result.per_class.items():
        a = e["auroc"]
        w.writerow(
            [
                label,
                e["positives"],
                repr(a["value"]),
                a["low"],
                a["high"],
                e["pr_auc"],
                e["ece"],
                e["small_n"],
            ]
        )
    atomic_write(out / "per_class.csv", table.getvalue())
    log.info("evaluation report written (%d images)", result.n_images)
    return out / "report.md"
