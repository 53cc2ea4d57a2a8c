"""The full report on a small synthetic table: files, subgroups, comparison, published table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from chexnet_dicom.cli import main
from chexnet_dicom.model.labels import LABELS


def _write_tables(tmp: Path, n: int = 300, seed: int = 0) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(seed)
    y = rng.random((n, len(LABELS))) < 0.2
    labels = tmp / "labels.csv"
    with labels.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender", "View Position"]
        )
        for i in range(n):
            names = [lab for lab, v in zip(LABELS, y[i], strict=True) if v] or ["No Finding"]
            w.writerow(
                [f"img{i}.png", "|".join(names), i // 2, 20 + i % 70, "MF"[i % 2], ["PA", "AP"][i % 3 == 0]]
            )
    paths = []
    for name, noise in (("a.csv", 0.5), ("b.csv", 2.0)):
        scores = 1 / (1 + np.exp(-(y * 2 - 1 + rng.normal(0, noise, y.shape))))
        p = tmp / name
        with p.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["Image Index", *[f"prob_{lab}" for lab in LABELS]])
            for i in range(n):
                w.writerow([f"img{i}.png", *scores[i]])
        paths.append(p)
    return labels, paths[0], paths[1]


def test_report_files_and_contents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels, a, b = _write_tables(tmp_path)
    published = tmp_path / "pub.csv"
    published.write_text("label,paper\n" + "".join(f"{lab},0.8\n" for lab in LABELS))
    out = tmp_path / "rep"
    rc = main(
        [
            "evaluate",
            "--predictions",
            str(a),
            "--labels",
            str(labels),
            "--out",
            str(out),
            "--bootstrap",
            "100",
            "--compare",
            str(b),
            "--published",
            str(published),
        ]
    )
    assert rc == 0
    for name in (
        "report.md",
        "report.html",
        "metrics.json",
        "per_class.csv",
        "roc_curves.png",
        "pr_curves.png",
        "reliability.png",
    ):
        assert (out / name).stat().st_size > 100, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_patients"] == 150 and m["n_images"] == 300
    auc = m["per_class"]["Effusion"]["auroc"]
    assert auc["low"] < auc["value"] < auc["high"]
    assert set(m["subgroups"]) == {"sex", "age", "view"}
    assert set(m["subgroups"]["sex"]) == {"F", "M"}
    assert m["comparison"]["Effusion"]["difference"]["value"] > 0
    md = (out / "report.md").read_text()
    assert "Against published results" in md and "paper" in md and "youden-on-this-data" in md
    assert "mean" in capsys.readouterr().out


def test_missing_column_is_a_runtime_error_and_bad_option_a_usage_error(tmp_path: Path) -> None:
    labels, a, _ = _write_tables(tmp_path, n=20)
    bad = tmp_path / "bad.csv"
    bad.write_text("Image Index,prob_Atelectasis\nimg0.png,0.5\n")
    assert (
        main(["evaluate", "--predictions", str(bad), "--labels", str(labels), "--out", str(tmp_path / "o")])
        == 1
    )
    assert main(["evaluate", "--predictions", str(a), "--labels", str(labels), "--bootstrap", "-1"]) == 2
    assert main(["evaluate", "--predictions", str(tmp_path / "nope.csv"), "--labels", str(labels)]) == 2
