"""Scoring during training: a network's logits over cached images, and per-finding ROC AUCs.

Used by the fit loop's validation (:mod:`chexnet_dicom.train.fit`) and by tests that
score a trained network on the same images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from chexnet_dicom.train.datasets import to_model_input

__all__ = ["predict_cached", "roc_aucs"]


def roc_aucs(y: np.ndarray, p: np.ndarray) -> list[float]:
    """ROC AUC of each column of ``p`` against labels ``y`` (NaN where a column has one class)."""
    from sklearn.metrics import roc_auc_score

    out = []
    for j in range(y.shape[1]):
        col = y[:, j]
        out.append(float(roc_auc_score(col, p[:, j])) if 0 < col.sum() < len(col) else float("nan"))
    return out


@torch.no_grad()
def predict_cached(
    net: nn.Module,
    images: Dataset[tuple[torch.Tensor, torch.Tensor]],
    *,
    input_size: int,
    scale: float,
    device: torch.device,
    batch_size: int,
    bf16: bool,
    channels_last: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate a dataset of resized images; returns (logits, labels) as float64 arrays.

    Parameters
    ----------
    net
        The network (put in eval mode).
    images
        Items ``(integer image, labels)`` as :class:`~chexnet_dicom.train.datasets.CachedImages`
        serves them.
    input_size
        Side of the centre crop.
    scale
        Factor from the stored integers to [0, 1] (1/255 or 1/65535).
    device, batch_size
        Where and in what batches to run.
    bf16, channels_last
        Precision choices of the run (see the module docstring).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        (N, C) logits and (N, C) labels.
    """
    net.eval()
    logits, labels = [], []
    loader = DataLoader(images, batch_size=batch_size, shuffle=False)
    for x, y in loader:
        inp = to_model_input(x.to(device).float() * scale, input_size)
        if channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = net(inp)
        logits.append(out.float().cpu().numpy())
        labels.append(y.numpy())
    return np.concatenate(logits).astype(np.float64), np.concatenate(labels).astype(np.float64)
