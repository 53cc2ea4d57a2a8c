"""The grey-scale chain of PS3.3 C.11: Modality LUT -> VOI -> Presentation.

:func:`modality_lut` (Modality LUT Sequence, else RescaleSlope / RescaleIntercept),
:func:`choose_voi` (VOI LUT Sequence, else WindowCenter / WindowWidth with
VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID; a window under which almost no valid
pixel falls is replaced by a percentile window) and :func:`presentation_inverts`
(MONOCHROME1 and PresentationLUTShape) are the steps
:func:`chexnet_dicom.dicom.pixels.render` runs, each recorded in a :class:`RenderSteps`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from chexnet_dicom.config import PixelPolicy
from chexnet_dicom.dicom.attrs import text
from chexnet_dicom.dicom.flags import (
    FLAG_CONSTANT_IMAGE,
    FLAG_PRESENTATION_LUT_CONFLICT,
    FLAG_VOI_FUNCTION_UNKNOWN,
    FLAG_WINDOW_INDEX_OUT_OF_RANGE,
    FLAG_WINDOW_INVALID,
    FLAG_WINDOW_OUTSIDE_DATA,
)
from chexnet_dicom.errors import CorruptHeaderError

__all__ = [
    "FALLBACK_PERCENTILES",
    "NOMINAL_MIN_SPAN",
    "WINDOW_MIN_COVERAGE",
    "Lut",
    "RenderSteps",
    "choose_voi",
    "is_little_endian",
    "modality_lut",
    "padding_mask",
    "presentation_inverts",
]

logger = logging.getLogger(__name__)

#: A window (or VOI LUT input range) is said to lie outside the stored data when fewer
#: than this fraction of the valid pixels escape the one end of it that takes the rest
#: (everything, or nearly, saturates to black or to white).
WINDOW_MIN_COVERAGE = 0.02
#: Percentiles of the valid modality values spanned by the fallback window.
FALLBACK_PERCENTILES = (0.5, 99.5)
#: Without VOI in the header, the nominal range of the data spans the output when the
#: valid data cover at least this fraction of it; otherwise their min/max does.
NOMINAL_MIN_SPAN = 0.5


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


def _as_signed16(value: int, signed: bool) -> int:
    if signed and value >= 0x8000:
        return value - 0x10000
    return value


@dataclass(frozen=True)
class Lut:
    first: int
    table: np.ndarray  # float64 entries
    bits: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        idx = np.clip(np.floor(x).astype(np.int64) - self.first, 0, self.table.size - 1)
        return np.take(self.table, idx)


def _read_lut(item: Dataset, *, signed_first: bool, little_endian: bool, what: str) -> Lut:
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
    return Lut(first=first, table=table, bits=max(bits, needed))


def is_little_endian(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts is not None:
        try:
            return bool(ts.is_little_endian)
        except (AttributeError, ValueError):
            pass
    enc = getattr(ds, "original_encoding", (None, True))
    return enc[1] is not False


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


@dataclass
class RenderSteps:
    steps: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    voi: str = ""

    def flag(self, name: str) -> None:
        if name not in self.flags:
            self.flags.append(name)


def modality_lut(ds: Dataset, signed: bool, little_endian: bool, chain: RenderSteps) -> Any:
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


def choose_voi(
    ds: Dataset,
    values: np.ndarray,
    weights: np.ndarray | None,
    policy: PixelPolicy,
    signed: bool,
    little_endian: bool,
    chain: RenderSteps,
    nominal: tuple[float, float] | None = None,
) -> Any:
    """Return a function mapping modality values to [0, 1].

    ``nominal`` is the range of the Modality LUT output over every possible stored
    value; without any VOI in the header it spans the output (no VOI transformation,
    as dcmtk does) unless the data use less than half of it.
    """
    idx = policy.window_index
    seq = ds.get("VOILUTSequence")
    if seq:
        return _voi_lut_sequence(seq, idx, values, weights, policy, signed, little_endian, chain)
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
        return _minmax(values, chain, "no VOI in the header, data narrower than its nominal range")
    if idx >= n:
        chain.flag(FLAG_WINDOW_INDEX_OUT_OF_RANGE)
        idx = 0
    return _voi_window(ds, idx, n, centers[idx], widths[idx], values, weights, policy, chain)


def _minmax(values: np.ndarray, chain: RenderSteps, reason: str) -> Any:
    """The VOI spanning the data (a constant image maps to 0)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        chain.flag(FLAG_CONSTANT_IMAGE)
        chain.voi = f"constant ({reason})"
        chain.steps.append(f"voi: none, constant image ({reason})")
        return lambda x: np.zeros(np.shape(x), dtype=np.float64)
    chain.voi = f"min-max {lo:g}..{hi:g} ({reason})"
    chain.steps.append(f"voi: {chain.voi}")
    return lambda x: np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _fallback(
    values: np.ndarray, weights: np.ndarray | None, chain: RenderSteps, what: str, cov: float
) -> Any:
    """The percentile window that replaces a VOI leaving too little of the data unsaturated."""
    lo, hi = _weighted_quantiles(values, weights, FALLBACK_PERCENTILES)
    chain.flag(FLAG_WINDOW_OUTSIDE_DATA)
    if hi <= lo:
        return _minmax(values, chain, "percentile window empty")
    p0, p1 = FALLBACK_PERCENTILES
    chain.voi = f"percentile window p{p0:g}..p{p1:g} = {lo:g}..{hi:g}"
    chain.steps.append(
        f"voi: {what} leaves {100 * cov:.2f}% of the valid pixels unsaturated; replaced by {chain.voi}"
    )
    logger.info("window outside the stored data (%s); percentile window used", what)
    return lambda x: np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _voi_lut_sequence(
    seq: Any,
    idx: int,
    values: np.ndarray,
    weights: np.ndarray | None,
    policy: PixelPolicy,
    signed: bool,
    little_endian: bool,
    chain: RenderSteps,
) -> Any:
    """The VOI of item ``idx`` of a VOI LUT Sequence (item 0 when out of range)."""
    if idx >= len(seq):
        chain.flag(FLAG_WINDOW_INDEX_OUT_OF_RANGE)
        idx = 0
    signed_first = signed or float(values.min()) < 0
    lut = _read_lut(seq[idx], signed_first=signed_first, little_endian=little_endian, what="VOI LUT")
    what = f"VOI LUT Sequence item {idx} of {len(seq)} ({lut.table.size} entries, first {lut.first}, {lut.bits} bits)"
    cov = 1.0 - _one_sided(values, weights, lut.first, lut.first + lut.table.size - 1)
    if policy.window_fallback and cov < WINDOW_MIN_COVERAGE:
        return _fallback(values, weights, chain, what, cov)
    scale = float((1 << lut.bits) - 1)
    chain.voi = f"VOI LUT[{idx}]"
    chain.steps.append(f"voi: {what}")
    return lambda x: np.clip(lut(x) / scale, 0.0, 1.0)


