"""Shared code of the drift tests: held-out NIH radiographs written as one-image DICOM studies, clean or shifted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers.batch import nih_dataset, nih_labels, nih_test_keys

__all__ = ["nih_test_keys", "write_nih_studies"]


def write_nih_studies(
    nih: Path, folder: Path, keys: list[str], *, tag: str, noise_sd: float = 0.0, seed: int = 0
) -> list[Path]:
    """One single-image DX study per NIH PNG of ``keys`` (8-bit grey values as they are, window 0..255).

    ``tag`` makes the UIDs of a sending distinct (the same image may be sent again as a
    new study).  ``noise_sd`` > 0 adds Gaussian noise of that standard deviation (in
    units of the full grey range, as ``benchmarks/ood.py``'s noise shift) before writing.
    Sex, age and view come from ``labels.csv``; the Patient ID is the NIH one.
    """
    from PIL import Image

    from chexnet_dicom.testing import synth

    meta = nih_labels(nih)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, key in enumerate(keys):
        with Image.open(nih / "images" / key) as im:
            grey = np.asarray(im.convert("L"), dtype=np.float64)
        if noise_sd > 0:
            grey = grey + rng.normal(0.0, noise_sd * 255.0, size=grey.shape)
        ds = nih_dataset(
            np.clip(np.rint(grey), 0, 255).astype(np.uint8),
            meta[key],
            study_key=f"drift:{tag}:{i}:{key}",
            seed=i,
        )
        path = folder / f"{tag}-{i:03d}.dcm"
        synth.write(ds, path)
        out.append(path)
    return out
