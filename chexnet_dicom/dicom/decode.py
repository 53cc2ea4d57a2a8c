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

Reduce early
------------
A full decode (RLE, JPEG-LS, uncompressed, deflated, a JPEG 2000 fallback) is
area-reduced right after decoding, in the stored integer type and before any Modality
LUT or VOI (:func:`chexnet_dicom.dicom.budget.area_reduce`, path ``full+area-reduce-<f>``):

* with ``target_size`` and the fast path on, by the largest power of two keeping both
  sides >= ``target_size``, as the JPEG 2000 levels do (not for images declaring a
  PixelPaddingValue, whose padding must not be averaged into the anatomy);
* always, by the integer factor that brings the image onto the bounded output grid
  (``max_grid_side``), whatever the caller asks; a fast-path result still larger than
  that grid is reduced the same way.

Before a full decode the working-set budget is checked
(:func:`chexnet_dicom.dicom.budget.check_decode_budget`): an image whose decode would
exceed ``max_working_bytes`` is refused (``TOO_LARGE``) without being decoded.  A JPEG
2000 frame's zero padding after its EOC marker is trimmed before the reduced decode
(:func:`trim_after_eoc`).
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)

from chexnet_dicom.config import IngestLimits
from chexnet_dicom.dicom.attrs import image_pixel
from chexnet_dicom.dicom.budget import check_decode_budget, grid_factor
from chexnet_dicom.dicom.read import check_header_caps
from chexnet_dicom.dicom.resize import block_mean
from chexnet_dicom.errors import (
    CorruptHeaderError,
    CorruptPixelDataError,
    InputTooLargeError,
    UnsupportedInputError,
)
from chexnet_dicom.logs import redact

__all__ = [
    "StoredPixels",
    "decode_stored",
    "transfer_syntax_of",
    "mask_and_range",
    "mask_stored_bits",
    "PATH_FULL",
    "PATH_AREA_REDUCE",
]

logger = logging.getLogger(__name__)

#: ``path`` of a full-resolution decode that was not a fallback.
PATH_FULL = "full"
#: Suffix of a decode area-reduced in the stored integer type right after decoding
#: (``full+area-reduce-8``): :func:`chexnet_dicom.dicom.budget.area_reduce`.
PATH_AREA_REDUCE = "area-reduce"

_J2K_SYNTAXES = frozenset({JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K})
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
    masked
        True when ``array`` is already BitsStored-masked and sign-extended (every
        :func:`decode_stored` result), so the renderer need not mask it again.
    value_range
        ``(min, max)`` of an integer ``array`` when the decoder measured it while masking.
    """

    array: np.ndarray
    factor: int = 1
    path: str = PATH_FULL
    transfer_syntax: str = ""
    masked: bool = False
    value_range: tuple[int, int] | None = None

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


def mask_stored_bits(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Keep the ``bits_stored`` low bits of integer ``arr``, sign-extending if ``signed``.

    The one stored-bits masker of the package (the decoder and the renderer both call
    it).  Idempotent: an array whose values already lie in the stored range is returned
    as it is, so masking again costs one min/max pass.

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
        ``arr`` itself when already in range; otherwise int32 for signed data and the
        smallest unsigned type holding the range (uint8/uint16/uint32); values in
        ``[-(2**(b-1)), 2**(b-1))`` or ``[0, 2**b)``.

    Raises
    ------
    CorruptHeaderError
        ``bits_stored`` outside 1..32 for integer data.
    """
    return mask_and_range(arr, bits_stored, signed)[0]


