"""Classification metrics with patient-level bootstrap confidence intervals.

Point estimates come from scikit-learn (``roc_auc_score``, ``average_precision_score``).
Bootstrap resampling is done at the *patient* level (all images of a drawn patient enter
together, as often as the patient is drawn), which is expressed as integer weights per
image; the weighted AUROC of every resample is computed exactly (ties count one half)
and vectorised over resamples, so 1,000 resamples of 22,000 images take seconds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = [
    "BinaryCI",
    "auroc",
    "bootstrap_weights",
    "mean_auroc_ci",
    "calibration_bins",
    "expected_calibration_error",
    "MIN_EVENTS",
    "operating_point_stats",
    "rechosen_threshold_stats",
    "wilson_ci",
    "paired_auroc_difference",
    "pr_auc",
    "threshold_at_sensitivity",
    "weighted_auroc",
    "weighted_roc_counts",
    "youden_threshold",
]


@dataclass(frozen=True)
class BinaryCI:
    """A point estimate with a percentile bootstrap interval.

    Attributes
    ----------
    value
        Estimate on the full data.
    low, high
        Percentile bounds (NaN when not computable).
    n_boot
        Number of valid resamples used.
    """

    value: float
    low: float
    high: float
    n_boot: int

    def fmt(self, digits: int = 3) -> str:
        """``0.812 (0.790-0.833)``."""
        if not np.isfinite(self.value):
            return "n/a"
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


def _as_binary(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y.astype(bool)


def auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (NaN when only one class is present)."""
    y = _as_binary(y_true)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(score, dtype=np.float64)))


def pr_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve; NaN without positives)."""
    y = _as_binary(y_true)
    if not y.any():
        return float("nan")
    return float(average_precision_score(y, np.asarray(score, dtype=np.float64)))


def bootstrap_weights(groups: Sequence[object] | np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Integer image weights for ``n_boot`` patient-level bootstrap resamples.

    Parameters
    ----------
    groups
        Patient identifier of each image.
    n_boot
        Number of resamples.
    seed
        Seed of the NumPy generator.

    Returns
    -------
    numpy.ndarray
        (n_boot, n_images) int32: how many times each image's patient was drawn.
    """
    _, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.size else 0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    counts = np.zeros((n_boot, n_groups), dtype=np.int32)
    rows = np.repeat(np.arange(n_boot), n_groups)
    np.add.at(counts, (rows, draws.ravel()), 1)
    return counts[:, inverse]


