"""Model-input preparation, in numpy and Pillow only (no MONAI, no torch).

These functions are the *single* definition of how a [0, 1] display image (bright =
dense, head up, patient's right on the image left) becomes the network input.  Training
(:mod:`chexnet_dicom.train`), inference (:mod:`chexnet_dicom.pipeline`) and the MONAI
dictionary transforms (:mod:`chexnet_dicom.transforms`) all call
:func:`prepare_model_input`, so they can never drift apart; keeping them free of MONAI
and torch lets ``chexdcm infer`` run without importing either.

Resizing uses Pillow's BILINEAR filter on float32 (mode ``F``) images, which widens the
kernel when shrinking (anti-aliased, like torchvision's ``Resize`` on PIL images).

Loading an image (DICOM, or the PNGs of the public NIH dataset) is
:mod:`chexnet_dicom.raster`'s job.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from chexnet_dicom.dicom.resize import resize_display

__all__ = [
    "center_crop",
    "decode_target_size",
    "normalise",
    "prepare_model_input",
    "resize_image",
    "ten_crop",
]


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float image with anti-aliased bilinear interpolation.

    This is :func:`chexnet_dicom.dicom.resize.resize_display` (one implementation, so the
    display image, the training cache and the model input can never resize differently).

    Parameters
    ----------
    image
        (H, W) array, any real dtype.
    size
        Output side, or (rows, columns).

    Returns
    -------
    numpy.ndarray
        float32 (rows, columns).
    """
    if image.ndim != 2:
        raise ValueError(f"resize_image needs a 2-D image, got shape {image.shape}")
    shape = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return resize_display(image, shape)


def decode_target_size(resize: int) -> int:
    """Smallest image side to decode for a model whose input is resized to ``resize``.

    Twice the resize: reduced-resolution decoding (JPEG 2000 levels, JPEG DCT scaling)
    then stops one level above the model's size, and the final step is always the same
    anti-aliased :func:`resize_image`. Decoding straight to ``resize`` would hand the
    model the codec's own low-pass image instead, which moved demo-model probabilities by
    up to 0.08 against the PNG of the same pixels (<= 0.007 with this rule;
    ``tests/model/test_prediction_invariance.py``).

    Parameters
    ----------
    resize
        The model card's ``preprocessing.resize``.

    Returns
    -------
    int
        ``2 * resize``.
    """
    return 2 * int(resize)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Return the central ``size x size`` window of the last two axes."""
    h, w = image.shape[-2:]
    top = (h - size) // 2
    left = (w - size) // 2
    return image[..., top : top + size, left : left + size]


def ten_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Four corners and centre, then the same of the horizontally mirrored image.

    Returns
    -------
    numpy.ndarray
        (10, size, size), torchvision ``TenCrop`` order.
    """
    h, w = image.shape[-2:]
    crops = [
        image[..., :size, :size],
        image[..., :size, w - size :],
        image[..., h - size :, :size],
        image[..., h - size :, w - size :],
        center_crop(image, size),
    ]
    flipped = image[..., ::-1]
    crops += [
        flipped[..., :size, :size],
        flipped[..., :size, w - size :],
        flipped[..., h - size :, :size],
        flipped[..., h - size :, w - size :],
        center_crop(flipped, size),
    ]
    return np.stack([np.ascontiguousarray(c) for c in crops])


def normalise(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Replicate a grey image into ``len(mean)`` channels and normalise each.

    Parameters
    ----------
    image
        (..., H, W) values in [0, 1].

    Returns
    -------
    numpy.ndarray
        float32 (..., C, H, W).
    """
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    x = image[..., None, :, :].astype(np.float32, copy=False)
    return ((x - m) / s).astype(np.float32)


def prepare_model_input(
    image: np.ndarray,
    *,
    resize: int = 256,
    input_size: int = 224,
    tta: Literal["none", "tencrop"] = "none",
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    std: tuple[float, float, float] = (0.229, 0.224, 0.225),
) -> np.ndarray:
    """Turn a [0, 1] display image into the network input.

    Steps: resize to ``resize x resize`` (aspect ratio not kept, as CheXNet), then a
    centre crop of ``input_size`` (or TenCrop), grey replicated into 3 channels,
    per-channel normalisation.

    Parameters
    ----------
    image
        (H, W) float image in [0, 1].
    resize, input_size, tta, mean, std
        The model card's preprocessing spec.

    Returns
    -------
    numpy.ndarray
        float32 (3, input_size, input_size), or (10, 3, input_size, input_size) for TenCrop.
    """
    if image.ndim != 2:
        raise ValueError(f"prepare_model_input needs a 2-D image, got shape {image.shape}")
    resized = resize_image(image, resize)
    if tta == "tencrop":
        crops = ten_crop(resized, input_size)
        return normalise(crops, mean, std)
    if tta != "none":
        raise ValueError(f"unknown test-time augmentation {tta!r}")
    return normalise(center_crop(resized, input_size), mean, std)
