"""Shared helpers of the outputs tests: sources, predictions, cards, validators."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from chexnet_dicom.dicom.pixels import DisplayImage
from chexnet_dicom.dicom.resize import resize_display
from chexnet_dicom.dicom.uids import derive_uid
from chexnet_dicom.model.card import ModelCard, OperatingPoint, Preprocessing
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.result import Prediction
from chexnet_dicom.results import ImageResult
from chexnet_dicom.testing.synth import make_dataset
from tests.helpers.shared import require_tool, shared_path


def make_card(sha: str = "ab" * 32, *, threshold: float = 0.5, cam_threshold: float = 0.5) -> ModelCard:
    """A real model card with uniform operating points."""
    return ModelCard(
        name="chexnet-test",
        version="1.2.3",
        weights_sha256=sha,
        cam_threshold=cam_threshold,
        operating_points={label: OperatingPoint(threshold=threshold, method="test") for label in LABELS},
    )


def make_prediction(card: ModelCard, probabilities: np.ndarray, cams: np.ndarray | None = None) -> Prediction:
    """A Prediction as the predictor returns it."""
    return Prediction(
        probabilities=np.asarray(probabilities, dtype=np.float64),
        thresholds=np.array([card.threshold(label) for label in LABELS]),
        model_name=card.name,
        model_version=card.version,
        weights_sha256=card.weights_sha256,
        cams=cams,
    )


def make_result(
    ds: Dataset,
    card: ModelCard,
    probabilities: np.ndarray,
    *,
    heat: np.ndarray | None = None,
    display: np.ndarray | DisplayImage | None = None,
    flags: tuple[str, ...] = (),
) -> ImageResult:
    """An analysed image whose heatmaps on the source grid are (close to) ``heat``.

    ``heat`` is (14, Rows, Columns) in [0, 1]; it becomes the CAMs of a model whose input
    is a square ``side x side`` frame (``side`` = the source's larger side, at most 512),
    so :meth:`ImageResult.heatmap` maps it back through the real CAM geometry.  The
    display image is mid-grey unless given (an array on the source grid, or a
    :class:`DisplayImage` as ``load_image`` returns it); ``flags`` are its provenance flags.
    """
    rows, cols = int(ds.Rows), int(ds.Columns)
    if display is None:
        display = np.full((rows, cols), 0.5, np.float32)
    if not isinstance(display, DisplayImage):
        display = DisplayImage(
            image=np.asarray(display, np.float32),
            source_shape=(rows, cols),
            provenance={"flags": list(flags)},
        )
    side = min(512, max(rows, cols, 16))
    cams = None
    if heat is not None:
        cams = np.stack([resize_display(h, (side, side)) for h in np.asarray(heat, np.float32)])
    return ImageResult(
        path="",
        dataset=ds,
        display=display,
        prediction=make_prediction(card, probabilities, cams),
        preprocessing=Preprocessing(resize=side, input_size=side),
    )


def make_dx(
    *,
    rows: int = 96,
    cols: int = 80,
    name: str = "Doe^Jane",
    charset: str | None = None,
    seed: str = "dx",
    study: str = "study-1",
) -> Dataset:
    """A small DX For Presentation dataset (MONOCHROME2, 8-bit) from :mod:`chexnet_dicom.testing.synth`.

    Identity comes from ``seed`` (the instance) and ``study``, so tests can build several
    instances of one study, or of different studies.
    """
    pixels = (np.arange(rows * cols) % 251).astype(np.uint8).reshape(rows, cols)
    return make_dataset(
        pixels,
        modality="DX",
        bits_stored=8,
        patient_name=name,
        patient_id="PID-1",
        specific_character_set=charset,
        study_uid=derive_uid("tests-outputs", study),
        series_uid=derive_uid("tests-outputs", study, "series"),
        sop_uid=derive_uid("tests-outputs", seed, "sop"),
        patient_orientation=("L", "F"),
    )


def real_source(name: str) -> Dataset:
    """A real chest file from ../shared/data/dicom/chest (skips when absent)."""
    return pydicom.dcmread(shared_path("dicom", "chest", name), force=True)


def blob(rows: int, cols: int, cy: float, cx: float, sigma: float) -> np.ndarray:
    """A Gaussian blob in [0, 1] on a (rows, cols) grid."""
    yy, xx = np.mgrid[:rows, :cols]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * sigma**2)).astype(np.float32)


def dciodvfy_errors(path: Path) -> tuple[list[str], list[str]]:
    """Run dicom3tools' dciodvfy; return (errors, warnings)."""
    exe = require_tool("dciodvfy")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, errors="replace", timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings
