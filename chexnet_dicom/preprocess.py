"""Model-input preparation and image loading, in numpy and Pillow only (no MONAI, no torch).

These functions are the *single* definition of how a [0, 1] display image (bright =
dense, head up, patient's right on the image left) becomes the network input.  Training
(:mod:`chexnet_dicom.train`), inference (:mod:`chexnet_dicom.pipeline`) and the MONAI
dictionary transforms (:mod:`chexnet_dicom.transforms`) all call
:func:`prepare_model_input`, so they can never drift apart; keeping them free of MONAI
and torch lets ``chexdcm infer`` run without importing either.

Resizing uses Pillow's BILINEAR filter on float32 (mode ``F``) images, which widens the
kernel when shrinking (anti-aliased, like torchvision's ``Resize`` on PIL images).

Loading: :func:`load_chest_image` returns a :class:`~chexnet_dicom.dicom.pixels.DisplayImage`
for DICOM files (through :func:`chexnet_dicom.dicom.pixels.load_display`: VOI,
MONOCHROME1, orientation, fast reduced-resolution decode) and for PNG/JPEG/TIFF files
(the public NIH dataset is PNG): 8-bit ``L``, 16-bit ``I;16``, ``LA``, ``RGB``, ``RGBA``
and palette images become one grey [0, 1] channel (colour by ITU-R BT.601 luma after
compositing over black by alpha).  Rows and columns are never transposed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
from PIL import Image

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.pixels import DisplayImage, load_display, resize_display
from chexnet_dicom.errors import CorruptPixelDataError, UnsupportedInputError

__all__ = [
    "center_crop",
    "decode_target_size",
    "image_to_grey",
    "load_chest_image",
    "normalise",
    "prepare_model_input",
    "resize_image",
    "ten_crop",
]


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float image with anti-aliased bilinear interpolation.

    This is :func:`chexnet_dicom.dicom.pixels.resize_display` (one implementation, so the
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


# --------------------------------------------------------------------------- loading

_RASTER_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def _raster_format(head: bytes) -> str | None:
    for magic, name in _RASTER_MAGIC:
        if head.startswith(magic):
            return name
    return None


def image_to_grey(im: Image.Image) -> np.ndarray:
    """Convert a loaded Pillow image to one grey [0, 1] float32 channel.

    ``L`` / ``1`` / ``P`` (palette) / ``LA`` / ``RGB`` / ``RGBA`` (8 bits per sample)
    are scaled by 1/255, ``I;16*`` by 1/65535, ``I`` by 1/65535 (or 1/255 when no value
    exceeds 255), ``F`` clipped.  Colour uses ITU-R BT.601 luma; an alpha channel is
    composited over black.

    Parameters
    ----------
    im
        A Pillow image.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1].

    Raises
    ------
    UnsupportedInputError
        ``reason="UNSUPPORTED_IMAGE"`` for other modes (CMYK, YCbCr, ...).
    """
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA")
        mode = "RGBA"
    elif mode == "1":
        im = im.convert("L")
        mode = "L"
    arr = np.asarray(im)
    if mode == "L":
        return arr.astype(np.float32) / np.float32(255.0)
    if mode.startswith("I;16"):
        return arr.astype(np.float32) / np.float32(65535.0)
    if mode == "I":
        a = arr.astype(np.float32)
        top = 65535.0 if float(a.max(initial=0)) > 255 else 255.0
        return np.clip(a / np.float32(top), 0.0, 1.0).astype(np.float32)
    if mode == "F":
        return np.clip(arr.astype(np.float32), 0.0, 1.0)
    if mode in ("LA", "RGB", "RGBA"):
        a = arr.astype(np.float32) / np.float32(255.0)
        if mode == "LA":
            grey = a[..., 0] * a[..., 1]
        else:
            grey = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
            if mode == "RGBA":
                grey = grey * a[..., 3]
        return np.clip(grey, 0.0, 1.0).astype(np.float32)
    raise UnsupportedInputError(
        f"images in Pillow mode {mode} are not supported; convert the file to 8- or 16-bit greyscale PNG",
        reason="UNSUPPORTED_IMAGE",
    )


def _load_raster(path: Path, fmt: str) -> DisplayImage:
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            grey = image_to_grey(im)
    except UnsupportedInputError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptPixelDataError(
            f"the {fmt.upper()} image cannot be decoded ({type(exc).__name__}); the file is "
            "truncated or corrupt, re-export it"
        ) from exc
    rows, cols = grey.shape
    provenance: dict[str, Any] = {
        "steps": [f"{fmt}:{mode}", "grey[0,1]"],
        "flags": [],
        "decode_path": fmt,
        "voi": "none",
        "source_format": fmt,
    }
    return DisplayImage(image=grey, source_shape=(rows, cols), provenance=provenance)


def load_chest_image(
    path: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    config: IngestConfig | None = None,
    target_size: int | None = None,
) -> DisplayImage:
    """Load a chest radiograph (DICOM, PNG, JPEG or TIFF) as the display image.

    The format is recognised from the file's first bytes (not its name): PNG, JPEG and
    TIFF go through Pillow, everything else through the DICOM pipeline
    (:func:`chexnet_dicom.dicom.pixels.load_display`).

    Parameters
    ----------
    path
        File path; ``bytes`` or a binary file object are read as DICOM.
    config
        Ingest limits and pixel policy for DICOM input.
    target_size
        Smallest side the caller needs (the model's resize); lets the DICOM decoder
        take a reduced-resolution path.  Ignored for PNG/JPEG/TIFF.

    Returns
    -------
    DisplayImage
        ``image`` float32 (H, W) in [0, 1], bright = dense; provenance
        ``decode_path`` is ``"png"``/``"jpeg"``/``"tiff"`` for raster files.

    Raises
    ------
    InputError
        Any subclass: not DICOM, unsupported, too large, corrupt.
    """
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        try:
            with p.open("rb") as fh:
                head = fh.read(16)
        except OSError:
            head = b""  # let the DICOM reader produce its typed error
        fmt = _raster_format(head)
        if fmt is not None:
            return _load_raster(p, fmt)
        return load_display(p, config=config, target_size=target_size)
    return load_display(path, config=config, target_size=target_size)
