"""Stored pixel values -> the [0, 1] display image the model sees.

The grey-scale pipeline follows PS3.3 C.11 and DESIGN.md section 4, in this order:

1. **Stored values**: the BitsStored low bits, sign-extended when PixelRepresentation
   is 1 (re-applied here, idempotently, so garbage in the unused high bits never
   survives).  Pixels equal to PixelPaddingValue, or inside the range it spans with
   PixelPaddingRangeLimit, are excluded from every statistic and shown as background
   (0, black) at the end.
2. **Modality LUT**: the Modality LUT Sequence when present (LUTDescriptor: number of
   entries, 0 meaning 65536; first mapped value, read as signed for signed data; 8 or
   16 bits per entry), else RescaleSlope / RescaleIntercept, else identity.
3. **VOI**: the VOI LUT Sequence when present, else WindowCenter / WindowWidth with
   VOILUTFunction LINEAR (PS3.3 C.11.2.1.2.1, with its ``-0.5`` and ``-1`` terms),
   LINEAR_EXACT (C.11.2.1.3.2) or SIGMOID (C.11.2.1.3.1).  Which of several windows or
   LUTs is used is chosen explicitly by :attr:`PixelPolicy.window_index`.  Without any
   VOI there is no VOI transformation: the nominal output range of the Modality LUT
   (e.g. 0..255 for 8-bit data) spans the output, as dcmtk renders it; this does
   not depend on the decode resolution.  Only when the valid data cover less than
   half of that range does their minimum/maximum span the output instead.
4. **Presentation**: MONOCHROME1 is inverted *after* VOI.  PresentationLUTShape
   INVERSE is, by PS3.3 C.8.11.1.1.1 (DX) and C.11.6.1, the statement that the
   output is inverted, i.e. the same single inversion a MONOCHROME1 image gets; so
   MONOCHROME1 + INVERSE inverts once (never twice), MONOCHROME2 + INVERSE inverts,
   MONOCHROME2 + IDENTITY does not, and MONOCHROME1 + IDENTITY (a contradiction)
   follows the Photometric Interpretation and is flagged.
5. Output: float32 in [0, 1], bright = dense, rows and columns never transposed by
   the grey-scale steps.

Integer data (the usual case) is rendered through one lookup table covering the
stored values present (``np.take``), so the per-pixel cost is a single gather.

Real headers lie, so measured sanity checks follow, each recorded as a flag (public
``FLAG_*`` constants) in :attr:`DisplayImage.provenance` when it fires:

* a window or VOI LUT under which (almost) no valid pixel falls inside the output range
  is replaced by a percentile window (:data:`FLAG_WINDOW_OUTSIDE_DATA`);
* PatientOrientation is applied to reach the standard frontal orientation (rows run
  toward the patient's left, columns toward the feet: ``L\\F``); when the header asks
  for a 90 degree turn but the content shows the mediastinum already runs top to
  bottom, the two values are taken as written in swapped order, a known vendor error
  (:data:`FLAG_ORIENTATION_SWAPPED`);
* lung fields brighter than the mediastinum mean the grey scale is inverted relative
  to the header (:data:`FLAG_CONTENT_INVERTED`), corrected when
  :attr:`PixelPolicy.inversion` is ``"correct"`` (the default).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from chexnet_dicom.config import IngestConfig, PixelPolicy
from chexnet_dicom.dicom.decode import StoredPixels, decode_stored
from chexnet_dicom.dicom.read import read_dataset
from chexnet_dicom.errors import CorruptHeaderError, CorruptPixelDataError, UnsupportedInputError

__all__ = [
    "DisplayImage",
    "render",
    "resize_display",
    "load_display",
    "inversion_score",
    "chest_content_features",
    "verticality_score",
    "orientation_ops_for",
    "apply_orientation_ops",
    "undo_orientation_ops",
    "FLAG_WINDOW_OUTSIDE_DATA",
    "FLAG_WINDOW_INVALID",
    "FLAG_WINDOW_INDEX_OUT_OF_RANGE",
    "FLAG_VOI_FUNCTION_UNKNOWN",
    "FLAG_CONTENT_INVERTED",
    "FLAG_PRESENTATION_LUT_CONFLICT",
    "FLAG_ORIENTATION_CORRECTED",
    "FLAG_ORIENTATION_SWAPPED",
    "FLAG_ORIENTATION_UNUSABLE",
    "FLAG_ORIENTATION_NOT_APPLIED",
    "FLAG_CONSTANT_IMAGE",
    "ALL_FLAGS",
    "STANDARD_ORIENTATION",
    "INVERSION_MARGIN",
]

logger = logging.getLogger(__name__)

#: The window / VOI LUT left (almost) no valid pixel inside its output range; a
#: percentile window was used instead.
FLAG_WINDOW_OUTSIDE_DATA = "window-outside-data"
#: WindowWidth not usable for the VOI LUT Function (e.g. < 1 for LINEAR); min/max used.
FLAG_WINDOW_INVALID = "window-invalid"
#: ``PixelPolicy.window_index`` larger than the number of windows / VOI LUTs; the first used.
FLAG_WINDOW_INDEX_OUT_OF_RANGE = "window-index-out-of-range"
#: VOILUTFunction not LINEAR, LINEAR_EXACT or SIGMOID; LINEAR used.
FLAG_VOI_FUNCTION_UNKNOWN = "voi-function-unknown"
#: The content says the grey scale is inverted relative to the header (lung fields
#: brighter than the mediastinum).
FLAG_CONTENT_INVERTED = "content-inverted"
#: PresentationLUTShape IDENTITY on a MONOCHROME1 image (a contradiction).
FLAG_PRESENTATION_LUT_CONFLICT = "presentation-lut-conflict"
#: PatientOrientation was not ``L\\F``; the image was rotated/flipped to it.
FLAG_ORIENTATION_CORRECTED = "orientation-corrected"
#: PatientOrientation asked for a 90 degree turn the content contradicts; its two values
#: were used in swapped order.
FLAG_ORIENTATION_SWAPPED = "orientation-header-swapped"
#: PatientOrientation present but not usable for a frontal image (A/P codes, malformed).
FLAG_ORIENTATION_UNUSABLE = "orientation-unusable"
#: PatientOrientation says the image is not in standard orientation, but the policy
#: says not to correct it.
FLAG_ORIENTATION_NOT_APPLIED = "orientation-not-applied"
#: All valid pixels have the same value.
FLAG_CONSTANT_IMAGE = "constant-image"

ALL_FLAGS: tuple[str, ...] = (
    FLAG_WINDOW_OUTSIDE_DATA,
    FLAG_WINDOW_INVALID,
    FLAG_WINDOW_INDEX_OUT_OF_RANGE,
    FLAG_VOI_FUNCTION_UNKNOWN,
    FLAG_CONTENT_INVERTED,
    FLAG_PRESENTATION_LUT_CONFLICT,
    FLAG_ORIENTATION_CORRECTED,
    FLAG_ORIENTATION_SWAPPED,
    FLAG_ORIENTATION_UNUSABLE,
    FLAG_ORIENTATION_NOT_APPLIED,
    FLAG_CONSTANT_IMAGE,
)

#: PatientOrientation of the standard frontal display: along a row toward the patient's
#: left (so the patient's right is on the image left), down a column toward the feet.
STANDARD_ORIENTATION: tuple[str, str] = ("L", "F")

#: A window (or VOI LUT input range) is said to lie outside the stored data when fewer
#: than this fraction of the valid pixels escape the one end of it that takes the rest
#: (everything, or nearly, saturates to black or to white).
WINDOW_MIN_COVERAGE = 0.02
#: Percentiles of the valid modality values spanned by the fallback window.
FALLBACK_PERCENTILES = (0.5, 99.5)
#: The content is called inverted when :func:`inversion_score` is below minus this
#: (on the [0, 1] display scale); see :func:`chest_content_features`.
INVERSION_MARGIN = 0.08
#: A header-requested 90 degree turn is rejected when the mediastinum is this much
#: clearer along the columns than along the rows (:func:`verticality_score`; a
#: rotated NIH image never scores above 0.12).
VERTICALITY_MARGIN = 0.15

#: Without VOI in the header, the nominal range of the data spans the output when the
#: valid data cover at least this fraction of it; otherwise their min/max does.
NOMINAL_MIN_SPAN = 0.5

#: Smallest side (pixels) on which the content checks are measured.
MIN_CONTENT_SIDE = 64

#: Largest stored-value range rendered through a single lookup table.
_MAX_LUT_SPAN = 1 << 20

_OPS = ("transpose", "fliplr", "flipud")


@dataclass(frozen=True)
class DisplayImage:
    """The display image the model sees, with what it took to get there.

    Attributes
    ----------
    image
        float32 (H, W) in [0, 1]: bright = dense, head up, the patient's right on the
        image left (after :attr:`orientation_ops`).
    source_shape
        (Rows, Columns) of the stored image.
    orientation_ops
        Operations (``"transpose"``, ``"fliplr"``, ``"flipud"``) applied in order to
        the decoded array to reach the display orientation.
    decode_factor
        Reduction factor of the decode (1 = full resolution).
    provenance
        ``steps`` (list of str, every grey-scale and geometric step in order),
        ``flags`` (list of ``FLAG_*`` values that fired), ``decode_path``, ``voi``
        (the VOI actually used) and measurements (``inversion_score``,
        ``verticality``).
    """

    image: np.ndarray
    source_shape: tuple[int, int]
    orientation_ops: tuple[str, ...] = ()
    decode_factor: int = 1
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def flags(self) -> list[str]:
        """The sanity-check flags that fired."""
        return list(self.provenance.get("flags", []))

    def to_source_grid(self, arr: np.ndarray) -> np.ndarray:
        """Map an array on the display grid back onto the source pixel grid.

        The orientation operations are undone (in reverse order) and the result is
        resized with bilinear interpolation to (Rows, Columns).

        Parameters
        ----------
        arr
            (h, w) or (C, h, w) array aligned with :attr:`image` (any resolution with
            the same field of view, e.g. a 7x7 or 224x224 heatmap).

        Returns
        -------
        numpy.ndarray
            float32 (Rows, Columns) or (C, Rows, Columns).
        """
        a = np.asarray(arr)
        if a.ndim == 3:
            return np.stack([self.to_source_grid(a[i]) for i in range(a.shape[0])])
        if a.ndim != 2:
            raise ValueError(f"to_source_grid needs a 2-D or 3-D array, got shape {a.shape}")
        back = undo_orientation_ops(a, self.orientation_ops)
        return resize_display(back, self.source_shape)


def resize_display(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float image with Pillow's anti-aliased bilinear filter.

    The same operation as :func:`chexnet_dicom.transforms.resize_image` (which the
    model input uses), available without importing MONAI.

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


# --------------------------------------------------------------------------- geometry


def apply_orientation_ops(a: np.ndarray, ops: Sequence[str]) -> np.ndarray:
    """Apply orientation operations in order (views, no copy).

    Parameters
    ----------
    a
        2-D array.
    ops
        Names from ``("transpose", "fliplr", "flipud")``.

    Returns
    -------
    numpy.ndarray
    """
    for op in ops:
        if op == "transpose":
            a = a.T
        elif op == "fliplr":
            a = a[:, ::-1]
        elif op == "flipud":
            a = a[::-1, :]
        else:
            raise ValueError(f"unknown orientation op {op!r}")
    return a


def undo_orientation_ops(a: np.ndarray, ops: Sequence[str]) -> np.ndarray:
    """Undo :func:`apply_orientation_ops` (each op is its own inverse).

    Parameters
    ----------
    a
        2-D array on the display grid.
    ops
        The operations that were applied.

    Returns
    -------
    numpy.ndarray
    """
    return apply_orientation_ops(a, tuple(reversed(tuple(ops))))


_AXIS_LR = {"L": 1, "R": -1}
_AXIS_HF = {"F": 1, "H": -1}


def orientation_ops_for(row_dir: str, col_dir: str) -> tuple[str, ...] | None:
    """Operations turning an image with PatientOrientation ``row_dir\\col_dir`` into ``L\\F``.

    PS3.3 C.7.6.1.1.1: the first value is the direction of the rows (toward the right of
    the image along a row), the second the direction of the columns (down the image).
    Only the dominant (first) letter of each value counts.

    Parameters
    ----------
    row_dir, col_dir
        The two PatientOrientation values.

    Returns
    -------
    tuple of str or None
        The operations, ``()`` when already standard, None when the codes do not
        describe a frontal view (one axis must be L/R, the other H/F).
    """
    r = row_dir.strip().upper()[:1]
    c = col_dir.strip().upper()[:1]
    ops: list[str] = []
    if r in _AXIS_LR and c in _AXIS_HF:
        lr, hf = r, c
    elif r in _AXIS_HF and c in _AXIS_LR:
        ops.append("transpose")
        lr, hf = c, r
    else:
        return None
    if _AXIS_LR[lr] < 0:
        ops.append("fliplr")
    if _AXIS_HF[hf] < 0:
        ops.append("flipud")
    return tuple(ops)


# --------------------------------------------------------------------------- content


def _thumb(img: np.ndarray, side: int = 96) -> np.ndarray:
    return resize_display(img, (side, side))


def _band(n: int, lo: float, hi: float) -> slice:
    start = round(n * lo)
    return slice(start, max(round(n * hi), start + 1))


def _mediastinum_contrast(t: np.ndarray) -> tuple[float, float, float]:
    """Mean of the central strip and of each lateral lung band over the middle rows."""
    n_r, n_c = t.shape
    prof = t[_band(n_r, 0.25, 0.70), :].mean(axis=0)
    center = float(prof[_band(n_c, 0.44, 0.56)].mean())
    left = float(prof[_band(n_c, 0.18, 0.34)].mean())
    right = float(prof[_band(n_c, 0.66, 0.82)].mean())
    return center, left, right


def chest_content_features(img: np.ndarray) -> tuple[float, float]:
    """Two measured contrasts of a frontal chest image (bright = dense).

    The image is reduced to 96x96.  With columns 18-34 % and 66-82 % as the lateral
    (lung) bands and columns 44-56 % as the central (mediastinal) strip:

    * ``mediastinum``: over rows 25-70 %, the central strip minus the mean of the two
      lateral bands.  Positive when the mediastinum is brighter than the lung fields.
    * ``base``: in the lateral bands, rows 80-95 % (below the diaphragm) minus rows
      35-60 % (mid lung fields).  Positive when the dense abdomen lies below aerated
      lung, i.e. head up with the correct polarity.

    Both change sign when the grey scale is inverted; ``base`` also when the image
    is upside down.

    Parameters
    ----------
    img
        [0, 1] display image.

    Returns
    -------
    tuple of float
        ``(mediastinum, base)``.
    """
    t = _thumb(img)
    n_r, n_c = t.shape
    center, left, right = _mediastinum_contrast(t)
    lateral = np.concatenate([t[:, _band(n_c, 0.18, 0.34)], t[:, _band(n_c, 0.66, 0.82)]], axis=1)
    base = float(lateral[_band(n_r, 0.80, 0.95)].mean() - lateral[_band(n_r, 0.35, 0.60)].mean())
    return center - (left + right) / 2.0, base


def inversion_score(img: np.ndarray) -> float:
    """Measured grey-scale polarity of a head-up frontal chest image.

    The larger of the two :func:`chest_content_features`: the content is called
    inverted only when *both* the mediastinum is darker than the lung fields and the
    region below the diaphragm is darker than the lung fields, i.e. when this score is
    below ``-INVERSION_MARGIN``.  On the 500 NIH ChestX-ray14 test images the score of
    the images as published is never below -0.06, while 91 % of the same images
    inverted score below -0.08.

    Parameters
    ----------
    img
        [0, 1] display image, head up.

    Returns
    -------
    float
        Positive (or slightly negative) for correct polarity, clearly negative when
        inverted.
    """
    return max(chest_content_features(img))


def verticality_score(img: np.ndarray) -> float:
    """How much clearer a mediastinal strip is along the columns than along the rows.

    ``|contrast(img)| - |contrast(img.T)|`` where contrast is the central strip minus
    the mean of the lateral bands (see :func:`inversion_score`).  Positive when the
    mediastinum runs top to bottom.

    Parameters
    ----------
    img
        [0, 1] display image.

    Returns
    -------
    float
    """
    t = _thumb(img)
    c0, l0, r0 = _mediastinum_contrast(t)
    c1, l1, r1 = _mediastinum_contrast(t.T)
    return abs(c0 - (l0 + r0) / 2) - abs(c1 - (l1 + r1) / 2)


# --------------------------------------------------------------------------- header helpers


def _floats(ds: Dataset, keyword: str) -> list[float]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    seq = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else value
    out: list[float] = []
    for v in seq:
        try:
            out.append(float(v))
        except (TypeError, ValueError) as exc:
            raise CorruptHeaderError(
                f"{keyword} holds a non-numeric value; fix the header or re-export the image"
            ) from exc
    return out


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise CorruptHeaderError(
            f"{keyword} is not an integer; fix the header or re-export the image"
        ) from exc


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    return str(value).strip().upper()


def _mask_stored(arr: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Idempotent BitsStored masking and sign extension, skipped when already in range."""
    if bits <= 0 or bits > 32:
        raise CorruptHeaderError(f"BitsStored {bits} is outside 1..32; the header is invalid")
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    amin, amax = int(arr.min()), int(arr.max())
    if lo <= amin and amax <= hi:
        return arr
    wide = arr.astype(np.int64) & ((1 << bits) - 1)
    if signed:
        sign = 1 << (bits - 1)
        wide = (wide ^ sign) - sign
    return wide


