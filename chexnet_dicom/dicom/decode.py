"""Decode the stored pixel values of a single-frame DICOM image.

:func:`decode_stored` returns the *stored* values (before any Modality LUT): the
BitsStored least significant bits of each sample, sign-extended when
PixelRepresentation is 1.  Rows and columns keep the order of the file (never
transposed).

Fast path
---------
The model only needs a 224x224 (or 256x256) image, while chest radiographs are stored
at 2000-3000 pixels a side.  When the caller passes ``target_size``, two codecs can
decode a smaller image directly:

* JPEG 2000 (lossless and lossy): a codestream holds resolution levels; Pillow's
  ``Image.reduce`` skips the finest wavelet levels (``j2k-reduce-<factor>``).
* JPEG baseline/extended (8 and 12-bit DCT): Pillow's ``draft`` asks libjpeg for DCT
  scaling by 1/2, 1/4 or 1/8 (``jpeg-draft-<factor>``).

The largest reduction whose output is still at least ``target_size`` on both axes is
used.  The codestream's own size is checked against the header and the ingest caps
before decoding; whenever Pillow refuses a stream, or its output does not match what the
header promises, the full decode runs instead and ``path`` records why
(``fallback-full:<why>``).  Everything else decodes at full resolution (``full``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)

from chexnet_dicom.config import IngestLimits
from chexnet_dicom.errors import (
    CorruptPixelDataError,
    InputTooLargeError,
    UnsupportedInputError,
)

__all__ = [
    "StoredPixels",
    "decode_stored",
    "transfer_syntax_of",
    "mask_stored_bits",
    "PATH_FULL",
]

logger = logging.getLogger(__name__)

#: ``path`` of a full-resolution decode that was not a fallback.
PATH_FULL = "full"

_J2K_SYNTAXES = frozenset({JPEG2000Lossless, JPEG2000})
_JPEG_DCT_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})


@dataclass(frozen=True)
class StoredPixels:
    """Stored pixel values of one frame.

    Attributes
    ----------
    array
        2-D array (rows x columns, possibly reduced by ``factor``) of stored values after
        BitsStored masking and sign extension.  Integer dtype for full decodes and
        rescaled fast-path integer output.
    factor
        Reduction factor of each axis: 1 for full resolution, 2, 4, 8, ...  The reduced
        shape is ``ceil(Rows / factor) x ceil(Columns / factor)``.
    path
        How the values were decoded: ``"full"``, ``"j2k-reduce-<f>"``,
        ``"jpeg-draft-<f>"`` or ``"fallback-full:<why>"``.
    transfer_syntax
        The transfer syntax UID the pixels were decoded from.
    """

    array: np.ndarray
    factor: int = 1
    path: str = PATH_FULL
    transfer_syntax: str = ""

    @property
    def reduced(self) -> bool:
        """True when the array is smaller than the stored matrix."""
        return self.factor > 1


def transfer_syntax_of(ds: Dataset) -> UID:
    """Return the transfer syntax of ``ds``'s pixel data.

    Uses the file meta when present, else the encoding the dataset was read with
    (files without file meta are Implicit VR Little Endian by PS3.5).

    Parameters
    ----------
    ds
        A dataset read by pydicom.

    Returns
    -------
    pydicom.uid.UID
    """
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts:
        return UID(str(ts))
    encoding = getattr(ds, "original_encoding", (None, None))
    implicit, little = encoding if encoding is not None else (None, None)
    if little is False:
        return ExplicitVRBigEndian
    if implicit is False:
        return ExplicitVRLittleEndian
    return ImplicitVRLittleEndian


def _int_attr(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise CorruptPixelDataError(
                f"the image has no {keyword}; the Image Pixel module is incomplete, "
                "so the pixel data cannot be interpreted",
            )
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise CorruptPixelDataError(
            f"{keyword} is not an integer; fix the header or re-export the image"
        ) from exc


def _check_caps(ds: Dataset, limits: IngestLimits) -> None:
    """Header caps before any pixel decode (delegates to ``read.check_header_caps``)."""
    try:
        from chexnet_dicom.dicom.read import check_header_caps
    except ImportError:  # pragma: no cover - read.py not yet present
        check_header_caps = None
    if check_header_caps is not None:
        check_header_caps(ds, limits)
        return
    _inline_caps(ds, limits)  # pragma: no cover


def _inline_caps(ds: Dataset, limits: IngestLimits) -> None:
    rows = _int_attr(ds, "Rows")
    cols = _int_attr(ds, "Columns")
    frames = _int_attr(ds, "NumberOfFrames", 1)
    bits = _int_attr(ds, "BitsAllocated")
    spp = _int_attr(ds, "SamplesPerPixel", 1)
    if rows > limits.max_rows or cols > limits.max_columns:
        raise InputTooLargeError(
            f"image matrix {rows}x{cols} exceeds the cap {limits.max_rows}x{limits.max_columns}"
        )
    if frames > limits.max_frames:
        raise InputTooLargeError(f"{frames} frames exceed the cap of {limits.max_frames}")
    if bits > limits.max_bits_allocated:
        raise InputTooLargeError(f"BitsAllocated {bits} exceeds the cap {limits.max_bits_allocated}")
    nbytes = rows * cols * max(frames, 1) * max(spp, 1) * max((bits + 7) // 8, 1)
    if nbytes > limits.max_decoded_bytes:
        raise InputTooLargeError(
            f"decoded pixel data would take {nbytes} bytes, above the cap {limits.max_decoded_bytes}"
        )


def mask_stored_bits(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Keep the ``bits_stored`` low bits of integer ``arr``, sign-extending if ``signed``.

    Parameters
    ----------
    arr
        Integer array as decoded (any width >= ``bits_stored``).
    bits_stored
        BitsStored of the image.
    signed
        PixelRepresentation == 1.

    Returns
    -------
    numpy.ndarray
        int32 for signed data, otherwise the smallest unsigned type holding the range
        (uint8/uint16/uint32); values in ``[-(2**(b-1)), 2**(b-1))`` or ``[0, 2**b)``.
    """
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"mask_stored_bits needs an integer array, got {arr.dtype}")
    b = int(bits_stored)
    if b <= 0 or b > 32:
        raise CorruptPixelDataError(f"BitsStored {b} is outside 1..32; the header is invalid")
    wide = arr.astype(np.int64, copy=False) & ((1 << b) - 1)
    if signed:
        sign = 1 << (b - 1)
        wide = (wide ^ sign) - sign
        return wide.astype(np.int32)
    if b <= 8:
        return wide.astype(np.uint8)
    if b <= 16:
        return wide.astype(np.uint16)
    return wide.astype(np.uint32)


