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