def _as_signed16(value: int, signed: bool) -> int:
    if signed and value >= 0x8000:
        return value - 0x10000
    return value


@dataclass(frozen=True)
class _Lut:
    first: int
    table: np.ndarray  # float64 entries
    bits: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        idx = np.clip(np.floor(x).astype(np.int64) - self.first, 0, self.table.size - 1)
        return np.take(self.table, idx)


def _read_lut(item: Dataset, *, signed_first: bool, little_endian: bool, what: str) -> _Lut:
    """Parse a LUTDescriptor / LUTData pair (PS3.3 C.11.1.1.1, C.11.2.1.1)."""
    desc = item.get("LUTDescriptor")
    if desc is None or len(desc) != 3 or "LUTData" not in item:
        raise CorruptHeaderError(f"the {what} item lacks a 3-value LUTDescriptor or LUTData; fix the header")
    n = int(desc[0]) or 65536
    first = _as_signed16(int(desc[1]) & 0xFFFF, signed_first) if int(desc[1]) >= 0 else int(desc[1])
    bits = int(desc[2])
    if bits < 1 or bits > 16:
        raise CorruptHeaderError(f"the {what} declares {bits} bits per entry; 8..16 expected")
    raw = item.LUTData
    data: np.ndarray
    if isinstance(raw, (bytes, bytearray)):
        buf = bytes(raw)
        if bits <= 8 and len(buf) in (n, n + 1):
            data = np.frombuffer(buf[:n], dtype=np.uint8)
        else:
            data = np.frombuffer(buf[: (len(buf) // 2) * 2], dtype="<u2" if little_endian else ">u2")
    else:
        values = list(raw) if hasattr(raw, "__iter__") else [raw]
        words = np.asarray(values, dtype=np.int64) & 0xFFFF
        if bits <= 8 and words.size == (n + 1) // 2 and n > 1:
            # 8-bit entries packed two per 16-bit word (low byte first).
            data = np.empty(words.size * 2, dtype=np.int64)
            data[0::2] = words & 0xFF
            data[1::2] = words >> 8
        else:
            data = words
    if data.size < n:
        raise CorruptHeaderError(f"the {what} declares {n} entries but holds {data.size}; fix the header")
    table = data[:n].astype(np.float64)
    needed = int(table.max()).bit_length() if table.size else 0
    return _Lut(first=first, table=table, bits=max(bits, needed))


def _little_endian(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts is not None:
        try:
            return bool(ts.is_little_endian)
        except (AttributeError, ValueError):
            pass
    enc = getattr(ds, "original_encoding", (None, True))
    return enc[1] is not False


# --------------------------------------------------------------------------- statistics


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray | None, qs: Sequence[float]) -> list[float]:
    if weights is None:
        return [float(v) for v in np.percentile(values, list(qs))]
    order = np.argsort(values, kind="stable")
    v = values[order]
    cw = np.cumsum(weights[order].astype(np.float64))
    total = cw[-1]
    out = []
    for q in qs:
        k = int(np.searchsorted(cw, total * q / 100.0, side="left"))
        out.append(float(v[min(k, v.size - 1)]))
    return out


def _one_sided(values: np.ndarray, weights: np.ndarray | None, lo: float, hi: float) -> float:
    """Largest fraction of the valid pixels at or below ``lo`` or at or above ``hi``."""
    w = np.ones(values.shape) if weights is None else weights.astype(np.float64)
    total = float(w.sum())
    if total <= 0:
        return 0.0
    below = float(w[values <= lo].sum())
    above = float(w[values >= hi].sum())
    return max(below, above) / total


# --------------------------------------------------------------------------- VOI functions


def _voi_linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 with y in [0, 1]."""
    if w <= 1.0:
        return (x > c - 0.5).astype(np.float64)
    return np.clip((x - (c - 0.5)) / (w - 1.0) + 0.5, 0.0, 1.0)


def _voi_linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.2 with y in [0, 1]."""
    return np.clip((x - c) / w + 0.5, 0.0, 1.0)


def _voi_sigmoid(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.1 with y in [0, 1]."""
    z = np.clip(-4.0 * (x - c) / w, -700.0, 700.0)
    return 1.0 / (1.0 + np.exp(z))


# --------------------------------------------------------------------------- render


@dataclass
class _Chain:
    steps: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    voi: str = ""

    def flag(self, name: str) -> None:
        if name not in self.flags:
            self.flags.append(name)


def _modality(ds: Dataset, signed: bool, little_endian: bool, chain: _Chain) -> Any:
    seq = ds.get("ModalityLUTSequence")
    if seq:
        lut = _read_lut(seq[0], signed_first=signed, little_endian=little_endian, what="Modality LUT")
        chain.steps.append(
            f"modality: Modality LUT Sequence ({lut.table.size} entries, first {lut.first}, {lut.bits} bits)"
        )
        return lut
    slope_l = _floats(ds, "RescaleSlope")
    inter_l = _floats(ds, "RescaleIntercept")
    slope = slope_l[0] if slope_l else 1.0
    inter = inter_l[0] if inter_l else 0.0
    if slope == 0.0:
        raise CorruptHeaderError("RescaleSlope is 0; fix the header or re-export the image")
    if slope_l or inter_l:
        chain.steps.append(f"modality: rescale slope {slope:g} intercept {inter:g}")
    else:
        chain.steps.append("modality: identity (no Modality LUT)")

    def rescale(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float64) * slope + inter

    return rescale


def _choose_voi(
    ds: Dataset,
    values: np.ndarray,
    weights: np.ndarray | None,
    policy: PixelPolicy,
    signed: bool,
    little_endian: bool,
    chain: _Chain,
    nominal: tuple[float, float] | None = None,
) -> Any:
    """Return a function mapping modality values to [0, 1].

    ``nominal`` is the range of the Modality LUT output over every possible stored
    value; without any VOI in the header it spans the output (no VOI transformation,
    as dcmtk does) unless the data use less than half of it.
    """
    idx = policy.window_index

    def minmax(reason: str) -> Any:
        lo, hi = float(values.min()), float(values.max())
        if hi <= lo:
            chain.flag(FLAG_CONSTANT_IMAGE)
            chain.voi = f"constant ({reason})"
            chain.steps.append(f"voi: none, constant image ({reason})")
            return lambda x: np.zeros(np.shape(x), dtype=np.float64)
        chain.voi = f"min-max {lo:g}..{hi:g} ({reason})"
        chain.steps.append(f"voi: {chain.voi}")
        return lambda x: np.clip((x - lo) / (hi - lo), 0.0, 1.0)

    def fallback(what: str, cov: float) -> Any:
        lo, hi = _weighted_quantiles(values, weights, FALLBACK_PERCENTILES)
        chain.flag(FLAG_WINDOW_OUTSIDE_DATA)
        if hi <= lo:
            return minmax("percentile window empty")
        p0, p1 = FALLBACK_PERCENTILES
        chain.voi = f"percentile window p{p0:g}..p{p1:g} = {lo:g}..{hi:g}"
        chain.steps.append(
            f"voi: {what} leaves {100 * cov:.2f}% of the valid pixels unsaturated; replaced by {chain.voi}"
        )
        logger.info("window outside the stored data (%s); percentile window used", what)
        return lambda x: np.clip((x - lo) / (hi - lo), 0.0, 1.0)

    seq = ds.get("VOILUTSequence")
    if seq:
        if idx >= len(seq):
            chain.flag(FLAG_WINDOW_INDEX_OUT_OF_RANGE)
            idx = 0
        signed_first = signed or float(values.min()) < 0
        lut = _read_lut(seq[idx], signed_first=signed_first, little_endian=little_endian, what="VOI LUT")
        what = f"VOI LUT Sequence item {idx} of {len(seq)} ({lut.table.size} entries, first {lut.first}, {lut.bits} bits)"
        cov = 1.0 - _one_sided(values, weights, lut.first, lut.first + lut.table.size - 1)
        if policy.window_fallback and cov < WINDOW_MIN_COVERAGE:
            return fallback(what, cov)
        scale = float((1 << lut.bits) - 1)
        chain.voi = f"VOI LUT[{idx}]"
        chain.steps.append(f"voi: {what}")
        return lambda x: np.clip(lut(x) / scale, 0.0, 1.0)

    centers = _floats(ds, "WindowCenter")
    widths = _floats(ds, "WindowWidth")
    n = min(len(centers), len(widths))
    if n == 0:
        if nominal is not None:
            nlo, nhi = nominal
            if nhi > nlo and float(values.max() - values.min()) >= NOMINAL_MIN_SPAN * (nhi - nlo):
                chain.voi = f"none (identity over the nominal range {nlo:g}..{nhi:g})"
                chain.steps.append(f"voi: no VOI in the header; {chain.voi}")
                return lambda x: np.clip((x - nlo) / (nhi - nlo), 0.0, 1.0)
        return minmax("no VOI in the header, data narrower than its nominal range")
    if idx >= n:
        chain.flag(FLAG_WINDOW_INDEX_OUT_OF_RANGE)
        idx = 0
    c, w = centers[idx], widths[idx]
    funcs = (
        [f.strip().upper() for f in _text(ds, "VOILUTFunction").split("\\")] if "VOILUTFunction" in ds else []
    )
    func = (funcs[idx] if idx < len(funcs) else funcs[0]) if funcs else "LINEAR"
    if func not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        chain.flag(FLAG_VOI_FUNCTION_UNKNOWN)
        func = "LINEAR"
    if (func == "LINEAR" and w < 1.0) or w <= 0.0:
        chain.flag(FLAG_WINDOW_INVALID)
        return minmax(f"window width {w:g} invalid for {func}")
    what = f"window {idx} of {n} {func} center {c:g} width {w:g}"
    if func == "LINEAR":
        lo, hi = c - 0.5 - (w - 1.0) / 2.0, c - 0.5 + (w - 1.0) / 2.0
    elif func == "LINEAR_EXACT":
        lo, hi = c - w / 2.0, c + w / 2.0
    else:  # SIGMOID: the range where the output lies within 2 %..98 %
        lo, hi = c - w, c + w
    cov = 1.0 - _one_sided(values, weights, lo, hi)
    if policy.window_fallback and cov < WINDOW_MIN_COVERAGE:
        return fallback(what, cov)
    chain.voi = f"window[{idx}] {func} c={c:g} w={w:g}"
    chain.steps.append(f"voi: {what}")
    if func == "LINEAR":
        return lambda x: _voi_linear(x, c, w)
    if func == "LINEAR_EXACT":
        return lambda x: _voi_linear_exact(x, c, w)
    return lambda x: _voi_sigmoid(x, c, w)


def _presentation(ds: Dataset, chain: _Chain) -> bool:
    """Return True when the VOI output must be inverted for display."""
    photometric = _text(ds, "PhotometricInterpretation")
    shape = _text(ds, "PresentationLUTShape")
    mono1 = photometric == "MONOCHROME1"
    if shape == "INVERSE":
        chain.steps.append(
            "presentation: "
            + (
                "MONOCHROME1 with PresentationLUTShape INVERSE: inverted once"
                if mono1
                else f"PresentationLUTShape INVERSE on {photometric or 'MONOCHROME2'}: inverted"
            )
        )
        return True
    if shape == "IDENTITY" and mono1:
        chain.flag(FLAG_PRESENTATION_LUT_CONFLICT)
        chain.steps.append(
            "presentation: MONOCHROME1 with PresentationLUTShape IDENTITY (contradictory); "
            "inverted as MONOCHROME1"
        )
        return True
    if mono1:
        chain.steps.append("presentation: MONOCHROME1 inverted after VOI")
        return True
    chain.steps.append(f"presentation: {photometric or 'MONOCHROME2'} identity")
    return False


def _padding_mask(ds: Dataset, arr: np.ndarray, signed: bool, chain: _Chain) -> np.ndarray | None:
    if "PixelPaddingValue" not in ds:
        return None
    try:
        pv = int(ds.PixelPaddingValue)
        limit = int(ds.PixelPaddingRangeLimit) if "PixelPaddingRangeLimit" in ds else None
    except (TypeError, ValueError) as exc:
        raise CorruptHeaderError("PixelPaddingValue is not an integer; fix the header") from exc
    pv = _as_signed16(pv & 0xFFFF, signed) if signed and pv >= 0 else pv
    if limit is not None:
        limit = _as_signed16(limit & 0xFFFF, signed) if signed and limit >= 0 else limit
        lo, hi = min(pv, limit), max(pv, limit)
        mask = (arr >= lo) & (arr <= hi)
        what = f"{lo}..{hi}"
    else:
        mask = arr == pv
        what = str(pv)
    count = int(mask.sum())
    chain.steps.append(f"stored: padding {what} masked ({count} pixels)")
    return mask if count else None


def render(ds: Dataset, stored: StoredPixels, *, policy: PixelPolicy | None = None) -> DisplayImage:
    """Turn decoded stored values into the [0, 1] display image.

    Parameters
    ----------
    ds
        The dataset (Image Pixel, Modality LUT, VOI LUT, Presentation LUT and General
        Image attributes are read).
    stored
        Output of :func:`chexnet_dicom.dicom.decode.decode_stored`.
    policy
        Window choice, fallbacks and content corrections (defaults of
        :class:`~chexnet_dicom.config.PixelPolicy`).

    Returns
    -------
    DisplayImage

    Raises
    ------
    CorruptHeaderError
        A grey-scale attribute the rendering needs is malformed.
    CorruptPixelDataError
        The stored array is not 2-D or holds non-finite values.
    UnsupportedInputError
        The Photometric Interpretation is not MONOCHROME1/2.
    """
    policy = policy or PixelPolicy()
    chain = _Chain()
    arr = np.asarray(stored.array)
    if arr.ndim != 2 or arr.size == 0:
        raise CorruptPixelDataError(f"stored pixels have shape {arr.shape}; a 2-D image is needed")
    photometric = _text(ds, "PhotometricInterpretation")
    if photometric not in ("", "MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedInputError(
            f"PhotometricInterpretation {photometric} is not grey scale; only MONOCHROME1/2 "
            "images can be analysed",
            reason="COLOR",
        )
    rows = _int(ds, "Rows", arr.shape[0] * max(stored.factor, 1))
    cols = _int(ds, "Columns", arr.shape[1] * max(stored.factor, 1))
    signed = _int(ds, "PixelRepresentation", 0) == 1
    little = _little_endian(ds)
    integer = np.issubdtype(arr.dtype, np.integer)
    bits = 0
    if integer:
        bits = _int(ds, "BitsStored", _int(ds, "BitsAllocated", arr.dtype.itemsize * 8))
        arr = _mask_stored(arr, bits, signed)
        chain.steps.append(f"stored: {bits} bits {'signed' if signed else 'unsigned'}")
    else:
        if not np.all(np.isfinite(arr)):
            raise CorruptPixelDataError("decoded pixel data holds NaN or infinite values")
        chain.steps.append(f"stored: floating point ({arr.dtype})")
    pad = _padding_mask(ds, arr, signed, chain)

    modality = _modality(ds, signed, little, chain)

    # Statistics of the valid (non-padding) modality values.
    use_lut = False
    vmin = 0
    if integer:
        vmin, vmax = int(arr.min()), int(arr.max())
        use_lut = vmax - vmin < _MAX_LUT_SPAN
    if use_lut:
        offs = (arr.astype(np.int64) - vmin) if vmin != 0 or arr.dtype.itemsize > 4 else arr
        domain = np.arange(vmin, vmax + 1, dtype=np.int64)
        hist = np.bincount((offs if pad is None else offs[~pad]).ravel(), minlength=domain.size)
        present = hist > 0
        if not present.any():
            hist, present = np.bincount(offs.ravel(), minlength=domain.size), np.ones(domain.size, bool)
        mod_domain = modality(domain.astype(np.float64))
        values, weights = mod_domain[present], hist[present]
    else:
        flat = arr.astype(np.float64) if pad is None else arr[~pad].astype(np.float64)
        if flat.size == 0:
            flat = arr.astype(np.float64).ravel()
        values, weights = modality(flat.ravel()), None

    nominal: tuple[float, float] | None = None
    if integer:
        lo_s, hi_s = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if isinstance(modality, _Lut):
            ends = modality.table
        else:
            ends = modality(np.array([lo_s, hi_s], dtype=np.float64))
        nominal = (float(np.min(ends)), float(np.max(ends)))
    voi = _choose_voi(ds, values, weights, policy, signed, little, chain, nominal)
    invert = _presentation(ds, chain)

    if use_lut:
        table = voi(mod_domain)
        if invert:
            table = 1.0 - table
        out = np.take(table.astype(np.float32), offs)
    else:
        out = voi(modality(arr.astype(np.float64)))
        if invert:
            out = 1.0 - out
        out = out.astype(np.float32)
    if pad is not None:
        out[pad] = 0.0
    np.clip(out, 0.0, 1.0, out=out)

    # Geometry: PatientOrientation -> standard frontal.
    ops = _orientation(ds, out, policy, chain)
    img = np.ascontiguousarray(apply_orientation_ops(out, ops))

    # Content polarity (only measurable on an image large enough to show anatomy).
    measurable = min(img.shape) >= MIN_CONTENT_SIDE
    score = inversion_score(img) if measurable else float("nan")
    if not measurable:
        chain.steps.append(f"content: {img.shape[0]}x{img.shape[1]} too small to measure polarity")
    elif score < -INVERSION_MARGIN and policy.inversion != "ignore":
        chain.flag(FLAG_CONTENT_INVERTED)
        if policy.inversion == "correct":
            img = 1.0 - img
            if pad is not None:
                img[apply_orientation_ops(pad, ops)] = 0.0
            chain.steps.append(
                f"content: lung fields brighter than the mediastinum (score {score:.3f}); inverted"
            )
        else:
            chain.steps.append(
                f"content: lung fields brighter than the mediastinum (score {score:.3f}); not corrected (policy)"
            )
    laterality = _text(ds, "ImageLaterality")
    if laterality in ("L", "R"):
        chain.steps.append(
            f"laterality: ImageLaterality {laterality} on a frontal chest image (recorded only)"
        )

    provenance: dict[str, Any] = {
        "steps": chain.steps,
        "flags": chain.flags,
        "decode_path": stored.path,
        "voi": chain.voi,
        "photometric": photometric or "MONOCHROME2",
        "inversion_score": round(score, 4) if measurable else None,
        "orientation_ops": list(ops),
    }
    return DisplayImage(
        image=img.astype(np.float32, copy=False),
        source_shape=(rows, cols),
        orientation_ops=tuple(ops),
        decode_factor=int(stored.factor),
        provenance=provenance,
    )


def _orientation(ds: Dataset, img: np.ndarray, policy: PixelPolicy, chain: _Chain) -> tuple[str, ...]:
    raw = ds.get("PatientOrientation")
    values = (
        [str(v).strip().upper() for v in raw]
        if raw is not None and not isinstance(raw, str)
        else ([v.strip().upper() for v in str(raw).split("\\")] if raw else [])
    )
    values = [v for v in values if v]
    if not values:
        chain.steps.append("orientation: no PatientOrientation; image used as stored")
        return ()
    text = "\\".join(values)
    if len(values) != 2:
        chain.flag(FLAG_ORIENTATION_UNUSABLE)
        chain.steps.append(f"orientation: PatientOrientation {text} malformed; image used as stored")
        return ()
    ops = orientation_ops_for(values[0], values[1])
    if ops is None:
        chain.flag(FLAG_ORIENTATION_UNUSABLE)
        chain.steps.append(f"orientation: PatientOrientation {text} is not frontal; image used as stored")
        return ()
    if "transpose" in ops and min(img.shape) >= MIN_CONTENT_SIDE:
        vert = verticality_score(img)
        if vert > VERTICALITY_MARGIN:
            swapped = orientation_ops_for(values[1], values[0])
            assert swapped is not None
            chain.flag(FLAG_ORIENTATION_SWAPPED)
            chain.steps.append(
                f"orientation: PatientOrientation {text} asks for a 90 degree turn but the "
                f"mediastinum already runs top to bottom (verticality {vert:.3f}); values "
                "taken in swapped order"
            )
            ops = swapped
    if not ops:
        chain.steps.append(f"orientation: PatientOrientation {text} is standard")
        return ()
    if policy.orientation == "correct":
        chain.flag(FLAG_ORIENTATION_CORRECTED)
        chain.steps.append(f"orientation: PatientOrientation {text}; applied {', '.join(ops)}")
        return ops
    if policy.orientation == "flag":
        chain.flag(FLAG_ORIENTATION_NOT_APPLIED)
        chain.steps.append(
            f"orientation: PatientOrientation {text} needs {', '.join(ops)}; not applied (policy)"
        )
    return ()


def load_display(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    config: IngestConfig | None = None,
    target_size: int | None = None,
) -> DisplayImage:
    """Read, decode and render one DICOM image.

    Parameters
    ----------
    source
        Path, bytes or binary file object.
    config
        Reading limits and pixel policy.
    target_size
        Smallest side the caller needs; with ``config.pixels.fast_path`` the decoder may
        return a reduced image whose sides stay >= ``target_size``.

    Returns
    -------
    DisplayImage

    Raises
    ------
    InputError
        Any subclass: not DICOM, corrupt header, too large, unsupported codec, corrupt
        pixel data.
    """
    config = config or IngestConfig()
    ds = read_dataset(source, limits=config.limits)
    stored = decode_stored(
        ds,
        limits=config.limits,
        target_size=target_size,
        fast_path=config.pixels.fast_path,
    )
    return render(ds, stored, policy=config.pixels)