def weighted_auroc(y_true: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Exact AUROC under integer/real sample weights, vectorised over weight rows.

    ``AUC = sum_{i pos, j neg} w_i w_j ([s_i > s_j] + 0.5 [s_i = s_j]) / (W_pos W_neg)``.

    Parameters
    ----------
    y_true
        (n,) 0/1 labels.
    score
        (n,) scores.
    weights
        (n,) or (B, n) non-negative weights.

    Returns
    -------
    numpy.ndarray
        (B,) AUROC per weight row (NaN where a class has zero weight); a 0-d array
        when ``weights`` is 1-D.
    """
    y = _as_binary(y_true)
    s = np.asarray(score, dtype=np.float64)
    squeeze = np.ndim(weights) == 1
    w_all = np.atleast_2d(weights)
    chunk = 128
    if w_all.shape[0] > chunk:
        parts = [weighted_auroc(y, s, w_all[i : i + chunk]) for i in range(0, w_all.shape[0], chunk)]
        return np.concatenate(parts)
    w2 = w_all.astype(np.float64)
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    pos_sorted = y[order]
    w_sorted = w2[:, order]
    pos_w = np.add.reduceat(np.where(pos_sorted, w_sorted, 0.0), starts, axis=1)
    neg_w = np.add.reduceat(np.where(pos_sorted, 0.0, w_sorted), starts, axis=1)
    neg_below = np.cumsum(neg_w, axis=1) - neg_w
    num = (pos_w * (neg_below + 0.5 * neg_w)).sum(axis=1)
    den = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out[0] if squeeze else out


def _percentile_ci(values: np.ndarray, alpha: float) -> tuple[float, float, int]:
    v = values[np.isfinite(values)]
    if v.size < 10:
        return float("nan"), float("nan"), int(v.size)
    lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi), int(v.size)


def auroc_ci(
    y_true: np.ndarray, score: np.ndarray, boot_w: np.ndarray | None, alpha: float = 0.05
) -> BinaryCI:
    """AUROC with a percentile interval over precomputed bootstrap weights."""
    value = auroc(y_true, score)
    if boot_w is None or boot_w.shape[0] == 0 or not np.isfinite(value):
        return BinaryCI(value, float("nan"), float("nan"), 0)
    lo, hi, n = _percentile_ci(weighted_auroc(y_true, score, boot_w), alpha)
    return BinaryCI(value, lo, hi, n)


def mean_auroc_ci(
    y_true: np.ndarray, scores: np.ndarray, boot_w: np.ndarray | None, alpha: float = 0.05
) -> BinaryCI:
    """Mean AUROC over the classes with both outcomes, with a percentile bootstrap interval.

    Each resample's mean is taken over the classes whose AUROC is defined in it (a class
    with no positive drawn is left out of that resample's mean), over the same bootstrap
    weights as the per-class intervals, so that the mean's interval keeps the
    correlation between classes that a patient-level resample carries.

    Parameters
    ----------
    y_true, scores
        (n, C) labels and scores.
    boot_w
        (B, n) bootstrap weights (:func:`bootstrap_weights`), or None for no interval.
    alpha
        1 - the interval's coverage.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    defined = [j for j in range(y.shape[1]) if 0 < _as_binary(y[:, j]).sum() < y.shape[0]]
    if not defined:
        return BinaryCI(float("nan"), float("nan"), float("nan"), 0)
    value = float(np.mean([auroc(y[:, j], s[:, j]) for j in defined]))
    if boot_w is None or boot_w.shape[0] == 0:
        return BinaryCI(value, float("nan"), float("nan"), 0)
    per_class = np.stack([weighted_auroc(y[:, j], s[:, j], boot_w) for j in defined], axis=1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no defined class
        means = np.nanmean(per_class, axis=1)
    lo, hi, n = _percentile_ci(means, alpha)
    return BinaryCI(value, lo, hi, n)


def youden_threshold(y_true: np.ndarray, score: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (Youden's J)."""
    y = _as_binary(y_true)
    if y.all() or not y.any():
        return 0.5
    fpr, tpr, thr = roc_curve(y, score)
    j = tpr - fpr
    best = int(np.argmax(j[1:]) + 1)  # skip the +inf threshold
    return float(min(thr[best], 1.0))


def threshold_at_sensitivity(y_true: np.ndarray, score: np.ndarray, sensitivity: float) -> float:
    """Highest threshold whose sensitivity is at least ``sensitivity``."""
    y = _as_binary(y_true)
    if not y.any():
        return 0.5
    pos_scores = np.sort(np.asarray(score, dtype=np.float64)[y])[::-1]
    k = int(np.ceil(sensitivity * pos_scores.size)) - 1
    return float(pos_scores[min(max(k, 0), pos_scores.size - 1)])


def threshold_at_specificity(y_true: np.ndarray, score: np.ndarray, specificity: float) -> float:
    """Lowest threshold whose specificity (negatives scored below it) is at least ``specificity``.

    A score at or above the threshold counts as positive.  Ties are kept below the
    threshold, so the specificity reached is never less than asked for.
    """
    y = _as_binary(y_true)
    neg = np.sort(np.asarray(score, dtype=np.float64)[~y])
    if neg.size == 0:
        return 0.5
    k = int(np.ceil(float(specificity) * neg.size))
    if k <= 0:
        return float(neg[0])
    return float(min(np.nextafter(neg[min(k, neg.size) - 1], np.inf), 1.0))


def paired_auroc_difference(
    y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, boot_w: np.ndarray, alpha: float = 0.05
) -> tuple[BinaryCI, float]:
    """AUROC(a) - AUROC(b) on the same resamples, with a two-sided bootstrap p-value.

    Returns
    -------
    (BinaryCI, float)
        The difference with its interval, and ``p = min(1, 2 * min(P(d <= 0), P(d >= 0)))``.
    """
    diff_point = auroc(y_true, score_a) - auroc(y_true, score_b)
    d = weighted_auroc(y_true, score_a, boot_w) - weighted_auroc(y_true, score_b, boot_w)
    d = d[np.isfinite(d)]
    if d.size < 10:
        return BinaryCI(diff_point, float("nan"), float("nan"), int(d.size)), float("nan")
    lo, hi, n = _percentile_ci(d, alpha)
    p = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    return BinaryCI(diff_point, lo, hi, n), p


def calibration_bins(
    y_true: np.ndarray, score: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width reliability bins.

    Returns
    -------
    (mean_predicted, observed_fraction, count)
        Each (n_bins,); empty bins have NaN means and count 0.
    """
    y = _as_binary(y_true).astype(np.float64)
    s = np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)
    idx = np.minimum((s * n_bins).astype(int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(idx, weights=s, minlength=n_bins) / count
        observed = np.bincount(idx, weights=y, minlength=n_bins) / count
    return mean_pred, observed, count


def expected_calibration_error(y_true: np.ndarray, score: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: count-weighted mean |observed - predicted| over bins."""
    mean_pred, observed, count = calibration_bins(y_true, score, n_bins)
    ok = count > 0
    return float(np.sum(count[ok] * np.abs(observed[ok] - mean_pred[ok])) / count.sum())


#: Fewer positives (or negatives) than this and a finding's intervals are marked as unreliable.
MIN_EVENTS = 10


def wilson_ci(k: float, n: float, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (statsmodels; NaN when ``n == 0``)."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return float("nan"), float("nan")
    lo, hi = proportion_confint(round(k), round(n), alpha=alpha, method="wilson")
    return float(lo), float(hi)


def _counts(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted tp, fn, fp, tn per weight row of ``w`` (B, n)."""
    return (
        (w * (pred & y)).sum(axis=1),
        (w * (~pred & y)).sum(axis=1),
        (w * (pred & ~y)).sum(axis=1),
        (w * (~pred & ~y)).sum(axis=1),
    )


def _rates(
    tp: np.ndarray, fn: np.ndarray, fp: np.ndarray, tn: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    n = tp + fn + fp + tn
    odds = threshold / (1.0 - threshold) if threshold < 1 else np.inf
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "alerts_per_100": 100 * (tp + fp) / n,
            "true_findings_per_100": 100 * tp / n,
            "net_benefit": tp / n - fp / n * odds,
        }


#: Proportions whose interval switches to Wilson when their denominator is small.
_DENOMINATORS = {
    "sensitivity": ("tp", "fn"),
    "specificity": ("tn", "fp"),
    "ppv": ("tp", "fp"),
    "npv": ("tn", "fn"),
}


def operating_point_stats(
    y_true: np.ndarray,
    score: np.ndarray,
    threshold: float,
    boot_w: np.ndarray | None = None,
    alpha: float = 0.05,
) -> dict[str, BinaryCI]:
    """Metrics of the calls ``score >= threshold`` with 95% intervals.

    Sensitivity, specificity, PPV and NPV get the patient-level bootstrap percentile
    interval over ``boot_w``, except when their denominator holds fewer than
    :data:`MIN_EVENTS` images or the bootstrap interval has zero width (every resample
    gave the same proportion, as 0/7 or 7/7 always do): then the Wilson score interval,
    which is never degenerate.  F1, alerts and true findings per 100 and net benefit
    (``TP/n - FP/n * t/(1-t)``, Vickers & Elkin 2006) use the bootstrap only.

    Returns
    -------
    dict
        name -> :class:`BinaryCI`; also ``"tp"``, ``"fn"``, ``"fp"``, ``"tn"`` counts as
        BinaryCI values without an interval.
    """
    y = _as_binary(y_true)
    pred = np.asarray(score) >= threshold
    w = np.ones((1, y.size)) if boot_w is None else np.vstack([np.ones((1, y.size)), boot_w])
    tp, fn, fp, tn = _counts(y, pred, w)
    stats = _rates(tp, fn, fp, tn, threshold)
    counts = {"tp": tp[0], "fn": fn[0], "fp": fp[0], "tn": tn[0]}
    out: dict[str, BinaryCI] = {}
    for name, values in stats.items():
        lo, hi, nb = _percentile_ci(values[1:], alpha) if boot_w is not None else (np.nan, np.nan, 0)
        if name in _DENOMINATORS and boot_w is not None:
            a, b = _DENOMINATORS[name]
            den = counts[a] + counts[b]
            if den < MIN_EVENTS or not (np.isfinite(lo) and hi > lo):
                lo, hi = wilson_ci(counts[a], den, alpha)
                nb = 0  # 0 resamples: the interval is Wilson's
        out[name] = BinaryCI(float(values[0]), lo, hi, nb)
    for name, value in counts.items():
        out[name] = BinaryCI(float(value), float("nan"), float("nan"), 0)
    return out


def weighted_roc_counts(
    y_true: np.ndarray, score: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted true and false positives at every distinct threshold, per weight row.

    Returns
    -------
    (thresholds, tp, fp)
        (T,) distinct scores, highest first; (B, T) cumulative weighted positives and
        negatives scored at or above each threshold.
    """
    y = _as_binary(y_true)
    s = np.asarray(score, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    w = np.atleast_2d(weights).astype(np.float64)[:, order]
    pos = y[order]
    tp = np.cumsum(np.add.reduceat(np.where(pos, w, 0.0), starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(np.where(pos, 0.0, w), starts, axis=1), axis=1)
    return s_sorted[starts], tp, fp


def rechosen_threshold_stats(
    y_true: np.ndarray,
    score: np.ndarray,
    rule: str,
    boot_w: np.ndarray,
    target: float = 0.9,
    alpha: float = 0.05,
) -> dict[str, dict[str, float]]:
    """Sensitivity and specificity of a threshold chosen on the scored data, honestly.

    The threshold is re-chosen inside every bootstrap resample (``rule`` ``"youden"``:
    maximum of sensitivity + specificity - 1; ``"sensitivity"``: the highest threshold
    reaching ``target``), so that the percentile interval includes the choice.  The
    optimism of the apparent estimate is Harrell's bootstrap estimate: the mean over
    resamples of (metric in the resample - metric of the resample's threshold on the
    full data); ``corrected`` is the apparent value minus it.

    Returns
    -------
    dict
        ``sensitivity`` and ``specificity`` -> {"value", "low", "high", "optimism", "corrected"}.
    """
    y = _as_binary(y_true)
    w_all = np.vstack([np.ones((1, y.size)), np.atleast_2d(boot_w)])
    thresholds, tp, fp = weighted_roc_counts(y, score, w_all)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / tp[:, -1:]
        fpr = fp / fp[:, -1:]
    ok = np.isfinite(tpr[:, -1]) & np.isfinite(fpr[:, -1])
    if rule == "youden":
        idx = np.argmax(np.nan_to_num(tpr - fpr, nan=-2.0), axis=1)
    elif rule == "sensitivity":
        idx = np.argmax(np.nan_to_num(tpr, nan=0.0) >= target - 1e-12, axis=1)
    else:
        raise ValueError(f"unknown threshold rule {rule!r}")
    rows = np.arange(w_all.shape[0])
    out: dict[str, dict[str, float]] = {}
    for name, resampled, on_full in (
        ("sensitivity", tpr[rows, idx], tpr[0, idx]),
        ("specificity", 1 - fpr[rows, idx], 1 - fpr[0, idx]),
    ):
        apparent = float(resampled[0])
        boot = ok[1:]
        lo, hi, _ = _percentile_ci(resampled[1:][boot], alpha)
        optimism = float(np.mean(resampled[1:][boot] - on_full[1:][boot])) if boot.any() else float("nan")
        out[name] = {
            "value": apparent,
            "low": lo,
            "high": hi,
            "optimism": optimism,
            "corrected": apparent - optimism,
            "threshold": float(thresholds[idx[0]]),
        }
    return out
