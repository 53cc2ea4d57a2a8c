"""The training recipe read by ``chexdcm train`` (``pipelines/*.toml``).

Its sections: ``[data]``, ``[preprocessing]``, ``[augment]``, ``[train]`` and
``[output]``.  The defaults follow CheXNet: DenseNet-121, Adam lr 1e-3, batch 16,
ReduceLROnPlateau x0.1 on the validation loss, random horizontal flip, binary
cross-entropy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chexnet_dicom.config.analysis import check_device
from chexnet_dicom.config.overrides import load_config
from chexnet_dicom.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainDataConfig",
    "TrainOutputConfig",
    "TrainPreprocessConfig",
    "load_train_config",
]


@dataclass(frozen=True)
class TrainDataConfig:
    """``[data]``: where the images and labels are and how they are split.

    Relative paths are relative to the current directory (run from the repository root).

    Attributes
    ----------
    format
        ``"nih"`` (PNGs + ``Data_Entry`` CSV), ``"chexpert"`` (CheXpert-style CSV) or
        ``"dicom"`` (a DICOM folder + labels CSV).
    images, labels
        Image folder and labels CSV.
    split_file
        A committed split CSV; when empty the split is computed.
    fractions
        Train / validation / test fractions of the computed patient split.
    split_seed
        Seed of the computed split.
    official_test_list, official_train_val_list
        Official split lists (one key a line); the test list takes precedence over
        ``fractions``.
    val_fraction
        Fraction of the official train/validation images that go to validation
        (by patient).
    uncertain
        CheXpert uncertain labels (-1) as ``"zeros"`` (U-Zeros) or ``"ones"`` (U-Ones).
    dicom_key
        The labels CSV column that names a DICOM image.
    patient_column
        The labels CSV column with the patient ID (empty: CheXpert reads it from the
        path, DICOM uses ``PatientID``; NIH always uses ``Patient ID``).
    cache, cache_dir, cache_dtype, cache_workers
        Decode and resize once into a ``uint8``/``uint16`` memmap under ``cache_dir``,
        with ``cache_workers`` processes (0: in this process).
    max_images
        Use only the first N records (0: all).
    """

    format: Literal["nih", "chexpert", "dicom"] = "nih"
    images: str = ""
    labels: str = ""
    split_file: str = ""
    fractions: tuple[float, ...] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    official_test_list: str = ""
    official_train_val_list: str = ""
    val_fraction: float = 0.1
    uncertain: Literal["zeros", "ones"] = "zeros"
    dicom_key: Literal["SOPInstanceUID", "AccessionNumber"] = "SOPInstanceUID"
    patient_column: str = ""
    cache: bool = True
    cache_dir: str = "runs/cache"
    cache_dtype: Literal["uint8", "uint16"] = "uint8"
    cache_workers: int = 0
    max_images: int = 0


@dataclass(frozen=True)
class TrainPreprocessConfig:
    """``[preprocessing]``: resize side and network input side (centre crop).

    Attributes
    ----------
    resize
        Side the images are resized to (and cached at).
    input_size
        Side of the centre crop the network sees (16 <= input_size <= resize).
    """

    resize: int = 256
    input_size: int = 224

    def __post_init__(self) -> None:
        if not 16 <= self.input_size <= self.resize:
            raise ConfigError("preprocessing needs 16 <= input_size <= resize")


@dataclass(frozen=True)
class AugmentConfig:
    """``[augment]``: training-time augmentation applied to the resized image.

    Attributes
    ----------
    hflip
        Probability of a horizontal flip.
    rotate_deg
        Maximum rotation in degrees.
    scale
        Zoom range ``[low, high]``.
    translate
        Maximum shift as a fraction of the side.
    brightness, contrast
        Maximum additive / multiplicative jitter.
    """

    hflip: float = 0.5
    rotate_deg: float = 0.0
    scale: tuple[float, ...] = (1.0, 1.0)
    translate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.hflip <= 1.0:
            raise ConfigError("augment.hflip must be a probability")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError("augment.scale must be [low, high] with 0 < low <= high")


@dataclass(frozen=True)
class OptimConfig:
    """``[train]``: optimisation, schedule, precision and budget.

    Attributes
    ----------
    epochs, batch_size, eval_batch_size
        Epochs to run, training batch per process, validation batch.
    lr, betas, weight_decay
        Adam settings.
    plateau_factor, plateau_patience, min_lr
        ReduceLROnPlateau on the validation loss.
    class_weights
        ``"balanced"``: BCE ``pos_weight`` = negatives / positives per class (capped
        at 100); ``"none"``: unweighted.
    seed
        Seed of the initialisation, the epoch order and the augmentation draws.
    max_minutes
        Time budget in minutes (0: none); after the first epoch, a new one starts only
        when 1.1 x the longest epoch so far still fits.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    precision, channels_last
        ``"bf16"`` autocast forward passes and NHWC activations; ``"auto"`` turns both
        on on CUDA and off on CPU.
    deterministic
        Deterministic cuDNN kernels (no benchmark autotuning).
    threads, num_workers
        Torch intra-op threads (0: default) and DataLoader workers.
    init_weights
        An ImageNet torchvision file or a project ``*.card.json`` bundle (empty: random).
    """

    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 1e-3
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 0.0
    plateau_factor: float = 0.1
    plateau_patience: int = 1
    min_lr: float = 0.0
    class_weights: Literal["none", "balanced"] = "none"
    seed: int = 0
    max_minutes: float = 0.0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    deterministic: bool = True
    threads: int = 0
    num_workers: int = 0
    init_weights: str = ""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.eval_batch_size < 1:
            raise ConfigError("train.epochs >= 1 and train.batch_size >= 2 are required")
        if self.lr <= 0 or not 0 < self.plateau_factor < 1:
            raise ConfigError("train.lr must be > 0 and train.plateau_factor in (0, 1)")
        check_device(self.device, "train.device")


@dataclass(frozen=True)
class TrainOutputConfig:
    """``[output]``: run folder and the exported bundle.

    Attributes
    ----------
    run_dir
        Checkpoints, ``log.csv`` and ``config.json`` of the run.
    export_dir
        Where the fp16 bundle and its model card go (empty: no export).
    stem, name, version, intended_use
        Bundle file stem and the card's name, version and intended use.
    bootstrap
        Patient-level bootstrap resamples for the card's confidence intervals.
    cam_percentile
        Percentile of the validation CAM values that sets the card's ``cam_scale``.
    command
        The command recorded as the card's source (default ``chexdcm train``).
    operating_point
        How each finding's operating point is chosen on the validation split:
        ``"youden"`` (maximum sensitivity + specificity - 1) or ``"specificity:S"`` (the
        lowest threshold whose validation specificity is at least S, e.g. 0.90).
    """

    run_dir: str = "runs/train"
    export_dir: str = ""
    stem: str = "chexnet"
    name: str = "chexnet-dicom"
    version: str = "0.0.0"
    intended_use: str = "Research use only. Not for clinical use."
    bootstrap: int = 2000
    cam_percentile: float = 99.0
    command: str = ""
    operating_point: str = "youden"

    def __post_init__(self) -> None:
        if self.operating_point == "youden":
            return
        kind, _, value = self.operating_point.partition(":")
        try:
            ok = kind == "specificity" and 0.0 < float(value) < 1.0
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f"output.operating_point must be 'youden' or 'specificity:S' with 0 < S < 1, "
                f"not {self.operating_point!r}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """A whole training recipe: one attribute per TOML section."""

    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    preprocessing: TrainPreprocessConfig = field(default_factory=TrainPreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    output: TrainOutputConfig = field(default_factory=TrainOutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (stored in checkpoints and the model card).

        Returns
        -------
        dict
            ``{section: {key: value}}``.
        """
        return dataclasses.asdict(self)


def load_train_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Load and validate a training recipe.

    Parameters
    ----------
    path
        TOML file.
    overrides
        ``{"train.epochs": 2, ...}`` applied on top (dotted section.key, as
        :func:`~chexnet_dicom.config.overrides.merge_overrides`).

    Returns
    -------
    TrainConfig
        The validated recipe.

    Raises
    ------
    ConfigError
        Unknown keys, wrong types, invalid values (the message names the key).
    """
    return load_config(TrainConfig, path, overrides)