def _voi_window(
    ds: Dataset,
    idx: int,
    n: int,
    c: float,
    w: float,
    values: np.ndarray,
    weights: np.ndarray | None,
    policy: PixelPolicy,
    chain: RenderSteps,
) -> Any:
    """The VOI of window ``idx`` of ``n`` (center ``c``, width ``w``) with its VOILUTFunction."""
    funcs = (
        [f.strip().upper() for f in text(ds, "VOILUTFunction").upper().split("\\")]
        if "VOILUTFunction" in ds
        else []
    )
    func = (funcs[idx] if idx < len(funcs) else funcs[0]) if funcs else "LINEAR"
    if func not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        chain.flag(FLAG_VOI_FUNCTION_UNKNOWN)
        func = "LINEAR"
    if (func == "LINEAR" and w < 1.0) or w <= 0.0:
        chain.flag(FLAG_WINDOW_INVALID)
        return _minmax(values, chain, f"window width {w:g} invalid for {func}")
    what = f"window {idx} of {n} {func} center {c:g} width {w:g}"
    if func == "LINEAR":
        lo, hi = c - 0.5 - (w - 1.0) / 2.0, c - 0.5 + (w - 1.0) / 2.0
    elif func == "LINEAR_EXACT":
        lo, hi = c - w / 2.0, c + w / 2.0
    else:  # SIGMOID: the range where the output lies within 2 %..98 %
        lo, hi = c - w, c + w
    cov = 1.0 - _one_sided(values, weights, lo, hi)
    if policy.window_fallback and cov < WINDOW_MIN_COVERAGE:
        return _fallback(values, weights, chain, what, cov)
    chain.voi = f"window[{idx}] {func} c={c:g} w={w:g}"
    chain.steps.append(f"voi: {what}")
    if func == "LINEAR":
        return lambda x: _voi_linear(x, c, w)
    if func == "LINEAR_EXACT":
        return lambda x: _voi_linear_exact(x, c, w)
    return lambda x: _voi_sigmoid(x, c, w)


def presentation_inverts(ds: Dataset, chain: RenderSteps) -> bool:
    """Return True when the VOI output must be inverted for display."""
    photometric = text(ds, "PhotometricInterpretation").upper()
    shape = text(ds, "PresentationLUTShape").upper()
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


def padding_mask(ds: Dataset, arr: np.ndarray, signed: bool, chain: RenderSteps) -> np.ndarray | None:
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
