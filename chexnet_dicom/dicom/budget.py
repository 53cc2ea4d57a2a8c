"""The working-set budget of one image: what its analysis may hold in memory, whatever its size.

The ingest caps (:class:`~chexnet_dicom.config.IngestLimits`: rows, columns, decoded bytes)
bound the *input*; this module bounds the *working set* of an image's analysis:

Budget
    peak memory of one image's analysis <= the model + ``max_working_bytes`` (default
    256 MiB: the decode of an image whose codec has no reduced decode) + the bounded
    analysis of a grid of at most ``max_grid_side`` pixels a side (measured by
    ``benchmarks/memory.py``; a few hundred MiB at 4096 x 4096, flat beyond it).

Enforced by design
    * **Reduce early.**  JPEG 2000 and 8-bit JPEG decode at a reduced resolution
      (:mod:`chexnet_dicom.dicom.decode`).  Every other syntax (RLE, JPEG-LS,
      uncompressed, deflated, and a JPEG 2000 stream without enough resolution levels)
      is decoded once and area-reduced at once by :func:`area_reduce`, in the stored
      integer type (a block mean, rounded), before any Modality LUT or VOI; no float64
      copy is made at full resolution.
    * **Bounded grid.**  Heatmaps, regions and the Secondary Capture overlay are computed
      on the *output grid* (:func:`grid_shape`): the source pixel grid when both its
      sides are at most ``max_grid_side``, else the source grid reduced by the smallest
      integer factor ``s`` that brings it there.  Region coordinates are mapped back to
      source coordinates by scaling by ``s`` (:mod:`chexnet_dicom.outputs.regions`).  A
      huge image's SC is the downscaled grid, its PixelSpacing multiplied by ``s`` and
      the scale named in its DerivationDescription.
    * **Refused before decode.**  An image whose decode alone would need more than
      ``max_working_bytes`` (:func:`decode_working_bytes`) is refused with
      :class:`~chexnet_dicom.errors.InputTooLargeError` (reason ``TOO_LARGE``) naming the
      setting, at the header read (the scan of every door) and again before a full
      decode (a JPEG 2000 stream whose fast path does not apply).
"""

from __future__ import annotations

import math

import numpy as np

from chexnet_dicom.config import IngestLimits
from chexnet_dicom.errors import InputTooLargeError

__all__ = [
    "SETTING",
    "area_reduce",
    "check_decode_budget",
    "decode_working_bytes",
    "grid_factor",
    "grid_shape",
    "reduced_syntax",
]

#: The setting an over-budget refusal names.
SETTING = "ingest.limits.max_working_bytes"

#: Syntaxes decoded at a reduced resolution (JPEG 2000 levels, JPEG DCT scaling).
_REDUCED_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
        "1.2.840.10008.1.2.4.50",
    }
)
_J2K = frozenset(s for s in _REDUCED_SYNTAXES if s != "1.2.840.10008.1.2.4.50")
_DEFLATED = "1.2.840.10008.1.2.1.99"

#: Rows of one strip of :func:`area_reduce` (bounds its int64 accumulator).
_STRIP_PIXELS = 1 << 22


def reduced_syntax(transfer_syntax: str) -> bool:
    """True when the syntax has a reduced-resolution decode (JPEG 2000, 8-bit JPEG)."""
    return str(transfer_syntax) in _REDUCED_SYNTAXES


def grid_factor(rows: int, cols: int, max_side: int) -> int:
    """The smallest integer ``s`` with ``ceil(rows / s)`` and ``ceil(cols / s)`` at most ``max_side``."""
    return max(1, math.ceil(max(rows, cols) / max(1, max_side)))


