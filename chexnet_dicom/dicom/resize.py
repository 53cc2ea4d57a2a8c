"""The one image resize of the package: Pillow's anti-aliased bilinear filter on float32.

The display image, heatmaps mapped to the source grid, the training cache and the model
input (:func:`chexnet_dicom.preprocess.resize_image`) all resize through
:func:`resize_display`, so they can never resize differently.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["resize_display"]


def resize_display(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float image with Pillow's anti-aliased bilinear filter.

    The one implementation: :func:`chexnet_dicom.preprocess.resize_image` (the model
    input's resize) calls it, so the display image, the training cache and the model
    input never resize differently.

    Parameters
    ----------
    image
        (H, W) array, any real dtype.
    shape
        (rows, columns) of the result.

    Returns
    -------
    numpy.ndarray
        float32 (rows, columns).
    """
    src = np.ascontiguousarray(image, dtype=np.float32)
    if src.shape == tuple(shape):
        return src.copy()
    rows, cols = shape
    out = Image.fromarray(src, mode="F").resize((cols, rows), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32)
