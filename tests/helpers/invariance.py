"""Ways of writing one image as DICOM (window, rescale, VOI LUT, signed, codecs) for invariance tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import JPEGBaseline8Bit

from chexnet_dicom.testing import synth

__all__ = [
    "Builder",
    "dx12",
    "encoded",
    "jpeg_baseline_8bit",
    "mono1_window",
    "rescale16",
    "signed12",
    "voi_lut",
]

Builder = Callable[[np.ndarray, int], Dataset]


def mono1_window(img: np.ndarray, seed: int) -> Dataset:
    return synth.make_dataset(
        img, modality="CR", photometric="MONOCHROME1", bits_stored=12, stored_range=(300, 3700), seed=seed
    )


def rescale16(img: np.ndarray, seed: int) -> Dataset:
    return synth.make_dataset(
        img, modality="CR", bits_stored=16, rescale_slope=0.25, rescale_intercept=-1024.0, seed=seed
    )


def voi_lut(img: np.ndarray, seed: int) -> Dataset:
    return synth.make_dataset(img, bits_stored=12, window=None, voi_lut=True, seed=seed)


def signed12(img: np.ndarray, seed: int) -> Dataset:
    return synth.make_dataset(img, modality="CR", bits_stored=12, pixel_representation=1, seed=seed)


def dx12(img: np.ndarray, seed: int) -> Dataset:
    return synth.make_dataset(img, bits_stored=12, seed=seed)


def encoded(syntax: str, base: Builder = dx12, **kw: float) -> Builder:
    def build(img: np.ndarray, seed: int) -> Dataset:
        return synth.encode(base(img, seed), syntax, **kw)  # type: ignore[arg-type]

    return build


def jpeg_baseline_8bit(img: np.ndarray, seed: int) -> Dataset:
    ds = synth.make_dataset(img, bits_stored=8, seed=seed)
    return synth.encode(ds, JPEGBaseline8Bit, jpeg_quality=95)
