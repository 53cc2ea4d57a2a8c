"""A real (short) learning run on the NIH images: marked slow (minutes on CPU).

Run with ``pytest -m slow tests/train/test_learning.py``.  Trains from scratch on the
committed demo split's 350 training images at 96 px for 8 epochs and checks, on the
validation patients only (the held-out test set is never touched):

- the validation loss falls below the first epoch's and below the loss of predicting
  each finding's training prevalence (a model that learned nothing scores that);
- the validation AUROC is above chance: mean over the 14 findings > 0.55, and over the
  findings visible at low resolution (Cardiomegaly, Effusion, Emphysema, Pneumothorax,
  Hernia) > 0.55.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.train.loop import fit, load_config, load_dataset
from tests.conftest import REPO

EASY = ("Cardiomegaly", "Effusion", "Emphysema", "Pneumothorax", "Hernia")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_short_run_on_nih_learns(nih_dir: Path, tmp_path: Path) -> None:
    overrides = {
        "data.images": str(nih_dir / "images"),
        "data.labels": str(nih_dir / "labels.csv"),
        "data.split_file": str(REPO / "pipelines" / "splits" / "nih500_split.csv"),
        "data.cache_dir": str(tmp_path / "cache"),
        "preprocessing.resize": 96,
        "preprocessing.input_size": 96,
        "train.epochs": 8,
        "train.max_minutes": 0.0,
        "train.plateau_patience": 5,
        "output.run_dir": str(tmp_path / "run"),
        "output.export_dir": "",
    }
    cfg = load_config(REPO / "pipelines" / "demo_nih500.toml", overrides)
    result = fit(cfg, progress=False)
    hist = result.history
    assert len(hist) == 8
    records, assign = load_dataset(cfg.data)
    y = np.stack([r.labels for r in records])
    a = np.asarray(assign)
    prev = y[a == "train"].mean(axis=0).clip(1e-6, 1 - 1e-6)
    yv = y[a == "validation"]
    baseline = float(-(yv * np.log(prev) + (1 - yv) * np.log(1 - prev)).mean())
    val_losses = [h["val_loss"] for h in hist]
    assert min(val_losses[1:]) < val_losses[0]
    assert min(val_losses) < baseline, (val_losses, baseline)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    best = max(hist, key=lambda h: h["val_mean_auroc"])
    assert best["val_mean_auroc"] > 0.55
    easy = [best[f"auroc_{n}"] for n in EASY if n in LABELS]
    assert float(np.mean(easy)) > 0.55, easy
