"""Honest intervals, the deployed table, clinical utility and the label audit on small tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chexnet_dicom.evaluate import metrics as mt
from chexnet_dicom.evaluate import utility as ut
from chexnet_dicom.evaluate.tables import EvalData
from chexnet_dicom.model.labels import LABELS


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(0, 7), (3, 4), (7, 7), (40, 100)])
def test_wilson_matches_the_closed_form(k: int, n: int) -> None:
    lo, hi = mt.wilson_ci(k, n)
    assert (lo, hi) == pytest.approx(_wilson(k, n), abs=1e-12)
    assert hi > lo


def test_zero_of_seven_gets_a_wilson_interval_not_a_degenerate_bootstrap() -> None:
    y = np.r_[np.ones(7), np.zeros(68)].astype(int)
    s = np.r_[np.full(7, 0.1), np.linspace(0, 1, 68)]
    boot = mt.bootstrap_weights(np.arange(75), 200, seed=0)
    st = mt.operating_point_stats(y, s, 0.5, boot)
    assert st["tp"].value == 0 and st["fn"].value == 7
    sens = st["sensitivity"]
    assert sens.value == 0 and sens.n_boot == 0  # 0 resamples: Wilson's
    assert (sens.low, sens.high) == pytest.approx(_wilson(0, 7), abs=1e-12)
    assert st["specificity"].n_boot == 200 and st["specificity"].high > st["specificity"].low


def _data(n: int = 240, seed: int = 0, manufacturer: str | None = "ACME") -> EvalData:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(LABELS))) < 0.25).astype(np.int8)
    s = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.0, y.shape))))
    return EvalData(
        ids=np.array([f"i{i}" for i in range(n)], dtype=object),
        y=y,
        scores=s,
        patients=np.array([f"p{i // 2}" for i in range(n)], dtype=object),
        sex=np.array(["MF"[i % 2] for i in range(n)], dtype=object),
        age=np.full(n, 50.0),
        view=np.array(["PA"] * n, dtype=object),
        manufacturer=None if manufacturer is None else np.array([manufacturer] * n, dtype=object),
    )


def test_a_subgroup_equal_to_the_cohort_has_the_cohorts_intervals() -> None:
    from chexnet_dicom.evaluate.report import evaluate

    res = evaluate(_data(), n_boot=200, seed=3)
    for label in LABELS:
        whole = res.per_class[label]["auroc"]
        for attr, value in (("manufacturer", "ACME"), ("view", "PA"), ("age", "40-59")):
            sub = res.subgroups[attr][value]["per_class"][label]["auroc"]
            assert sub == whole, (label, attr)
    m = res.mean_auroc_ci
    assert m["low"] < m["value"] < m["high"]
    assert res.to_json()["bootstrap_seed"] == 3


def test_data_chosen_thresholds_are_rechosen_per_resample_and_corrected_for_optimism() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(150) < 0.3).astype(int)
    s = rng.random(150)  # no signal: any apparent Youden gain is optimism
    boot = mt.bootstrap_weights(np.arange(150), 300, seed=0)
    st = mt.rechosen_threshold_stats(y, s, "youden", boot)
    thr = mt.youden_threshold(y, s)
    apparent = mt.operating_point_stats(y, s, thr)
    assert st["sensitivity"]["threshold"] == pytest.approx(thr)
    assert st["sensitivity"]["value"] == pytest.approx(apparent["sensitivity"].value)
    assert st["specificity"]["value"] == pytest.approx(apparent["specificity"].value)
    j_apparent = st["sensitivity"]["value"] + st["specificity"]["value"] - 1
    j_corrected = st["sensitivity"]["corrected"] + st["specificity"]["corrected"] - 1
    assert j_apparent > 0 and j_corrected < j_apparent - 0.02, (j_apparent, j_corrected)
    sens = mt.rechosen_threshold_stats(y, s, "sensitivity", boot, target=0.9)["sensitivity"]
    assert sens["value"] >= 0.9 and sens["low"] >= 0.9 - 1e-9


def test_net_benefit_equals_dcurves_and_the_closed_form() -> None:
    import pandas as pd
    from dcurves import dca

    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.2).astype(int)
    p = np.clip(rng.beta(2, 5, 300) + 0.2 * y, 0, 1)
    t = np.round(np.arange(0.01, 0.96, 0.05), 2)
    ref = dca(data=pd.DataFrame({"y": y, "p": p}), outcome="y", modelnames=["p"], thresholds=list(t))
    model = ref[ref["model"] == "p"].sort_values("threshold")["net_benefit"].to_numpy()
    everyone = ref[ref["model"] == "all"].sort_values("threshold")["net_benefit"].to_numpy()
    np.testing.assert_allclose(ut.net_benefit(y, p, t), model, atol=1e-9, rtol=0)
    np.testing.assert_allclose(ut.net_benefit_treat_all(y, t), everyone, atol=1e-9, rtol=0)
    tp = ((p >= 0.3) & (y == 1)).sum()
    fp = ((p >= 0.3) & (y == 0)).sum()
    assert ut.net_benefit(y, p, 0.3)[0] == pytest.approx(tp / 300 - fp / 300 * 0.3 / 0.7, abs=1e-12)
    st = mt.operating_point_stats(y, p, 0.3)
    assert st["net_benefit"].value == pytest.approx(tp / 300 - fp / 300 * 0.3 / 0.7, abs=1e-12)
    assert st["alerts_per_100"].value == pytest.approx(100 * (tp + fp) / 300)


def test_prevalence_adjusted_ppv_npv_follow_bayes() -> None:
    out = ut.prevalence_adjusted(np.array([0.8, 0.7, 0.9]), np.array([0.9, 0.85, 0.95]), 0.05)
    assert out["ppv"]["value"] == pytest.approx(0.8 * 0.05 / (0.8 * 0.05 + 0.1 * 0.95))
    assert out["npv"]["value"] == pytest.approx(0.9 * 0.95 / (0.9 * 0.95 + 0.2 * 0.05))
    with pytest.raises(ValueError):
        ut.prevalence_adjusted(np.array([0.8]), np.array([0.9]), 1.0)


@pytest.mark.parametrize(
    ("low", "high", "mcid", "verdict"),
    [
        (-0.01, 0.05, 0.02, "not significant"),
        (0.03, 0.08, 0.02, "significant and clinically meaningful"),
        (0.005, 0.06, 0.02, "significant but below the stated MCID"),
        (-0.09, -0.04, 0.02, "significant and clinically meaningful"),
        (0.005, 0.06, None, "significant (no MCID stated)"),
    ],
)
def test_mcid_verdicts(low: float, high: float, mcid: float | None, verdict: str) -> None:
    assert ut.mcid_verdict(low, high, mcid) == verdict


def test_pr_step_curve_has_the_average_precision_as_its_area_and_no_spike() -> None:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from chexnet_dicom.evaluate.plots import _pr_steps

    rng = np.random.default_rng(1)
    y = rng.random(200) < 0.2
    s = np.round(rng.random(200) + 0.3 * y, 2)  # ties
    prec, rec, _ = precision_recall_curve(y, s)
    x, v = _pr_steps(rec, prec)
    assert np.sum(np.diff(x) * v[1:]) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert x[0] == 0 and v[0] == v[1] and np.all(np.diff(x) > 0)


def test_the_html_renders_bold_and_wraps_tables() -> None:
    from chexnet_dicom.evaluate.render import to_html

    page = to_html("| a | b |\n|---|---|\n| **mean** | `x` |\n")
    assert "**" not in page and "<strong>mean</strong>" in page and "<code>x</code>" in page
    assert "<div class='t'><table>" in page


def test_the_audit_finds_flipped_labels_far_better_than_chance() -> None:
    from chexnet_dicom.evaluate.audit import audit_labels, rescore

    rng = np.random.default_rng(0)
    n = 600
    truth = (rng.random((n, 2)) < 0.3).astype(int)
    p = np.clip(0.15 + 0.6 * truth + rng.normal(0, 0.12, truth.shape), 0.01, 0.99)
    flip = rng.random((n, 2)) < 0.08
    noisy = np.where(flip, 1 - truth, truth)
    audits = audit_labels(noisy, p, ["a", "b"])
    for k, name in enumerate(["a", "b"]):
        a = audits[name]
        top = a.order()[: int(flip[:, k].sum())]
        precision = flip[top, k].mean()
        assert precision > 3 * flip[:, k].mean(), precision
        assert a.noise_low <= a.noise_rate <= a.noise_high
        moved = rescore(noisy[:, k], p[:, k], a.flagged)
        assert moved["flagged_removed"] > moved["as_labelled"]