def grid_shape(rows: int, cols: int, max_side: int) -> tuple[tuple[int, int], int]:
    """The output grid of a ``rows x cols`` source and its scale ``s`` (source pixels per grid pixel).

    Returns
    -------
    ((int, int), int)
        ``((ceil(rows / s), ceil(cols / s)), s)``; ``s == 1``: the source grid itself.
    """
    s = grid_factor(rows, cols, max_side)
    return (-(-rows // s), -(-cols // s)), s


def decode_working_bytes(
    rows: int, cols: int, bits_allocated: int, transfer_syntax: str, *, reduced: bool, stream_bytes: int = 0
) -> int:
    """Memory one decode needs, estimated from the header before anything is decoded.

    Parameters
    ----------
    rows, cols, bits_allocated
        The image matrix.
    transfer_syntax
        The pixel data's syntax.
    reduced
        The decode runs at a reduced resolution (the fast path applies): only the
        compressed stream and a reduced image are held.
    stream_bytes
        Size of the compressed stream (or file), when known.

    Returns
    -------
    int
        Bytes: the decoder's output at full resolution and pydicom's copy of it (two
        frames of the stored type), plus OpenJPEG's 32-bit component buffer for a full
        JPEG 2000 decode, plus the inflated dataset of a deflated file, plus the stream.
    """
    if reduced and reduced_syntax(transfer_syntax):
        return int(stream_bytes)
    frame = rows * cols * max(1, (bits_allocated + 7) // 8)
    extra = 0
    ts = str(transfer_syntax)
    if ts in _J2K:
        extra = rows * cols * 4
    elif ts == _DEFLATED:
        extra = frame
    return 2 * frame + extra + int(stream_bytes)


def check_decode_budget(
    rows: int,
    cols: int,
    bits_allocated: int,
    transfer_syntax: str,
    limits: IngestLimits,
    *,
    reduced: bool,
    stream_bytes: int = 0,
) -> None:
    """Refuse, before decoding, an image whose decode would exceed ``max_working_bytes``.

    Raises
    ------
    InputTooLargeError
        Reason ``TOO_LARGE``; the message names :data:`SETTING`.
    """
    need = decode_working_bytes(
        rows, cols, bits_allocated, transfer_syntax, reduced=reduced, stream_bytes=stream_bytes
    )
    if need > limits.max_working_bytes:
        how = "at a reduced resolution" if reduced else "at full resolution (no reduced decode applies)"
        raise InputTooLargeError(
            f"decoding this {rows}x{cols} image {how} needs about {need >> 20} MiB, above the "
            f"working-set budget of {limits.max_working_bytes >> 20} MiB ({SETTING}); raise "
            f"{SETTING} only if such images are expected and memory allows"
        )


def area_reduce(arr: np.ndarray, factor: int) -> np.ndarray:
    """Block mean of ``factor x factor`` tiles, in ``arr``'s integer type (rounded half up).

    Edge tiles that the image does not fill are averaged over the pixels they hold, so
    the result is ``ceil(rows / factor) x ceil(cols / factor)``.  The image is reduced in
    strips of rows, so the int64 accumulator never holds more than a few MiB.

    Parameters
    ----------
    arr
        2-D integer array of stored values.
    factor
        Reduction of each axis (>= 1).

    Returns
    -------
    numpy.ndarray
        ``arr`` itself for ``factor == 1``; otherwise a new array of ``arr.dtype``.
    """
    f = int(factor)
    if f <= 1:
        return arr
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"area_reduce needs a 2-D integer array, got {arr.dtype} {arr.shape}")
    rows, cols = arr.shape
    out_r, out_c = -(-rows // f), -(-cols // f)
    full_c = cols // f
    out = np.empty((out_r, out_c), dtype=arr.dtype)
    # column counts of each output column (the last may be partial)
    ccount = np.full(out_c, f, dtype=np.int64)
    if full_c < out_c:
        ccount[-1] = cols - full_c * f
    band = max(1, _STRIP_PIXELS // max(1, cols * f))  # output rows per strip
    for r0 in range(0, out_r, band):
        r1 = min(out_r, r0 + band)
        block = arr[r0 * f : min(rows, r1 * f)]
        nrows = block.shape[0]
        # sum over rows of each tile (partial last tile row allowed)
        starts = np.arange(0, nrows, f)
        rsum = np.add.reduceat(block.astype(np.int64), starts, axis=0)
        rcount = np.minimum(f, nrows - starts).astype(np.int64)
        csum = np.add.reduceat(rsum, np.arange(0, cols, f), axis=1)
        count = rcount[:, None] * ccount[None, :]
        out[r0:r1] = (2 * csum + count) // (2 * count)
    return out
