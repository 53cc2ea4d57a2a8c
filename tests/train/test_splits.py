"""Patient-level splits, including the full 112,120-image NIH metadata."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from chexnet_dicom.cli import main
from chexnet_dicom.errors import ConfigError
from chexnet_dicom.train.data import nih_labels
from chexnet_dicom.train.splits import (
    check_patient_disjoint,
    official_split,
    read_split_csv,
    stratified_patient_split,
    write_split_csv,
)
from tests.helpers.shared import REPO


def _patients_per_split(assign: list[str], patients: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for s, p in zip(assign, patients, strict=True):
        out.setdefault(s, set()).add(p)
    return out


def test_full_data_entry_patient_split(nih_dir: Path) -> None:
    table = nih_labels(nih_dir / "Data_Entry_2017_v2020.csv.gz")
    assign = stratified_patient_split(table.patients, table.labels, (0.7, 0.1, 0.2), seed=0)
    groups = _patients_per_split(assign, table.patients)
    # no patient in two subsets, every patient somewhere
    assert not (groups["train"] & groups["validation"])
    assert not (groups["train"] & groups["test"])
    assert not (groups["validation"] & groups["test"])
    assert sum(len(g) for g in groups.values()) == len(set(table.patients)) == 30_805
    check_patient_disjoint(assign, table.patients)
    sizes = Counter(assign)
    n = len(assign)
    for name, frac in (("train", 0.7), ("validation", 0.1), ("test", 0.2)):
        assert abs(sizes[name] / n - frac) < 0.01, sizes
    # stratified: each subset's prevalence of every finding within 2 points of the whole
    lab = table.labels > 0.5
    overall = lab.mean(axis=0)
    a = np.asarray(assign)
    for name in ("train", "validation", "test"):
        prev = lab[a == name].mean(axis=0)
        assert np.all(np.abs(prev - overall) < 0.02), (name, prev - overall)
    # deterministic
    assert stratified_patient_split(table.patients, table.labels, (0.7, 0.1, 0.2), seed=0) == assign


def test_rare_findings_reach_every_subset() -> None:
    rng = np.random.default_rng(3)
    n = 200
    patients = [str(i // 2) for i in range(n)]  # two images per patient
    labels = (rng.random((n, 14)) < 0.15).astype(np.float32)
    labels[:, 13] = 0
    labels[[0, 10, 20, 30, 40, 50], 13] = 1  # 6 patients with the rare finding
    assign = stratified_patient_split(patients, labels, (0.6, 0.2, 0.2), seed=1)
    a = np.asarray(assign)
    for name in ("train", "validation", "test"):
        assert labels[a == name, 13].sum() >= 1, name
    check_patient_disjoint(assign, patients)


def test_official_lists(tmp_path: Path) -> None:
    keys = [f"{p:08d}_{k:03d}.png" for p in range(40) for k in range(3)]
    patients = [k[:8] for k in keys]
    labels = np.zeros((len(keys), 14), np.float32)
    labels[::5, 2] = 1
    test_keys = [k for k in keys if int(k[:8]) >= 30]
    train_val = [k for k in keys if int(k[:8]) < 28]  # patients 28, 29 in neither list
    assign = official_split(
        keys, patients, labels, test_keys, train_val_keys=train_val, val_fraction=0.25, seed=0
    )
    c = Counter(assign)
    assert c["test"] == 30 and c["unused"] == 6 and c["train"] + c["validation"] == 84
    assert abs(c["validation"] - 21) <= 3
    check_patient_disjoint(assign, patients)
    # an official list that splits a patient is refused
    with pytest.raises(ConfigError, match="patient"):
        official_split(keys, patients, labels, [keys[0]], seed=0)


def test_split_file_round_trip_and_checks(tmp_path: Path) -> None:
    keys, patients = ["b.png", "a.png", "c.png"], ["1", "1", "2"]
    p = write_split_csv(tmp_path / "s.csv", keys, patients, ["train", "train", "test"])
    assert p.read_text().splitlines() == [
        "key,patient,split",
        "a.png,1,train",
        "b.png,1,train",
        "c.png,2,test",
    ]
    assert read_split_csv(p) == {"a.png": "train", "b.png": "train", "c.png": "test"}
    with pytest.raises(ConfigError, match="patient"):
        write_split_csv(tmp_path / "bad.csv", keys, patients, ["train", "test", "test"])
    (tmp_path / "bad2.csv").write_text("key,patient,split\na,1,train\nb,1,validation\n")
    with pytest.raises(ConfigError, match="patient"):
        read_split_csv(tmp_path / "bad2.csv")


def test_committed_demo_split_regenerates(nih_dir: Path, tmp_path: Path) -> None:
    committed = REPO / "pipelines" / "splits" / "nih500_split.csv"
    recipe = (REPO / "pipelines" / "demo_nih500.toml").read_text()
    recipe = recipe.replace('"pipelines/splits/nih500_split.csv"', f'"{tmp_path / "split.csv"}"')
    recipe = recipe.replace('"../shared/data/nih/', f'"{nih_dir}/')
    (tmp_path / "r.toml").write_text(recipe)
    assert main(["train", "--config", str(tmp_path / "r.toml"), "--write-split"]) == 0
    assert (tmp_path / "split.csv").read_bytes() == committed.read_bytes()
    split = read_split_csv(committed)
    c = Counter(split.values())
    assert c == {"train": 350, "validation": 75, "test": 75}
