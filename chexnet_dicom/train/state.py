"""What a training run keeps on disk besides the weights: the RNG state, checkpoint files, ``log.csv``.

The RNG state goes into ``last.pt`` so that a resumed run repeats exactly what an
uninterrupted run does (see :mod:`chexnet_dicom.train.fit`).
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

import torch

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.model.labels import LABELS

__all__ = ["LOG_FIELDS", "atomic_save", "rng_state", "set_rng_state", "write_log"]


def rng_state() -> dict[str, Any]:
    """The torch, Python and (when present) CUDA RNG states."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(v) for v in state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


#: Columns of ``log.csv``, one row per epoch.
LOG_FIELDS = [
    "epoch",
    "train_loss",
    "val_loss",
    "val_mean_auroc",
    "lr",
    "epoch_seconds",
    "elapsed_minutes",
    *[f"auroc_{n}" for n in LABELS],
]


def atomic_save(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` into ``path`` atomically (a killed run never leaves half a checkpoint)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_log(path: Path, history: list[dict[str, float]]) -> None:
    """Write ``log.csv`` (:data:`LOG_FIELDS`, one row per epoch) atomically."""
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(path, text.getvalue())