def mask_and_range(arr: np.ndarray, bits_stored: int, signed: bool) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`mask_stored_bits`, and the ``(min, max)`` of the result (measured once).

    Returns
    -------
    (numpy.ndarray, (int, int))
    """
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"mask_stored_bits needs an integer array, got {arr.dtype}")
    b = int(bits_stored)
    if b <= 0 or b > 32:
        raise CorruptHeaderError(
            f"BitsStored {b} is outside 1..32 for integer pixel data; the header is invalid"
        )
    lo, hi = (-(1 << (b - 1)), (1 << (b - 1)) - 1) if signed else (0, (1 << b) - 1)
    if arr.size == 0:
        return arr, (0, 0)
    amin, amax = int(arr.min()), int(arr.max())
    if lo <= amin and amax <= hi:
        return arr, (amin, amax)
    wide = arr.astype(np.int64, copy=False) & ((1 << b) - 1)
    if signed:
        sign = 1 << (b - 1)
        wide = (wide ^ sign) - sign
        out = wide.astype(np.int32)
    elif b <= 8:
        out = wide.astype(np.uint8)
    elif b <= 16:
        out = wide.astype(np.uint16)
    else:
        out = wide.astype(np.uint32)
    return out, (int(out.min()), int(out.max()))


#: The fastest installed decoding plugin per transfer syntax, first available wins (a
#: 2048x2048 12-bit image, ``benchmarks/ingest.py``): JPEG-LS through pyjpegls (CharLS)
#: 0.09 s against 0.42 s through pylibjpeg-libjpeg, which pydicom would pick; RLE through
#: pylibjpeg-rle 0.013 s against 0.075 s in numpy; JPEG 2000 through pylibjpeg-openjpeg
#: (Pillow's decoder is OpenJPEG too: retrying a stream OpenJPEG rejected only doubles the
#: time a corrupt file costs).
PREFERRED_PLUGINS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"), ("pyjpegls", "pylibjpeg")),
    "1.2.840.10008.1.2.5": ("pylibjpeg", "pydicom"),
    **dict.fromkeys(
        (
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.4.201",
            "1.2.840.10008.1.2.4.202",
            "1.2.840.10008.1.2.4.203",
        ),
        ("pylibjpeg",),
    ),
}


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
    kwargs: dict[str, Any] = {}
    plugin = next((p for p in PREFERRED_PLUGINS.get(str(ts), ()) if p in decoder.available_plugins), None)
    if plugin is not None:
        kwargs["decoding_plugin"] = plugin
    try:
        arr, _props = decoder.as_array(ds, index=0, raw=True, **kwargs)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # decoders raise RuntimeError, ValueError, struct.error, ...
        raise CorruptPixelDataError(
            f"the {ts.name} pixel data could not be decoded ({type(exc).__name__}: "
            f"{redact(exc)}); the file is truncated or its compressed stream is corrupt, "
            "re-export it from the source",
        ) from exc
    return np.asarray(arr)


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
    CorruptHeaderError
        An Image Pixel attribute is malformed (:func:`chexnet_dicom.dicom.attrs.image_pixel`).
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
    check_header_caps(ds, limits)
    ts = transfer_syntax_of(ds)
    pixel = image_pixel(ds)
    if pixel is None:
        raise CorruptHeaderError("the image has no Rows or Columns; the Image Pixel module is incomplete")
    rows, cols, spp = pixel.rows, pixel.columns, pixel.samples_per_pixel
    if spp != 1:
        raise UnsupportedInputError(
            f"the image has {spp} samples per pixel; only greyscale images can be analysed",
            reason="COLOR",
        )
    bits_stored, signed = pixel.bits_stored, pixel.signed

    check_codestream(ds, ts, rows=rows, cols=cols, limits=limits)
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
            return _bounded(fast, rows, cols, limits)
        fallback = fast

    check_decode_budget(
        rows, cols, pixel.bits_allocated, str(ts), limits, reduced=False, stream_bytes=_pixel_bytes(ds)
    )
    arr = _full_decode(ds, ts)
    if arr.ndim != 2 or arr.shape != (rows, cols):
        raise CorruptPixelDataError(
            f"decoded pixel data has shape {arr.shape}, not the {rows}x{cols} the header declares"
        )
    value_range = None
    path = PATH_FULL if fallback is None else f"fallback-full:{fallback}"
    if fallback is not None:
        logger.debug("fast path refused (%s); decoded at full resolution", fallback)
    factor = 1
    if np.issubdtype(arr.dtype, np.integer):
        arr, value_range = mask_and_range(arr, bits_stored, signed)
        speed = fast_path and target_size is not None and target_size > 0 and "PixelPaddingValue" not in ds
        factor = max(
            grid_factor(rows, cols, limits.max_grid_side),
            _pick_factor(rows, cols, int(target_size or 0), 16) if speed else 1,
        )
        if factor > 1:
            arr = block_mean(arr, factor)
            value_range = (int(arr.min()), int(arr.max()))
            path = f"{path}+{PATH_AREA_REDUCE}-{factor}"
    return StoredPixels(
        array=arr, factor=factor, path=path, transfer_syntax=str(ts), masked=True, value_range=value_range
    )


def _pixel_bytes(ds: Dataset) -> int:
    value = ds.get("PixelData")
    return len(value) if isinstance(value, (bytes, bytearray)) else 0


def _bounded(stored: StoredPixels, rows: int, cols: int, limits: IngestLimits) -> StoredPixels:
    """A fast-path result still larger than the output grid, area-reduced onto it."""
    arr = stored.array
    extra = grid_factor(arr.shape[0], arr.shape[1], limits.max_grid_side)
    if extra <= 1 or not np.issubdtype(arr.dtype, np.integer):
        return stored
    arr = block_mean(arr, extra)
    return StoredPixels(
        array=arr,
        factor=stored.factor * extra,
        path=f"{stored.path}+{PATH_AREA_REDUCE}-{extra}",
        transfer_syntax=stored.transfer_syntax,
        masked=True,
        value_range=(int(arr.min()), int(arr.max())),
    )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pick_factor(rows: int, cols: int, target: int, max_log2: int) -> int:
    """Largest ``2**r`` (r <= max_log2) keeping both reduced sides >= ``target``."""
    r = 0
    while r < max_log2:
        f = 1 << (r + 1)
        if _ceil_div(rows, f) < target or _ceil_div(cols, f) < target:
            break
        r += 1
    return 1 << r


@dataclass(frozen=True)
class _J2KHeader:
    width: int
    height: int
    components: int
    precision: int
    signed: bool
    levels: int
    offset: int  # where the codestream starts in the frame


_MAX_MAIN_HEADER = 1 << 20
#: Largest share of reduced-resolution samples allowed above the BitsStored range (then
#: clipped) when the JPEG 2000 stream is wider than BitsStored.
_MAX_OVERSHOOT_FRACTION = 0.005


def _j2k_codestream_offset(frame: bytes) -> int | None:
    if frame[:4] == b"\xff\x4f\xff\x51":
        return 0
    if frame[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        pos = 0
        while pos + 8 <= len(frame):
            (length,) = struct.unpack_from(">I", frame, pos)
            box = frame[pos + 4 : pos + 8]
            header = 8
            if length == 1 and pos + 16 <= len(frame):
                (length,) = struct.unpack_from(">Q", frame, pos + 8)
                header = 16
            if box == b"jp2c":
                start = pos + header
                return start if frame[start : start + 4] == b"\xff\x4f\xff\x51" else None
            if length < header:
                return None
            pos += length
    return None


def parse_j2k_header(frame: bytes) -> _J2KHeader | None:
    """Read SIZ and COD/COC of a JPEG 2000 codestream (raw or JP2-wrapped).

    Returns ``None`` when the main header cannot be parsed.
    """
    start = _j2k_codestream_offset(frame)
    if start is None:
        return None
    pos = start + 2
    end = min(len(frame), start + _MAX_MAIN_HEADER)
    siz: tuple[int, int, int, int, int, int, bool] | None = None
    levels: int | None = None
    coc_levels: int | None = None
    while pos + 4 <= end:
        marker, length = struct.unpack_from(">HH", frame, pos)
        if marker in (0xFF90, 0xFF93, 0xFFD9):  # SOT, SOD, EOC: end of main header
            break
        if marker >> 8 != 0xFF or length < 2 or pos + 2 + length > len(frame):
            return None
        seg = frame[pos + 4 : pos + 2 + length]
        if marker == 0xFF51:
            if len(seg) < 39:
                return None
            _rsiz, xs, ys, xos, yos, _xt, _yt, _xto, _yto, csiz = struct.unpack_from(">HIIIIIIIIH", seg)
            ssiz = seg[36]
            siz = (xs - xos, ys - yos, csiz, (ssiz & 0x7F) + 1, xos, yos, bool(ssiz & 0x80))
        elif marker == 0xFF52 and len(seg) >= 6:
            levels = seg[5]
        elif marker == 0xFF53 and siz is not None:
            cbytes = 1 if siz[2] < 257 else 2
            comp = seg[0] if cbytes == 1 else struct.unpack_from(">H", seg)[0]
            if comp == 0 and len(seg) >= cbytes + 2:
                coc_levels = seg[cbytes + 1]
        pos += 2 + length
    if siz is None or levels is None:
        return None
    width, height, comps, precision, xos, yos, signed = siz
    if xos or yos or width <= 0 or height <= 0:
        return None  # image offsets change the reduced grid; not worth the risk
    return _J2KHeader(
        width=width,
        height=height,
        components=comps,
        precision=precision,
        signed=signed,
        levels=coc_levels if coc_levels is not None else levels,
        offset=start,
    )


@dataclass(frozen=True)
class _JPEGHeader:
    width: int
    height: int
    components: int
    precision: int
    sof: int


_SOF_MARKERS = frozenset({0xFFC0, 0xFFC1, 0xFFC2, 0xFFC3, 0xFFC5, 0xFFC6, 0xFFC7, 0xFFC9, 0xFFCA, 0xFFCB})


def parse_jpeg_header(frame: bytes) -> _JPEGHeader | None:
    """Read the SOF segment of a JPEG (ISO 10918) stream; ``None`` if not found."""
    if frame[:2] != b"\xff\xd8":
        return None
    pos = 2
    end = min(len(frame), _MAX_MAIN_HEADER)
    while pos + 4 <= end:
        if frame[pos] != 0xFF:
            return None
        marker = (frame[pos] << 8) | frame[pos + 1]
        if marker == 0xFFFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack_from(">H", frame, pos + 2)
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            if pos + 10 > len(frame):
                return None
            precision, height, width, comps = struct.unpack_from(">BHHB", frame, pos + 4)
            return _JPEGHeader(width=width, height=height, components=comps, precision=precision, sof=marker)
        if marker == 0xFFDA:  # SOS before SOF: malformed
            return None
        pos += 2 + length
    return None


def _first_frame(ds: Dataset) -> bytes:
    from pydicom.encaps import get_frame

    pixel = image_pixel(ds)
    frames = pixel.frames if pixel is not None else 1
    return bytes(get_frame(ds.PixelData, 0, number_of_frames=frames))


def _check_stream_size(
    width: int, height: int, rows: int, cols: int, limits: IngestLimits, what: str
) -> None:
    if width > limits.max_columns or height > limits.max_rows:
        raise InputTooLargeError(
            f"the {what} codestream declares {height}x{width} pixels, above the cap "
            f"{limits.max_rows}x{limits.max_columns}; the file is not analysed"
        )
    if (height, width) != (rows, cols):
        raise CorruptPixelDataError(
            f"the {what} codestream is {height}x{width} but the header declares {rows}x{cols}; "
            "the pixel data does not belong to this header, re-export the image"
        )


def check_codestream(ds: Dataset, ts: UID, *, rows: int, cols: int, limits: IngestLimits) -> None:
    """Check a JPEG 2000 / JPEG codestream's own size against the header and the caps.

    Cheap (parses marker segments only).  Streams that cannot be parsed are left to the
    decoder, which reports them as corrupt.

    Raises
    ------
    InputTooLargeError
        The codestream declares a matrix above the caps.
    CorruptPixelDataError
        The codestream's matrix differs from Rows x Columns.
    """
    if ts not in _J2K_SYNTAXES and ts not in _JPEG_DCT_SYNTAXES:
        return
    try:
        frame = _first_frame(ds)
    except Exception:
        return
    if ts in _J2K_SYNTAXES:
        j2k = parse_j2k_header(frame)
        if j2k is not None:
            _check_stream_size(j2k.width, j2k.height, rows, cols, limits, "JPEG 2000")
    else:
        jpg = parse_jpeg_header(frame)
        if jpg is not None and jpg.height > 0:  # height 0: defined later by DNL
            _check_stream_size(jpg.width, jpg.height, rows, cols, limits, "JPEG")


def trim_after_eoc(codestream: bytes) -> bytes:
    """A JPEG 2000 codestream without the zero padding DICOM adds after its EOC marker.

    An encapsulated frame has an even length (PS3.5 A.4), so a codestream of odd length
    ends with one ``0x00`` after its end-of-codestream marker ``FFD9``; Pillow refuses
    such a stream at a reduced level.  Only trailing zero bytes right after ``FFD9`` are
    removed; any other ending is returned unchanged.
    """
    end = len(codestream)
    while end > 2 and codestream[end - 1] == 0:
        end -= 1
    if end < len(codestream) and codestream[end - 2 : end] == b"\xff\xd9":
        return codestream[:end]
    return codestream


def _pillow_j2k(codestream: bytes, reduce: int, out_rows: int, out_cols: int) -> np.ndarray:
    """Decode a J2K codestream at resolution level ``reduce`` with Pillow/OpenJPEG.

    Pillow rounds the reduced size half-up, OpenJPEG rounds up; when they differ Pillow
    refuses the stream, so the decode tile is set to OpenJPEG's size.
    """
    from PIL import Image, ImageFile

    im = Image.open(io.BytesIO(codestream))
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # never accept a truncated stream silently
        raise OSError("Pillow is configured to load truncated images")
    power = 1 << reduce
    pillow_size = tuple((s + (power >> 1)) // power for s in im.size)
    if pillow_size == (out_cols, out_rows):
        im.reduce = reduce  # type: ignore[assignment]
    else:
        tile = im.tile[0]
        args = tile.args
        if tile.codec_name != "jpeg2k" or not isinstance(args, tuple) or len(args) != 5:
            raise OSError("unexpected Pillow JPEG 2000 tile layout")
        im._size = (out_cols, out_rows)
        im.tile = [
            ImageFile._Tile(tile[0], (0, 0, out_cols, out_rows), tile[2], (args[0], reduce, *args[2:]))
        ]
    im.load()
    return np.asarray(im)


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
    """Reduced-resolution decode.

    Returns a :class:`StoredPixels`, a fallback reason (str) when the fast path applied but
    was refused, or ``None`` when no reduction applies (other codecs, small images).
    """
    if ts not in _J2K_SYNTAXES and ts not in _JPEG_DCT_SYNTAXES:
        return None
    if _ceil_div(rows, 2) < target_size or _ceil_div(cols, 2) < target_size:
        return None
    try:
        frame = _first_frame(ds)
    except Exception as exc:
        return f"encapsulation:{type(exc).__name__}"
    if ts in _J2K_SYNTAXES:
        return _fast_j2k(frame, ts, rows, cols, bits_stored, signed, target_size, limits)
    return _fast_jpeg(frame, ts, rows, cols, bits_stored, signed, target_size, limits)


def _fast_j2k(
    frame: bytes,
    ts: UID,
    rows: int,
    cols: int,
    bits_stored: int,
    signed: bool,
    target_size: int,
    limits: IngestLimits,
) -> StoredPixels | str | None:
    hdr = parse_j2k_header(frame)
    if hdr is None:
        return "j2k-header-unparsed"
    _check_stream_size(hdr.width, hdr.height, rows, cols, limits, "JPEG 2000")
    if hdr.components != 1:
        return f"j2k-components-{hdr.components}"
    if hdr.precision > 16:
        return f"j2k-precision-{hdr.precision}"
    # A codestream wider than BitsStored (common: 16-bit streams holding 12-bit data) is
    # fine as long as no decoded value needs the extra bits; checked after decoding.
    wide_stream = hdr.precision > bits_stored
    if wide_stream and (signed or hdr.signed):
        return f"j2k-precision-{hdr.precision}-above-bits-stored-{bits_stored}"
    if hdr.signed != signed:
        return "j2k-signedness-differs-from-header"
    factor = _pick_factor(rows, cols, target_size, hdr.levels)
    if factor == 1:
        return None
    reduce = factor.bit_length() - 1
    out_rows, out_cols = _ceil_div(rows, factor), _ceil_div(cols, factor)
    try:
        raw = _pillow_j2k(trim_after_eoc(frame[hdr.offset :]), reduce, out_rows, out_cols)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        return f"pillow-j2k-reduce-{factor}:{type(exc).__name__}"
    if raw.shape != (out_rows, out_cols):
        return f"pillow-j2k-shape-{raw.shape[0]}x{raw.shape[1]}"
    # Pillow widens to 8 (mode L) or 16 (I;16) bits: v << (container - precision), and
    # offsets signed samples by 2**(precision-1).  Undo both.
    container = 8 if raw.dtype == np.uint8 else 16
    if raw.dtype not in (np.uint8, np.uint16):
        return f"pillow-j2k-dtype-{raw.dtype}"
    values = raw.astype(np.int32) >> (container - hdr.precision)
    if hdr.signed:
        values -= 1 << (hdr.precision - 1)
    if wide_stream:
        # Wavelet synthesis overshoots a little near saturated edges at coarse levels;
        # many values above the range mean the high bits carry data: decode fully.
        top = (1 << bits_stored) - 1
        above = int(np.count_nonzero(values > top))
        if above > _MAX_OVERSHOOT_FRACTION * values.size:
            return f"j2k-values-above-bits-stored-{bits_stored}"
        np.minimum(values, top, out=values)
    arr, value_range = mask_and_range(values, bits_stored, signed)
    return StoredPixels(
        array=arr,
        factor=factor,
        path=f"j2k-reduce-{factor}",
        transfer_syntax=str(ts),
        masked=True,
        value_range=value_range,
    )


def _fast_jpeg(
    frame: bytes,
    ts: UID,
    rows: int,
    cols: int,
    bits_stored: int,
    signed: bool,
    target_size: int,
    limits: IngestLimits,
) -> StoredPixels | str | None:
    from PIL import Image, ImageFile

    hdr = parse_jpeg_header(frame)
    if hdr is None:
        return "jpeg-header-unparsed"
    if hdr.height == 0:
        return "jpeg-dnl-height"
    _check_stream_size(hdr.width, hdr.height, rows, cols, limits, "JPEG")
    if hdr.components != 1:
        return f"jpeg-components-{hdr.components}"
    if hdr.precision != 8:
        return f"jpeg-precision-{hdr.precision}"
    if signed:
        return "jpeg-signed"
    factor = _pick_factor(rows, cols, target_size, 3)
    if factor == 1:
        return None
    out_rows, out_cols = _ceil_div(rows, factor), _ceil_div(cols, factor)
    try:
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            raise OSError("Pillow is configured to load truncated images")
        im = Image.open(io.BytesIO(frame))
        if im.format != "JPEG" or im.mode != "L":
            return f"pillow-jpeg-mode-{im.mode}"
        im.draft("L", (out_cols, out_rows))
        if im.size != (out_cols, out_rows):
            return f"pillow-jpeg-draft-size-{im.size[1]}x{im.size[0]}"
        im.load()
        raw = np.asarray(im)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        return f"pillow-jpeg-draft-{factor}:{type(exc).__name__}"
    if raw.shape != (out_rows, out_cols) or raw.dtype != np.uint8:
        return f"pillow-jpeg-shape-{raw.shape}"
    arr, value_range = mask_and_range(raw, bits_stored, signed)
    return StoredPixels(
        array=arr,
        factor=factor,
        path=f"jpeg-draft-{factor}",
        transfer_syntax=str(ts),
        masked=True,
        value_range=value_range,
    )
