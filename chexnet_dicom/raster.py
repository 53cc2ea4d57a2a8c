"""Loading a chest radiograph from DICOM or from a raster file (PNG, JPEG, TIFF).

:func:`load_chest_image` recognises the format from the file's first bytes (not its
name).  DICOM goes through :func:`chexnet_dicom.dicom.load.load_image` (VOI, MONOCHROME1,
orientation, fast reduced-resolution decode); PNG, JPEG and TIFF (the public NIH
ChestX-ray14 dataset is PNG) through Pillow: 8-bit ``L``, 16-bit ``I;16``, ``LA``,
``RGB``, ``RGBA`` and palette images become one grey [0, 1] channel (colour by ITU-R
BT.601 luma after compositing over black by alpha).  Rows and columns are never
transposed.  Training and the evaluation scripts use it; inference reads DICOM only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.load import load_image
from chexnet_dicom.dicom.pixels import DisplayImage
from chexnet_dicom.errors import CorruptPixelDataError, UnsupportedInputError

__all__ = ["image_to_grey", "load_chest_image"]

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
    (:func:`chexnet_dicom.dicom.load.load_image`).

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
        return load_image(p, config=config, target_size=target_size).display
    return load_image(path, config=config, target_size=target_size).display
