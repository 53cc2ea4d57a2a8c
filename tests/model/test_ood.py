"""Out-of-distribution scores: the formulas, the statistics beside the weights, both backends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from scipy.special import logsumexp
from sklearn.covariance import LedoitWolf

from chexnet_dicom.errors import ConfigError, WeightsError
from chexnet_dicom.model import ood
from chexnet_dicom.model.backends import load_predictor
from chexnet_dicom.model.card import ModelCard
from tests.helpers.bundles import make_bundle


def test_mahalanobis_matches_sklearn_and_scipy() -> None:
    # pytorch-ood needs torchvision (not installed here): check against two other
    # implementations of the published formula instead.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8)) @ rng.standard_normal((8, 8))
    y = rng.standard_normal((5, 8)) * 3
    lw = LedoitWolf().fit(x)
    ours = ood.mahalanobis_scores(y, lw.location_, lw.precision_)
    np.testing.assert_allclose(ours, lw.mahalanobis(y), rtol=1e-10)  # sklearn: squared distances
    ref = [scipy_mahalanobis(v, lw.location_, lw.precision_) ** 2 for v in y]
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_the_predictor_score_is_the_distance_through_a_float32_factor() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((120, 64)) * rng.uniform(0.1, 3.0, 64)
    lw = LedoitWolf().fit(x)
    ref = ood.OodReference(lw.location_, lw.precision_, {"mahalanobis": 1.0})
    y = rng.standard_normal((9, 64)) * 2.0
    got = ref.scores("mahalanobis", y.astype(np.float32), np.zeros((9, 14)))
    assert got is not None and got.dtype == np.float64
    np.testing.assert_allclose(got, ood.mahalanobis_scores(y, lw.location_, lw.precision_), rtol=1e-4)
    factor = ood.whitening_factor(lw.precision_)
    assert factor.dtype == np.float32 and factor.flags.c_contiguous
    # a precision that is only positive semi-definite (no Cholesky factor) keeps its quadratic form
    v = rng.standard_normal((64, 8))
    singular = v @ v.T
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(singular)
    f = ood.whitening_factor(singular).astype(np.float64)
    np.testing.assert_allclose(
        np.einsum("nd,nd->n", y @ f, y @ f), np.einsum("nd,nd->n", y @ singular, y), rtol=1e-3
    )
    with pytest.raises(WeightsError, match="non-finite"):
        ood.OodReference(np.full(4, np.nan), np.eye(4), {})


def test_energies_follow_the_published_formulas() -> None:
    logits = np.array([[-800.0, 0.0, 3.0], [50.0, -2.0, 1.0], [0.0, 0.0, 0.0]])
    # joint energy (Wang et al. 2021): -sum_c log(1 + exp(f_c)), each label a 2-way softmax
    joint = [-sum(logsumexp([0.0, f]) for f in row) for row in logits]
    np.testing.assert_allclose(ood.energy_scores(logits), joint, rtol=1e-12)
    np.testing.assert_allclose(ood.energy_scores(logits)[2], -3 * np.log(2.0), rtol=1e-12)
    # softmax energy (Liu et al. 2020): -T logsumexp(f / T)
    np.testing.assert_allclose(ood.energy_lse_scores(logits), -logsumexp(logits, axis=1), rtol=1e-12)
    np.testing.assert_allclose(
        ood.energy_lse_scores(logits, 2.0), -2.0 * logsumexp(logits / 2.0, axis=1), rtol=1e-12
    )


def test_threshold_and_detection_metrics() -> None:
    inside = np.arange(100, dtype=float)
    assert ood.threshold_at(inside) == pytest.approx(94.05)
    assert np.mean(inside < ood.threshold_at(inside)) == pytest.approx(0.95)
    auroc, fpr = ood.detection_metrics(inside, inside + 1000)
    assert auroc == 1.0 and fpr == 0.0
    auroc, fpr = ood.detection_metrics(inside, inside)
    assert auroc == pytest.approx(0.5) and fpr == pytest.approx(0.95)
    with pytest.raises(ConfigError):
        ood.threshold_at(np.array([]))


def test_fit_save_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    fit = rng.standard_normal((40, 16))
    val = rng.standard_normal((20, 16))
    val_logits = rng.standard_normal((20, 14))
    ref = ood.fit_reference(fit, val, val_logits, images={"source": "synthetic"})
    # the threshold keeps 95% of the validation images below it, for every method
    for method in ood.METHODS:
        s = ref.scores(method, val, val_logits)
        assert s is not None and np.mean(s < ref.thresholds[method]) == pytest.approx(0.95)
    assert ref.scores("mahalanobis", None, val_logits) is None
    saved = ood.save_reference(ref, tmp_path, "m")
    loaded = ood.load_reference(tmp_path, saved.card_entry())
    np.testing.assert_allclose(loaded.mean, ref.mean)
    np.testing.assert_allclose(loaded.precision, ref.precision)
    assert loaded.images == {"source": "synthetic", "fit": 40, "validation": 20}
    assert loaded.sha256 == saved.sha256 and len(loaded.sha256) == 64
    # an altered statistics file is refused, never used
    path = tmp_path / saved.file
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        ood.load_reference(tmp_path, saved.card_entry())
    with pytest.raises(WeightsError, match="beside the card"):
        ood.load_reference(tmp_path, {**saved.card_entry(), "file": "../x.ood.safetensors"})


@pytest.mark.parametrize("backend", [pytest.param("torch", marks=pytest.mark.slow), "onnxruntime"])
def test_predictor_scores_in_the_same_pass(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    monkeypatch.setenv("CHEXDCM_CACHE", str(tmp_path / "cache"))
    card_path = make_bundle(tmp_path / "b", seed=3)
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((3, 64, 64)).astype(np.float32) * 0.5 for _ in range(12)]
    plain = load_predictor(card_path, backend=backend, batch_size=4)
    before = plain.predict_many(inputs, cams=False)
    assert all(p.ood_score is None and p.out_of_distribution is None for p in before)
    assert "calibrate-ood" in before[0].ood_note
    feats = np.stack([p.features for p in before if p.features is not None])
    logits = np.stack([p.logits for p in before if p.logits is not None])
    assert feats.shape == (12, 1024) and logits.shape == (12, 14)
    # the logits carried are those of the probabilities
    np.testing.assert_allclose(
        1 / (1 + np.exp(-logits)), np.stack([p.probabilities for p in before]), atol=1e-6
    )
    ref = ood.fit_reference(feats[:8], feats[8:], logits[8:], images={"source": "test inputs"})
    saved = ood.attach_reference(card_path, ref)
    assert ModelCard.read(card_path).ood["sha256"] == saved.sha256
    calibrated = load_predictor(card_path, backend=backend, batch_size=4)
    after = calibrated.predict_many([*inputs, np.full((3, 64, 64), 3.0, dtype=np.float32)], cams=True)
    want = ood.mahalanobis_scores(feats, ref.mean, ref.precision)
    got = np.array([p.ood_score for p in after[:12]])
    np.testing.assert_allclose(got, want, rtol=1e-3)
    assert all(p.ood_method == "mahalanobis" and p.ood_note == "" for p in after)
    assert after[0].ood_threshold == pytest.approx(ref.thresholds["mahalanobis"], rel=1e-5)
    assert after[-1].out_of_distribution is True  # a flat bright input is far from the reference
    energy = load_predictor(card_path, backend=backend, ood_method="energy").predict(inputs[0], cams=False)
    assert energy.ood_method == "energy"
    assert energy.ood_score == pytest.approx(float(ood.energy_scores(logits[:1])[0]), rel=1e-4)
    with pytest.raises(ConfigError):
        load_predictor(card_path, backend=backend, ood_method="knn")


@pytest.mark.slow
def test_old_onnx_graph_without_features_still_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    import torch

    from chexnet_dicom.model import onnx_backend
    from chexnet_dicom.model.card import load_bundle

    monkeypatch.setenv("CHEXDCM_CACHE", str(tmp_path / "cache"))
    card_path = make_bundle(tmp_path / "b", seed=3)
    net, card = load_bundle(card_path)
    module = onnx_backend._head_module(net)

    class TwoOutputs(torch.nn.Module):  # what a format-1 graph gave
        def __init__(self) -> None:
            super().__init__()
            self.m = module

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits, cams, _ = self.m(x)
            return logits, cams

    monkeypatch.setattr(onnx_backend, "OUTPUT_NAMES", ("logits", "cams"))
    graph, _ = onnx_backend._export_bytes(TwoOutputs().eval(), 64)
    monkeypatch.undo()
    rng = np.random.default_rng(0)
    ref = ood.fit_reference(rng.random((5, 1024)), rng.random((3, 1024)), rng.random((3, 14)))
    pred = onnx_backend.OrtPredictor(graph, card, np.zeros(14), ood_reference=ref)
    p = pred.predict(np.zeros((3, 64, 64), dtype=np.float32))
    assert p.features is None and p.ood_score is None and "no pooled features" in p.ood_note
    assert p.cams is not None
    # the energy score needs only the logits, so it still works
    pe = onnx_backend.OrtPredictor(graph, card, np.zeros(14), ood_reference=ref, ood_method="energy")
    assert pe.predict(np.zeros((3, 64, 64), dtype=np.float32)).ood_score is not None
    assert json.loads(card_path.read_text())["ood"] == {}


def test_ood_policy_and_method_are_configuration() -> None:
    from chexnet_dicom.config import load_analysis_config

    cfg = load_analysis_config(None, {"runtime.ood_method": "energy", "outputs.ood": "flag"})
    assert cfg.runtime.ood_method == "energy" and cfg.outputs.ood == "flag"
    assert load_analysis_config(None, {"outputs.ood": "withhold"}).outputs.ood == "withhold"
    assert load_analysis_config(None, {}).outputs.ood == "flag"  # the default reports and flags
    with pytest.raises(ConfigError, match="withhold"):
        load_analysis_config(None, {"outputs.ood": "hide"})
    with pytest.raises(ConfigError):
        load_analysis_config(None, {"runtime.ood_method": "knn"})
