"""The images a training run reads: records, their split, torch datasets, network input.

:func:`load_dataset` reads the records of a recipe's ``[data]`` section and assigns
each to ``train``/``validation``/``test``/``unused`` (a committed split file, the
official lists, or a computed patient-level stratified split).  Training and
validation images are served as resized integer images, either from the
preprocessing cache (:class:`CachedImages`) or decoded on every access
(:class:`DecodedImages`); :func:`to_model_input` turns a batch of them, scaled to
[0, 1], into the network input.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from chexnet_dicom.config import TrainDataConfig
from chexnet_dicom.errors import ConfigError
from chexnet_dicom.model.card import IMAGENET_MEAN, IMAGENET_STD
from chexnet_dicom.train.cache import ImageCache
from chexnet_dicom.train.data import Record, chexpert_records, dicom_records, nih_records
from chexnet_dicom.train.splits import (
    apply_split,
    official_split,
    read_split_csv,
    stratified_patient_split,
)

__all__ = [
    "CachedImages",
    "DecodedImages",
    "load_dataset",
    "load_records",
    "make_split",
    "to_model_input",
]

log = logging.getLogger(__name__)


def load_dataset(cfg: TrainDataConfig) -> tuple[list[Record], list[str]]:
    """Read the records of the recipe and their subset (train/validation/test/unused).

    The subset comes from ``split_file`` when given (a committed split), else from the
    official lists, else from :func:`~chexnet_dicom.train.splits.stratified_patient_split`
    with ``fractions``.

    Parameters
    ----------
    cfg
        The recipe's ``[data]`` section.

    Returns
    -------
    (list of Record, list of str)
        The records and, per record, ``"train"``, ``"validation"``, ``"test"`` or
        ``"unused"``.
    """
    records = load_records(cfg)
    if cfg.split_file:
        assignment = apply_split([r.key for r in records], read_split_csv(cfg.split_file))
    else:
        assignment = make_split(cfg, records)
    return records, assignment


def load_records(cfg: TrainDataConfig) -> list[Record]:
    """Read the labelled images of the recipe (the first ``max_images`` when set).

    Parameters
    ----------
    cfg
        The recipe's ``[data]`` section.

    Returns
    -------
    list of Record
        One per image, in the order of the labels file.

    Raises
    ------
    ConfigError
        When ``labels`` is not set (or the reader rejects the files).
    """
    if not cfg.labels:
        raise ConfigError("[data] labels is required")
    if cfg.format == "nih":
        records = nih_records(cfg.images, cfg.labels)
    elif cfg.format == "chexpert":
        records, missing = chexpert_records(
            cfg.labels, cfg.images, uncertain=cfg.uncertain, patient_column=cfg.patient_column or None
        )
        if missing:
            log.warning("the CheXpert CSV has no column for %s: treated as negative", ", ".join(missing))
    else:
        records = dicom_records(
            cfg.images, cfg.labels, key=cfg.dicom_key, patient_column=cfg.patient_column or "PatientID"
        )
    if cfg.max_images > 0:
        records = records[: cfg.max_images]
    return records


def _read_list(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"official split list not found: {p}")
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_split(cfg: TrainDataConfig, records: Sequence[Record]) -> list[str]:
    """Compute the patient split of ``records`` from the recipe (deterministic).

    Parameters
    ----------
    cfg
        The recipe's ``[data]`` section: the official lists when
        ``official_test_list`` is set, else ``fractions`` and ``split_seed``.
    records
        The images to split.

    Returns
    -------
    list of str
        ``"train"``, ``"validation"``, ``"test"`` or ``"unused"`` per record.
    """
    keys = [r.key for r in records]
    patients = [r.patient for r in records]
    labels = np.stack([r.labels for r in records])
    if cfg.official_test_list:
        tv = _read_list(cfg.official_train_val_list) if cfg.official_train_val_list else None
        return official_split(
            keys,
            patients,
            labels,
            _read_list(cfg.official_test_list),
            train_val_keys=tv,
            val_fraction=cfg.val_fraction,
            seed=cfg.split_seed,
        )
    return stratified_patient_split(patients, labels, cfg.fractions, seed=cfg.split_seed)


class CachedImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Rows of an :class:`~chexnet_dicom.train.cache.ImageCache` with their labels.

    Items are ``(image, labels)``: the raw integer image (uint8, or uint16 widened to
    int32) and its float32 labels.

    Parameters
    ----------
    cache
        The preprocessing cache.
    rows
        Cache rows of the images, in dataset order.
    labels
        (N, 14) labels, one row per entry of ``rows``.
    """

    def __init__(self, cache: ImageCache, rows: np.ndarray, labels: np.ndarray) -> None:
        self.cache = cache
        self.rows = rows
        self.labels = torch.from_numpy(np.asarray(labels, np.float32))
        self.wide = cache.dtype == "uint16"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = np.asarray(self.cache.array[self.rows[i]])
        t = torch.from_numpy(img.astype(np.int32) if self.wide else img.copy())
        return t, self.labels[i]


class DecodedImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Records decoded and resized on every access (no cache); same output as the cache.

    Parameters
    ----------
    records
        The images.
    size
        Side they are resized to.
    dtype
        Quantisation, as the cache would store them.
    """

    def __init__(self, records: Sequence[Record], size: int, dtype: Literal["uint8", "uint16"]) -> None:
        self.records = list(records)
        self.size = size
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from chexnet_dicom.train.cache import _prepare_one

        img = _prepare_one((str(self.records[i].path), self.size, self.dtype))
        t = torch.from_numpy(img.astype(np.int32) if self.dtype == "uint16" else img)
        return t, torch.from_numpy(self.records[i].labels.astype(np.float32))


def to_model_input(
    x: torch.Tensor,
    input_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Centre crop, replicate grey to 3 channels, normalise: (B, H, W) -> (B, 3, s, s).

    The batched torch twin of :func:`chexnet_dicom.transforms.prepare_model_input`
    applied to an already resized image (tested to agree to 1e-6).

    Parameters
    ----------
    x
        (B, H, W) images in [0, 1].
    input_size
        Side ``s`` of the centre crop.
    mean, std
        Per-channel normalisation.

    Returns
    -------
    torch.Tensor
        (B, 3, s, s) float32 on the device of ``x``.
    """
    h, w = x.shape[-2:]
    top, left = (h - input_size) // 2, (w - input_size) // 2
    x = x[..., top : top + input_size, left : left + input_size]
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x[:, None].float() - m) / s
