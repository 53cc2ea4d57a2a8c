"""Golden test: our evaluation reproduces reproduce-chexnet's published per-class AUROCs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from chexnet_dicom.cli import main
from chexnet_dicom.model.labels import LABELS


def test_evaluate_reproduces_reproduce_chexnet_aucs(
    reference_dir: Path, nih_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preds = reference_dir / "reproduce_chexnet_2022_test_preds.csv"
    labels = nih_dir / "Data_Entry_2017_v2020.csv.gz"
    out = tmp_path / "report"
    rc = main(
        [
            "evaluate",
            "--predictions",
            str(preds),
            "--labels",
            str(labels),
            "--out",
            str(out),
            "--bootstrap",
            "0",
            "--no-plots",
            "--json",
        ]
    )
    assert rc == 0
    ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with (reference_dir / "reproduce_chexnet_2022_test_aucs.csv").open() as fh:
        expected = {r["label"]: float(r["auc"]) for r in csv.DictReader(fh)}
    assert list(ours) == list(LABELS)
    for label in LABELS:
        assert ours[label] == pytest.approx(expected[label], abs=1e-9), label
    rows = list(csv.DictReader((out / "per_class.csv").open()))
    assert float(rows[0]["auroc"]) == pytest.approx(expected["Atelectasis"], abs=1e-12)
