"""Tiny synthetic NIH-format datasets for fast training tests (generated, never copied)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.testing.synth import chest_phantom

NIH_HEADER = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
]


def make_nih_dataset(
    root: Path, n: int = 24, size: int = 40, images_per_patient: int = 1
) -> tuple[Path, Path]:
    """Write ``n`` phantom PNGs and a Data_Entry-format ``labels.csv``.

    Findings cycle through the 14 labels (some images have two, every sixth has none);
    positives of the first two findings get a bright blob so a model can learn them.
    """
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        patient = 1000 + i // images_per_patient
        name = f"{patient:08d}_{i % images_per_patient:03d}.png"
        if i % 6 == 5:
            findings: list[str] = []
        else:
            findings = [LABELS[i % len(LABELS)]]
            if i % 4 == 0:
                findings.append(LABELS[(i + 5) % len(LABELS)])
        img = chest_phantom(size, seed=i, noise=0.02)
        if LABELS[0] in findings or LABELS[1] in findings:
            img[size // 3 : size // 2, size // 4 : size // 2] = 1.0
        Image.fromarray(np.rint(img * 255).astype(np.uint8), mode="L").save(images / name)
        rows.append(
            [
                name,
                "|".join(findings) or "No Finding",
                str(i % images_per_patient),
                str(patient),
                str(30 + i),
                "MF"[i % 2],
                "PA",
                "1024",
                "1024",
                "0.143",
                "0.143",
            ]
        )
    labels = root / "labels.csv"
    with labels.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(NIH_HEADER)
        w.writerows(rows)
    return images, labels


def tiny_recipe(
    root: Path, images: Path, labels: Path, *, resize: int = 36, input_size: int = 32, **train: object
) -> Path:
    """A recipe for small images (default 32 px crops of 36 px), batch 4, fp32 on CPU, written to ``root/recipe.toml``."""
    settings = {"epochs": 2, "batch_size": 4, "eval_batch_size": 16, "seed": 7, "threads": 1, "device": "cpu"}
    settings.update(train)

    def fmt(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        return str(v)

    text = f"""
[data]
format = "nih"
images = "{images}"
labels = "{labels}"
fractions = [0.6, 0.2, 0.2]
cache_dir = "{root / "cache"}"

[preprocessing]
resize = {resize}
input_size = {input_size}

[augment]
hflip = 0.5
rotate_deg = 5.0
scale = [0.9, 1.1]
translate = 0.05
brightness = 0.05
contrast = 0.1

[train]
{chr(10).join(f"{k} = {fmt(v)}" for k, v in settings.items())}

[output]
run_dir = "{root / "run"}"
"""
    path = root / "recipe.toml"
    path.write_text(text)
    return path
