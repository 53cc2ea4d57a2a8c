"""Stored values of synthetic images: the range BitsStored holds and the quantisation of a display image.

A float image ``v`` in [0, 1] becomes stored values ``lo + round(p * (hi - lo))`` over
``stored_range`` (default: the whole range of BitsStored), with ``p = 1 - v`` when the
display is inverted, else ``p = v`` (see :mod:`chexnet_dicom.testing.synth`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["stored_range_for", "to_stored"]


def stored_range_for(bits_stored: int, pixel_representation: int = 0) -> tuple[int, int]:
    """Return the (min, max) stored value representable with ``bits_stored`` bits.

    Parameters
    ----------
    bits_stored
        BitsStored (1-16).
    pixel_representation
        0 unsigned, 1 two's complement.

    Returns
    -------
    tuple of int
        For example ``(0, 4095)`` for 12-bit unsigned, ``(-2048, 2047)`` signed.
    """
    if not 1 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 1-16, got {bits_stored}")
    if pixel_representation == 1:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def to_stored(
    image: np.ndarray,
    *,
    bits_stored: int = 12,
    pixel_representation: int = 0,
    invert: bool = False,
    stored_range: tuple[int, int] | None = None,
) -> np.ndarray:
    """Quantise a display image in [0, 1] to integer stored values.

    Parameters
    ----------
    image
        Float image, bright = dense; values outside [0, 1] are clipped.
    bits_stored, pixel_representation
        Target BitsStored and signedness.
    invert
        Map bright to low values (MONOCHROME1 or INVERSE presentation).
    stored_range
        ``(lo, hi)`` stored values for 0 and 1; default the whole representable range.

    Returns
    -------
    numpy.ndarray
        int64 array of stored values.
    """
    lo, hi = stored_range if stored_range is not None else stored_range_for(bits_stored, pixel_representation)
    rmin, rmax = stored_range_for(bits_stored, pixel_representation)
    if not rmin <= lo < hi <= rmax:
        raise ValueError(f"stored_range {lo}..{hi} does not fit {bits_stored}-bit data ({rmin}..{rmax})")
    p = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    if invert:
        p = 1.0 - p
    return np.rint(lo + p * (hi - lo)).astype(np.int64)
