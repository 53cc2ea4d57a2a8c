"""Random-weight CheXNet bundles and synthetic images that the tests make themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from chexnet_dicom.model.card import ModelCard, OperatingPoint, Preprocessing, save_bundle
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.network import build_network, head

__all__ = ["SMALL", "make_bundle", "synthetic_images"]

#: A small model input: fast forward passes on a CPU.
SMALL = Preprocessing(resize=80, input_size=64)


def make_bundle(directory: Path, *, preprocessing: Preprocessing = SMALL, seed: int = 0) -> Path:
    """Save a random-weight CheXNet bundle with distinct operating points; return the card path."""
    torch.manual_seed(seed)
    net = build_network().eval()
    with torch.no_grad():
        head(net).bias.copy_(torch.linspace(-2.0, 1.0, len(LABELS)))
    ops = {name: OperatingPoint(threshold=0.3 + 0.02 * i, method="test") for i, name in enumerate(LABELS)}
    card = ModelCard(
        name="test-chexnet", version="0.0.1", preprocessing=preprocessing, operating_points=ops, cam_scale=2.0
    )
    return save_bundle(net, card, directory, "tiny", dtype=torch.float32)


def synthetic_images(n: int, shape: tuple[int, int] = (120, 100), seed: int = 5) -> list[np.ndarray]:
    """Smooth random [0, 1] images (a chest-like bright centre plus noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(0.3, 0.7) * shape[1], rng.uniform(0.3, 0.7) * shape[0]
        blob = np.exp(-(((xx - cx) / (0.3 * shape[1])) ** 2 + ((yy - cy) / (0.4 * shape[0])) ** 2))
        out.append(np.clip(0.6 * blob + 0.2 * rng.random(shape), 0, 1).astype(np.float32))
    return out
