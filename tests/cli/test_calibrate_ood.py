"""``chexdcm weights calibrate-ood``: reference statistics for imported weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexnet_dicom.cli import main
from chexnet_dicom.drift import load_reference
from chexnet_dicom.model.backends import load_predictor
from chexnet_dicom.model.card import ModelCard
from chexnet_dicom.preprocess import prepare_model_input
from tests.helpers.bundles import make_bundle, synthetic_images


@pytest.mark.slow
def test_calibrate_ood_writes_checked_statistics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHEXDCM_CACHE", str(tmp_path / "cache"))
    card_path = make_bundle(tmp_path / "b", seed=1)
    weights_before = ModelCard.read(card_path).weights_sha256
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    images = synthetic_images(24)
    for i, im in enumerate(images):
        Image.fromarray((im * 255).astype(np.uint8)).save(ref_dir / f"{i:02d}.png")
    assert main(["weights", "calibrate-ood", str(card_path), "--reference", str(ref_dir)]) == 0
    out = capsys.readouterr().out
    assert "fitted on 19 images, thresholds on 5" in out and "mahalanobis (default)" in out
    card = ModelCard.read(card_path)
    assert card.weights_sha256 == weights_before  # the weights are untouched
    assert card.ood["images"]["source"] == "reference folder ref"
    assert (card_path.parent / card.ood["file"]).is_file()
    pred = load_predictor(card_path, backend="torch")
    pre = card.preprocessing
    x = prepare_model_input(images[0], resize=pre.resize, input_size=pre.input_size)
    p = pred.predict(x, cams=False)
    assert p.ood_score is not None and p.ood_method == "mahalanobis"
    assert p.ood_threshold == pytest.approx(card.ood["thresholds"]["mahalanobis"], rel=1e-5)
    assert main(["weights", "info", str(card_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ood"]["sha256"] == card.ood["sha256"]
    assert info["drift"]["sha256"] == card.drift["sha256"] and card.drift["size"] == 24
    reference = load_reference(card_path.parent, card.drift)
    assert reference.components is not None and reference.components.shape[1] == p.features.shape[0]
    assert "drift reference: " + card.drift["file"] in out


def test_calibrate_ood_without_images_is_a_usage_error(tmp_path: Path) -> None:
    card_path = make_bundle(tmp_path / "b", seed=1)
    (tmp_path / "empty").mkdir()
    assert main(["weights", "calibrate-ood", str(card_path), "--reference", str(tmp_path / "empty")]) == 2
