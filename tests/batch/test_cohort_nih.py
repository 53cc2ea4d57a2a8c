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


def _labels(nih_dir: Path) -> dict[str, set[str]]:
    with (nih_dir / "labels.csv").open(newline="") as fh:
        return {r["Image Index"]: set(r["Finding Labels"].split("|")) for r in csv.DictReader(fh)}


def test_the_deployed_table_counts_the_srs_present_calls(cohort: tuple[Path, str], nih_dir: Path) -> None:
    """By hand: TP/FN/FP/TN from predictions.csv's present_* columns and the NIH labels."""
    out, _ = cohort
    labels = _labels(nih_dir)
    preds = read_table(out, "predictions")
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    for label in LABELS:
        truth = [label in labels[Path(r["path"]).name + ".png"] for r in preds]
        called = [r[f"present_{label}"] in ("True", "true", "1") for r in preds]
        dep = metrics["per_class"][label]["deployed"]
        assert dep["tp"] == sum(t and c for t, c in zip(truth, called, strict=True)), label
        assert dep["fn"] == sum(t and not c for t, c in zip(truth, called, strict=True)), label
        assert dep["fp"] == sum(c and not t for t, c in zip(truth, called, strict=True)), label
        assert dep["sensitivity"]["value"] == pytest.approx(dep["tp"] / sum(truth)), label
        assert dep["sensitivity"]["high"] > dep["sensitivity"]["low"], label  # never a zero-width CI
    card = metrics["per_class"]["Cardiomegaly"]
    assert (card["deployed"]["tp"], card["positives"]) == (0, 7)  # the 0 of 7
    assert (
        metrics["model"]["weights_sha256"] and metrics["model"]["backend"] and metrics["model"]["precision"]
    )
    assert metrics["data"]["joined"] == 75 and metrics["bootstrap_seed"] == 0
    md = (out / "report" / "report.md").read_text()
    assert md.index("## 1. The model as deployed") < md.index(
        "## 3. Thresholds chosen on this data (optimistic)"
    )
    assert "Research use only" in md
    html = (out / "report" / "report.html").read_text()
    assert "**" not in html and "zoogzog_m-25012018-123527</th>" not in html
    assert (out / "report" / "decision_curves.png").stat().st_size > 1000


def test_evaluate_with_the_card_gives_the_batch_numbers(
    cohort: tuple[Path, str], nih_dir: Path, tmp_path: Path
) -> None:
    from chexnet_dicom.cli import main

    out, _ = cohort
    rc = main(
        [
            "evaluate", "--predictions", str(out / "report" / "joined.csv"), "--labels",
            str(nih_dir / "labels.csv"), "--card", str(CARD), "--out", str(tmp_path), "--bootstrap", "200",
            "--no-plots",
        ]
    )  # fmt: skip
    assert rc == EXIT_OK
    ours = json.loads((tmp_path / "metrics.json").read_text())["per_class"]
    batch = json.loads((out / "report" / "metrics.json").read_text())["per_class"]
    for label in LABELS:
        a, b = ours[label]["deployed"], batch[label]["deployed"]
        assert (a["tp"], a["fn"], a["fp"], a["tn"]) == (b["tp"], b["fn"], b["fp"], b["tn"]), label
        for key in ("sensitivity", "specificity", "ppv", "npv", "net_benefit"):
            assert a[key]["value"] == pytest.approx(b[key]["value"], nan_ok=True), (label, key)
        assert ours[label]["auroc"]["value"] == pytest.approx(batch[label]["auroc"]["value"], abs=1e-12)


def test_the_run_scores_its_cohort_shift_against_the_cards_reference(cohort: tuple[Path, str]) -> None:
    """shift.json's three parts and tables, computed from the run's own rows; the report has the section."""
    import numpy as np

    out, _ = cohort
    shift = json.loads((out / "shift.json").read_text())
    assert shift["status"] == "scored", shift["reason"]
    assert shift["analysed_images"] == shift["scored_images"] == 75 and not shift["subsampled"]
    # the demo reference is PNGs: the metadata part has nothing to test and is left out
    assert set(shift["parts"]) == {"features", "outputs"}
    assert shift["combined"] == pytest.approx(max(shift["parts"].values()))
    assert shift["alarm"] == (shift["combined"] >= 1.0)
    # the demo reference is PNGs: no metadata variable is known to it, so none is tested
    assert [v["variable"] for v in shift["metadata"] if not v["tested"]] == [
        v["variable"] for v in shift["metadata"]
    ]
    for var in shift["metadata"]:
        assert sum(c["export"] for c in var["categories"]) == 75, var
        assert sum(c["reference"] for c in var["categories"]) == shift["reference_images"] == 425, var
    sexes = {
        c["category"]: c["export"]
        for c in next(v for v in shift["metadata"] if v["variable"] == "sex")["categories"]
        if c["export"]
    }
    preds = read_table(out, "predictions")
    assert sexes == {
        s: sum(1 for r in preds if r["patient_sex"] == s) for s in {r["patient_sex"] for r in preds}
    }
    assert len(shift["features"]) >= 2 and all(0.0 <= f["p"] <= 1.0 for f in shift["features"])
    assert [o["finding"] for o in shift["outputs"]] == list(LABELS)
    for o in shift["outputs"]:  # the export's side, by hand from predictions.csv
        probs = np.array([float(r[f"prob_{o['finding']}"]) for r in preds])
        calls = np.array([r[f"present_{o['finding']}"] in ("True", "true", "1") for r in preds])
        assert o["export_mean_probability"] == pytest.approx(probs.mean(), abs=1e-9)
        assert o["export_present_rate"] == pytest.approx(calls.mean(), abs=1e-9)
        assert 0.0 <= o["p"] <= 1.0 and 0.0 <= o["reference_present_rate"] <= 1.0
    top = shift["most_out_of_distribution"]
    by_path = {r["path"]: float(r["ood_score"]) for r in preds}
    assert len(top) == 20 and [t["path"] for t in top] == sorted(by_path, key=lambda p: -by_path[p])[:20]
    assert all(t["ood_score"] == pytest.approx(by_path[t["path"]]) for t in top)
    for name in ("report.md", "report.html"):
        text = (out / "report" / name).read_text()
        assert (
            "Cohort shift against the model&#x27;s reference" in text
            or "Cohort shift against the model's reference" in text
        )
        assert top[0]["path"] in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shift"] == {k: shift[k] for k in ("status", "combined", "alarm")}
