"""Clinical utility beside statistical significance.

* Decision curve analysis (Vickers & Elkin, *Med Decis Making* 2006): the net benefit of
  acting on ``score >= t``, ``NB(t) = TP/n - FP/n * t / (1 - t)``, against treating
  every patient (``prev - (1 - prev) * t / (1 - t)``) and none (0), over threshold
  probabilities ``t``.  Computed in closed form, vectorised over the shared bootstrap
  weights; the golden test checks it against the method authors' ``dcurves`` package.
* PPV and NPV recalibrated to a local prevalence ``pi`` from sensitivity and
  specificity (Bayes): ``PPV = se*pi / (se*pi + (1-sp)*(1-pi))``.
* A paired comparison read against a minimal clinically important difference (MCID).
"""

from __future__ import annotations

import numpy as np

from chexnet_dicom.evaluate.metrics import _as_binary, _percentile_ci

__all__ = [
    "DCA_THRESHOLDS",
    "mcid_verdict",
    "net_benefit",
    "net_benefit_treat_all",
    "prevalence_adjusted",
]

#: Threshold probabilities of the decision curves (dcurves' default grid without 0).
DCA_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


def net_benefit(
    y_true: np.ndarray, score: np.ndarray, thresholds: np.ndarray | float, weights: np.ndarray | None = None
) -> np.ndarray:
    """Net benefit of calling ``score >= t`` positive, for each threshold ``t``.

    Parameters
    ----------
    y_true, score
        (n,) labels and probabilities.
    thresholds
        Threshold probabilities in [0, 1).
    weights
        None, or (B, n) bootstrap weights: one row of net benefits per resample.

    Returns
    -------
    numpy.ndarray
        (T,) without weights, else (B, T).
    """
    y = _as_binary(y_true)
    s = np.asarray(score, dtype=np.float64)
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    w = np.ones((1, y.size)) if weights is None else np.atleast_2d(weights).astype(np.float64)
    calls = s[None, :] >= t[:, None]  # (T, n)
    n = w.sum(axis=1, keepdims=True)
    tp = (w * y) @ calls.T  # (B, T)
    fp = (w * ~y) @ calls.T
    with np.errstate(invalid="ignore", divide="ignore"):
        nb = tp / n - fp / n * (t / (1.0 - t))[None, :]
    return nb[0] if weights is None else nb


def net_benefit_treat_all(
    y_true: np.ndarray, thresholds: np.ndarray | float, weights: np.ndarray | None = None
) -> np.ndarray:
    """Net benefit of treating everyone: ``prev - (1 - prev) * t / (1 - t)``."""
    y = _as_binary(y_true).astype(np.float64)
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    w = np.ones((1, y.size)) if weights is None else np.atleast_2d(weights).astype(np.float64)
    prev = (w @ y) / w.sum(axis=1)
    nb = prev[:, None] - (1 - prev[:, None]) * (t / (1.0 - t))[None, :]
    return nb[0] if weights is None else nb


def prevalence_adjusted(
    sensitivity: np.ndarray, specificity: np.ndarray, prevalence: float, alpha: float = 0.05
) -> dict[str, dict[str, float]]:
    """PPV and NPV at a target prevalence from (apparent, then bootstrap) sensitivity/specificity.

    Parameters
    ----------
    sensitivity, specificity
        (1 + B,) values: the first on the full data, then one per bootstrap resample.
    prevalence
        The local prevalence in (0, 1).

    Returns
    -------
    dict
        ``ppv`` and ``npv`` -> {"value", "low", "high"} (percentile interval over the resamples).
    """
    if not 0 < prevalence < 1:
        raise ValueError("prevalence must be in (0, 1)")
    se = np.asarray(sensitivity, dtype=np.float64)
    sp = np.asarray(specificity, dtype=np.float64)
    pi = float(prevalence)
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = se * pi / (se * pi + (1 - sp) * (1 - pi))
        npv = sp * (1 - pi) / (sp * (1 - pi) + (1 - se) * pi)
    out = {}
    for name, v in (("ppv", ppv), ("npv", npv)):
        lo, hi, _ = _percentile_ci(v[1:], alpha) if v.size > 1 else (float("nan"), float("nan"), 0)
        out[name] = {"value": float(v[0]), "low": lo, "high": hi}
    return out


def mcid_verdict(low: float, high: float, mcid: float | None) -> str:
    """Read a difference's 95% interval against a minimal clinically important difference.

    * ``"not significant"``: the interval contains 0 (or is not computable).
    * ``"significant and clinically meaningful"``: the whole interval lies beyond the
      MCID on one side (``low >= mcid`` or ``high <= -mcid``), so even the least
      favourable plausible difference is at least as large as the stated MCID.
    * ``"significant but below the stated MCID"``: the interval excludes 0 but not the MCID.
    * ``"significant (no MCID stated)"`` when ``mcid`` is None.
    """
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return "not significant"
    if mcid is None:
        return "significant (no MCID stated)"
    m = abs(float(mcid))
    if low >= m or high <= -m:
        return "significant and clinically meaningful"
    return "significant but below the stated MCID"
