"""The cohort report of ``chexdcm batch --labels`` on real NIH images written as a DICOM export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from chexnet_dicom.errors import EXIT_OK
from chexnet_dicom.model.labels import LABELS
from tests.helpers.batch import nih_test_keys, read_table, run_batch_cli, write_nih_export

CARD = Path(__file__).resolve().parents[2] / "chexnet_dicom" / "model" / "data" / "chexnet_demo.card.json"


@pytest.fixture(scope="module")
def cohort(nih_dir: Path, reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    keys = nih_test_keys()
    assert len(keys) == 75  # the demo card's held-out test patients only: the other 425 trained it
    export = write_nih_export(nih_dir, tmp_path_factory.mktemp("nih") / "export", keys)
    out = tmp_path_factory.mktemp("run")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = run_batch_cli(
            export, out, CARD,
            "--labels", str(nih_dir / "labels.csv"),
            "--label-key", "ImageComments",
            "--label-column", "Image Index",
            "--published", str(reference_dir / "published_auroc.csv"),
            "--bootstrap", "200",
        )  # fmt: skip
    assert rc == EXIT_OK
    return out, buf.getvalue()


def test_every_held_out_image_is_analysed_and_scored(cohort: tuple[Path, str]) -> None:
    out, printed = cohort
    assert {r["status"] for r in read_table(out, "files")} == {"analysed"}
    assert len(read_table(out, "predictions")) == 75
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["n_images"] == 75
    assert "75 labelled images scored" in printed


def test_the_report_has_aurocs_with_cis_calibration_subgroups_plots_and_published(
    cohort: tuple[Path, str],
) -> None:
    out, _ = cohort
    report = out / "report"
    with (report / "per_class.csv").open(newline="") as fh:
        rows = {r["label"]: r for r in csv.DictReader(fh)}
    assert set(rows) == set(LABELS)
    scored = [r for r in rows.values() if int(r["positives"]) >= 2]
    assert scored
    for r in scored:
        assert float(r["auroc_low"]) <= float(r["auroc"]) <= float(r["auroc_high"])
        assert 0.0 <= float(r["ece"]) <= 1.0
    # the demo weights rank the held-out images better than chance on average
    mean = sum(float(r["auroc"]) for r in scored) / len(scored)
    assert mean > 0.6, mean
    md = (report / "report.md").read_text()
    for needle in (
        "## Against published results",
        "chexnet_paper_rajpurkar2017",
        "### sex",
        "### age",
        "### view",
    ):
        assert needle in md, needle
    assert "### manufacturer" in md
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert {"roc_curves.png", "reliability.png"} <= set(pngs), pngs  # ROC and calibration plots
    assert all((report / p).stat().st_size > 1000 for p in pngs)


def test_the_dicom_path_gives_the_cards_held_out_predictions(cohort: tuple[Path, str]) -> None:
    """Written as DICOM, the images score as the card's shipped PNG-path test predictions."""
    from chexnet_dicom.model.card import ModelCard

    out, _ = cohort
    card = ModelCard.read(CARD)
    with (CARD.parent / card.metrics["test"]["predictions_file"]).open(newline="") as fh:
        shipped = {r["key"]: r for r in csv.DictReader(fh)}
    preds = read_table(out, "predictions")
    assert {Path(r["path"]).name + ".png" for r in preds} == set(shipped)
    worst = max(
        abs(float(r[f"prob_{label}"]) - float(shipped[Path(r["path"]).name + ".png"][label]))
        for r in preds
        for label in LABELS
    )
    assert worst < 5e-3, worst  # ONNX Runtime fp32 here, the card's torch run there
