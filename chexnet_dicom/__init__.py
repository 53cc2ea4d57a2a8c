"""chexnet-dicom: a DICOM-native clinical research toolkit for chest radiograph AI.

Research use only: not a medical device, not for clinical decisions.
"""

from __future__ import annotations

import logging

from chexnet_dicom.errors import (
    ChexDicomError,
    ConfigError,
    CorruptHeaderError,
    CorruptPixelDataError,
    InferenceError,
    InputError,
    InputTooLargeError,
    ModelError,
    NotDicomError,
    OutputError,
    StorageError,
    TransferError,
    UnsupportedInputError,
    WeightsError,
)

__version__ = "0.1.0"

__all__ = [
    "ChexDicomError",
    "ConfigError",
    "CorruptHeaderError",
    "CorruptPixelDataError",
    "InferenceError",
    "InputError",
    "InputTooLargeError",
    "ModelError",
    "NotDicomError",
    "OutputError",
    "StorageError",
    "TransferError",
    "UnsupportedInputError",
    "WeightsError",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