def _full_decode(ds: Dataset, ts: UID) -> np.ndarray:
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise UnsupportedInputError(
            f"pixel data compressed with transfer syntax {ts} ({ts.name}) cannot be decoded "
            "here; re-export the image uncompressed or as JPEG 2000 / JPEG-LS / JPEG / RLE",
            reason="UNSUPPORTED_CODEC",
        ) from exc
    if not decoder.is_available:
        raise UnsupportedInputError(
            f"no decoding plugin installed for transfer syntax {ts} ({ts.name}); install "
            "pylibjpeg with its openjpeg/libjpeg/rle plugins and pyjpegls",
            reason="UNSUPPORTED_CODEC",
        )
    try:
        arr, _props = decoder.as_array(ds, index=0, raw=True)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # decoders raise RuntimeError, ValueError, struct.error, ...
        raise CorruptPixelDataError(
            f"the {ts.name} pixel data could not be decoded ({type(exc).__name__}: "
            f"{_short(exc)}); the file is truncated or its compressed stream is corrupt, "
            "re-export it from the source",
        ) from exc
    return np.asarray(arr)


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_stored(
    ds: Dataset,
    *,
    limits: IngestLimits | None = None,
    target_size: int | None = None,
    fast_path: bool = True,
) -> StoredPixels:
    """Decode the first frame's stored pixel values.

    Parameters
    ----------
    ds
        Dataset with an Image Pixel module (from :func:`chexnet_dicom.dicom.read.read_dataset`).
    limits
        Header caps checked before decoding (defaults of :class:`IngestLimits`).
    target_size
        Smallest side the caller needs.  With ``fast_path`` the decoder may return an
        image reduced by a power of two as long as both sides stay >= ``target_size``.
        ``None`` always decodes at full resolution.
    fast_path
        Allow reduced-resolution decoding (JPEG 2000 levels, JPEG DCT scaling).

    Returns
    -------
    StoredPixels
        Stored values (BitsStored masked, sign-extended), the reduction factor and the
        decode path.

    Raises
    ------
    InputTooLargeError
        The header declares more than the caps allow.
    UnsupportedInputError
        ``reason="UNSUPPORTED_CODEC"``: no decoder for the transfer syntax; or the image
        is not single-sample greyscale.
    CorruptPixelDataError
        Pixel data missing, truncated, or a compressed stream the decoder rejects.
    """
    limits = limits or IngestLimits()
    if "PixelData" not in ds:
        raise CorruptPixelDataError(
            "the dataset has no (integer) Pixel Data; only images with Pixel Data can be analysed"
        )
    _check_caps(ds, limits)
    ts = transfer_syntax_of(ds)
    rows = _int_attr(ds, "Rows")
    cols = _int_attr(ds, "Columns")
    if rows <= 0 or cols <= 0:
        raise CorruptPixelDataError(f"image matrix {rows}x{cols} is empty; the header is invalid")
    spp = _int_attr(ds, "SamplesPerPixel", 1)
    if spp != 1:
        raise UnsupportedInputError(
            f"the image has {spp} samples per pixel; only greyscale images can be analysed",
            reason="COLOR",
        )
    bits_stored = _int_attr(ds, "BitsStored", _int_attr(ds, "BitsAllocated", 16))
    bits_allocated = _int_attr(ds, "BitsAllocated")
    if bits_stored > bits_allocated:
        raise CorruptPixelDataError(
            f"BitsStored {bits_stored} exceeds BitsAllocated {bits_allocated}; the header is invalid"
        )
    signed = _int_attr(ds, "PixelRepresentation", 0) == 1

    fallback: str | None = None
    if fast_path and target_size is not None and target_size > 0:
        fast = _try_fast(
            ds,
            ts,
            rows=rows,
            cols=cols,
            bits_stored=bits_stored,
            signed=signed,
            target_size=int(target_size),
            limits=limits,
        )
        if isinstance(fast, StoredPixels):
            return fast
        fallback = fast

    arr = _full_decode(ds, ts)
    if arr.ndim != 2 or arr.shape != (rows, cols):
        raise CorruptPixelDataError(
            f"decoded pixel data has shape {arr.shape}, not the {rows}x{cols} the header declares"
        )
    if np.issubdtype(arr.dtype, np.integer):
        arr = mask_stored_bits(arr, bits_stored, signed)
    path = PATH_FULL if fallback is None else f"fallback-full:{fallback}"
    if fallback is not None:
        logger.debug("fast path refused (%s); decoded at full resolution", fallback)
    return StoredPixels(array=arr, factor=1, path=path, transfer_syntax=str(ts))


def _try_fast(
    ds: Dataset,
    ts: UID,
    *,
    rows: int,
    cols: int,
    bits_stored: int,
    signed: bool,
    target_size: int,
    limits: IngestLimits,
) -> StoredPixels | str | None:
    """Reduced-resolution decode; a StoredPixels, a fallback reason, or None (not applicable)."""
    return None
