"""Unit tests of the evaluation metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from chexnet_dicom.evaluate import metrics as mt


def _data(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.round(np.clip(0.5 * y + rng.normal(0.25, 0.3, n), 0, 1), 2)  # rounding makes ties
    return y, s


def test_weighted_auroc_with_unit_weights_equals_sklearn_including_ties() -> None:
    y, s = _data()
    assert len(np.unique(s)) < len(s)
    assert float(mt.weighted_auroc(y, s, np.ones_like(s))) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_weighted_auroc_equals_auroc_of_repeated_rows() -> None:
    y, s = _data(120)
    w = np.random.default_rng(3).integers(0, 4, y.size)
    rep = np.repeat(np.arange(y.size), w)
    assert float(mt.weighted_auroc(y, s, w)) == pytest.approx(roc_auc_score(y[rep], s[rep]), abs=1e-12)


def test_weighted_auroc_vectorised_rows_match_single_rows() -> None:
    y, s = _data(200)
    w = np.random.default_rng(4).integers(0, 3, (300, y.size))
    many = mt.weighted_auroc(y, s, w)
    assert many.shape == (300,)
    for i in (0, 129, 299):
        assert many[i] == pytest.approx(float(mt.weighted_auroc(y, s, w[i])), abs=1e-12)


def test_bootstrap_weights_resample_whole_patients() -> None:
    patients = np.array(["a", "a", "b", "c", "c", "c"])
    w = mt.bootstrap_weights(patients, 500, seed=7)
    assert w.shape == (500, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 5]).all()
    # three patients drawn per resample
    per_patient = w[:, [0, 2, 3]]
    assert (per_patient.sum(axis=1) == 3).all()
    assert not (w == mt.bootstrap_weights(patients, 500, seed=8)).all()
    assert (w == mt.bootstrap_weights(patients, 500, seed=7)).all()


def test_auroc_ci_contains_the_point_estimate_and_narrows_with_data() -> None:
    y, s = _data(200)
    small = mt.auroc_ci(y, s, mt.bootstrap_weights(np.arange(200), 300))
    y2, s2 = _data(3000)
    big = mt.auroc_ci(y2, s2, mt.bootstrap_weights(np.arange(3000), 300))
    assert small.low < small.value < small.high
    assert (big.high - big.low) < (small.high - small.low)


def test_operating_point_stats_hand_computed() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.1, 0.3])
    st = mt.operating_point_stats(y, s, 0.5)
    assert st["sensitivity"].value == pytest.approx(2 / 3)
    assert st["specificity"].value == pytest.approx(3 / 4)
    assert st["ppv"].value == pytest.approx(2 / 3)
    assert st["f1"].value == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_thresholds() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.05])
    assert mt.youden_threshold(y, s) == pytest.approx(0.7)
    assert mt.threshold_at_sensitivity(y, s, 1.0) == pytest.approx(0.3)
    assert mt.threshold_at_sensitivity(y, s, 0.5) == pytest.approx(0.8)


def test_paired_difference_detects_a_better_model() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 800)
    good = y + rng.normal(0, 0.6, 800)
    bad = y + rng.normal(0, 1.5, 800)
    w = mt.bootstrap_weights(np.arange(800), 400)
    diff, p = mt.paired_auroc_difference(y, good, bad, w)
    assert diff.value > 0 and diff.low > 0 and p < 0.01
    same, p_same = mt.paired_auroc_difference(y, good, good, w)
    assert same.value == 0 and p_same == 1.0


def test_expected_calibration_error() -> None:
    y = np.array([1, 0] * 50)
    assert mt.expected_calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.0)
    assert mt.expected_calibration_error(y, np.full(100, 0.95)) == pytest.approx(0.45)


def test_single_class_gives_nan_not_an_error() -> None:
    assert np.isnan(mt.auroc(np.zeros(5), np.linspace(0, 1, 5)))
    assert np.isnan(float(mt.weighted_auroc(np.zeros(5), np.linspace(0, 1, 5), np.ones(5))))


def test_mean_auroc_ci_is_the_mean_of_defined_classes_with_a_resampled_interval() -> None:
    mean_auroc_ci = mt.mean_auroc_ci

    rng = np.random.default_rng(5)
    n = 120
    y = np.zeros((n, 3), dtype=int)
    y[:40, 0] = 1
    y[:60, 1] = 1  # class 2 has no positive: left out of the mean
    s = rng.random((n, 3)) + 0.6 * y
    w = mt.bootstrap_weights(np.arange(n), 500, seed=1)
    ci = mean_auroc_ci(y, s, w)
    want = (roc_auc_score(y[:, 0], s[:, 0]) + roc_auc_score(y[:, 1], s[:, 1])) / 2
    assert ci.value == pytest.approx(want)
    assert ci.low < ci.value < ci.high and ci.high - ci.low < 0.2
    # each resample's mean: the per-class intervals' resamples averaged
    lo, hi = mt.auroc_ci(y[:, 0], s[:, 0], w), mt.auroc_ci(y[:, 1], s[:, 1], w)
    assert min(lo.low, hi.low) <= ci.low and ci.high <= max(lo.high, hi.high)
    assert np.isnan(mean_auroc_ci(y, s, None).low)
