"""Fit a bundle's out-of-distribution reference from images (``chexdcm weights calibrate-ood``, ``benchmarks/ood.py``).

The predictor that will score new images computes the reference features too (same
backend family, preprocessing and pooled features), so reference and scores cannot
drift apart.  Images are read with :func:`~chexnet_dicom.train.data.read_training_image`
(PNG/JPEG/TIFF or DICOM, the path ``train`` reads; no gate: the caller chooses the images).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chexnet_dicom import drift
from chexnet_dicom.errors import ConfigError
from chexnet_dicom.model.ood import OodReference, attach_reference, fit_reference, split_for_calibration
from chexnet_dicom.model.prediction import Prediction
from chexnet_dicom.model.predictor import PredictorBase
from chexnet_dicom.preprocess import prepare_model_input

__all__ = [
    "attach_drift_reference",
    "calibrate_card",
    "drift_observations",
    "features_and_logits",
    "features_and_logits_of",
    "predict_images",
    "reference_images",
]

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ""}


def reference_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (PNG/JPEG/TIFF, ``*.dcm`` or suffix-less DICOM), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"reference folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"no reference images (PNG, JPEG, TIFF or DICOM) under {root}")
    return files


def predict_images(predictor: PredictorBase, images: Sequence[np.ndarray]) -> list[Prediction]:
    """Predictions (no CAMs) of [0, 1] display images, prepared as the card says."""
    pre = predictor.card.preprocessing
    inputs = [
        prepare_model_input(
            im,
            resize=pre.resize,
            input_size=pre.input_size,
            tta="tencrop" if predictor.tta == "tencrop" else "none",
            mean=pre.mean,
            std=pre.std,
        )
        for im in images
    ]
    return predictor.predict_many(inputs, cams=False)


def features_and_logits_of(preds: Sequence[Prediction]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N, D) and logits (N, 14) of predictions.

    Raises
    ------
    ConfigError
        When the predictor's backend gave no features.
    """
    if any(p.features is None or p.logits is None for p in preds):
        raise ConfigError("this predictor's graph gives no pooled features; calibrate with --backend torch")
    feats = np.stack([np.asarray(p.features) for p in preds])
    logits = np.stack([np.asarray(p.logits) for p in preds])
    return feats, logits


def features_and_logits(
    predictor: PredictorBase, images: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N, D) and logits (N, 14) of [0, 1] display images, one forward pass each.

    Raises
    ------
    ConfigError
        When the predictor's backend gives no features.
    """
    return features_and_logits_of(predict_images(predictor, images))


def _header_metadata(path: Path) -> dict[str, str]:
    """Drift metadata of a DICOM reference file; all ``unknown`` for PNG/JPEG/TIFF."""
    if path.suffix.lower() not in {".dcm", ""}:
        return drift.metadata_of(object())
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError):
        return drift.metadata_of(object())
    return drift.metadata_of(header)


def drift_observations(paths: Sequence[Path], preds: Sequence[Prediction]) -> list[drift.Observation]:
    """One drift observation per reference image: its header metadata, probabilities, calls, features.

    Parameters
    ----------
    paths
        The images (DICOM headers give the metadata; other formats give ``unknown``).
    preds
        Their predictions, in the same order.
    """
    return [
        drift.Observation(
            metadata=_header_metadata(Path(path)),
            probabilities=np.asarray(p.probabilities, dtype=np.float64),
            features=None if p.features is None else np.asarray(p.features, dtype=np.float64),
            present=np.asarray(p.probabilities) >= np.asarray(p.thresholds),
        )
        for path, p in zip(paths, preds, strict=True)
    ]


def attach_drift_reference(
    card_path: str | os.PathLike[str],
    observations: Sequence[drift.Observation],
    *,
    source: str,
) -> dict[str, object]:
    """Fit the drift reference, save it beside a bundle and record it in the card's ``drift`` entry.

    Parameters
    ----------
    card_path
        The bundle's ``*.card.json`` (its weights are not changed).
    observations
        In-distribution observations (:func:`drift_observations`), at least 20.
    source
        Where the images came from (no PHI).

    Returns
    -------
    dict
        The card's new ``drift`` entry.
    """
    import dataclasses

    from chexnet_dicom.atomic import atomic_write
    from chexnet_dicom.model.card import CARD_SUFFIX, ModelCard

    p = Path(card_path)
    card = ModelCard.read(p)
    reference = drift.DriftReference.from_observations(observations)
    entry = drift.save_reference(
        reference,
        p.parent,
        p.name.removesuffix(CARD_SUFFIX),
        images={"source": source, "count": len(observations)},
    )
    atomic_write(p, dataclasses.replace(card, drift=entry).to_json())
    return entry


def _read(paths: Sequence[Path], target: int) -> list[np.ndarray]:
    from chexnet_dicom.train.data import read_training_image

    return [read_training_image(p, target_size=target) for p in paths]


def calibrate_card(
    card_path: str | os.PathLike[str],
    predictor: PredictorBase,
    fit_paths: Sequence[Path],
    validation_paths: Sequence[Path] | None = None,
    *,
    source: str,
) -> OodReference:
    """Fit the reference on ``fit_paths``, thresholds on ``validation_paths``, and attach it.

    Parameters
    ----------
    card_path
        The bundle to calibrate (its weights are not changed).
    predictor
        A predictor of that bundle.
    fit_paths
        Images the mean and covariance come from.
    validation_paths
        Held-out in-distribution images for the thresholds; None: a deterministic 20%
        of ``fit_paths`` is held out.
    source
        Where the images came from, for the card (no PHI: a folder or split name).
    """
    paths = list(fit_paths)
    if validation_paths is None:
        fit_idx, val_idx = split_for_calibration(len(paths))
        validation_paths = [paths[i] for i in val_idx]
        paths = [paths[i] for i in fit_idx]
    target = predictor.card.preprocessing.resize
    validation_paths = list(validation_paths)
    fit_preds = predict_images(predictor, _read(paths, target))
    val_preds = predict_images(predictor, _read(validation_paths, target))
    fit_f, _ = features_and_logits_of(fit_preds)
    val_f, val_l = features_and_logits_of(val_preds)
    ref = fit_reference(fit_f, val_f, val_l, images={"source": source})
    saved = attach_reference(card_path, ref)
    log.info("OOD reference fitted on %d images, thresholds on %d", len(paths), len(validation_paths))
    observations = drift_observations([*paths, *validation_paths], [*fit_preds, *val_preds])
    if len(observations) >= 20:
        attach_drift_reference(card_path, observations, source=source)
        log.info("drift reference written from %d images", len(observations))
    else:
        log.warning("no drift reference written: %d reference images, at least 20 needed", len(observations))
    return saved
