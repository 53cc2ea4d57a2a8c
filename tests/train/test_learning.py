"""A real (short) learning run on the NIH images: marked slow (minutes on CPU).

Run with ``pytest -m slow tests/train/test_learning.py``.  Trains from scratch on the
committed demo split's 350 training images at 96 px for 12 epochs and checks, on the
validation patients only (the held-out test set is never touched):

- the training loss falls, and the validation loss falls below the first epoch's;
- the validation AUROC is above chance: the mean over the 14 findings > 0.55, and over
  the findings this small model picks up first (Effusion, Emphysema) > 0.6.

Honest limits: such a short run from scratch does not get its validation loss clearly
below that of predicting each finding's training prevalence (about 0.314 on this split);
the learned signal shows in the ranking (AUROC), not yet in calibration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chexnet_dicom.config import load_train_config
from chexnet_dicom.train.fit import fit
from tests.helpers.shared import REPO

EASY = ("Effusion", "Emphysema")


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
        "train.epochs": 12,
        "train.max_minutes": 0.0,
        "output.run_dir": str(tmp_path / "run"),
        "output.export_dir": "",
    }
    cfg = load_train_config(REPO / "pipelines" / "demo_nih500.toml", overrides)
    result = fit(cfg, progress=False)
    hist = result.history
    assert len(hist) == 12
    val_losses = [h["val_loss"] for h in hist]
    assert min(val_losses[1:]) < val_losses[0]
    assert min(h["train_loss"] for h in hist[-3:]) < hist[0]["train_loss"]
    best = max(hist, key=lambda h: h["val_mean_auroc"])
    assert best["val_mean_auroc"] > 0.55, best
    easy = [best[f"auroc_{n}"] for n in EASY]
    assert float(np.mean(easy)) > 0.6, easy
