"""The demo model card's held-out test AUROCs are reproducible with ``chexdcm evaluate``.

The card ships with the test predictions it was scored on; evaluating them against the
official NIH labels must give the card's numbers (no hand-edited metrics).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chexnet_dicom.cli import main
from chexnet_dicom.model.card import ModelCard
from chexnet_dicom.model.labels import LABELS

DATA = Path(__file__).resolve().parents[2] / "chexnet_dicom" / "model" / "data"


def test_card_test_aurocs_reproduce_from_the_shipped_predictions(
    nih_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = ModelCard.read(DATA / "chexnet_demo.card.json")
    test = card.metrics["test"]
    preds = DATA / test["predictions_file"]
    rc = main(
        [
            "evaluate",
            "--predictions",
            str(preds),
            "--labels",
            str(nih_dir / "labels.csv"),
            "--out",
            str(tmp_path),
            "--bootstrap",
            "0",
            "--no-plots",
            "--json",
        ]
    )
    assert rc == 0
    ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for label in LABELS:
        assert ours[label] == pytest.approx(test["per_class"][label]["auroc"], abs=5e-5), label
    mean = sum(ours.values()) / len(ours)
    assert mean == pytest.approx(test["mean_auroc"], abs=5e-5)
    # the split file says these are exactly the held-out test images
    split = Path(__file__).resolve().parents[2] / "pipelines" / "splits" / "nih500_split.csv"
    test_keys = {line.split(",")[0] for line in split.read_text().splitlines()[1:] if line.endswith(",test")}
    pred_keys = {line.split(",")[0] for line in preds.read_text().splitlines()[1:]}
    assert pred_keys == test_keys and len(test_keys) == 75


def test_the_shipped_predictions_are_the_shipped_weights_outputs(nih_dir: Path) -> None:
    """The card's test numbers belong to these weights: re-predict a few held-out images."""
    import csv

    import numpy as np

    from chexnet_dicom.model.backends import load_predictor
    from chexnet_dicom.raster import load_chest_image
    from chexnet_dicom.transforms import prepare_model_input

    card_path = DATA / "chexnet_demo.card.json"
    predictor = load_predictor(card_path, device="cpu", backend="torch", precision="fp32")
    pre = predictor.card.preprocessing
    assert (pre.resize, pre.input_size) == (224, 224)  # CheXNet's input: a 7x7 CAM grid
    with open(DATA / predictor.card.metrics["test"]["predictions_file"], newline="") as fh:
        rows = list(csv.DictReader(fh))[:4]
    for row in rows:
        image = load_chest_image(nih_dir / "images" / row["key"]).image
        got = predictor.predict(prepare_model_input(image, resize=pre.resize, input_size=pre.input_size))
        want = np.array([float(row[label]) for label in LABELS])
        np.testing.assert_allclose(got.probabilities, want, atol=2e-3, err_msg=row["key"])


def test_operating_points_hold_the_cards_policy() -> None:
    """Each finding's threshold reaches the fixed validation specificity the card names."""
    card = ModelCard.read(DATA / "chexnet_demo.card.json")
    assert set(card.operating_points) == set(LABELS)
    for label, op in card.operating_points.items():
        assert op.method == "specificity>=0.90:validation", label
        assert op.specificity is not None and op.specificity >= 0.90, label
        assert op.specificity_ci is not None and op.sensitivity_ci is not None, label
