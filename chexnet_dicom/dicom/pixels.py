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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from chexnet_dicom.config import IngestLimits, PixelPolicy
from chexnet_dicom.dicom.attrs import image_pixel, int_attr, text
from chexnet_dicom.dicom.budget import grid_shape
from chexnet_dicom.dicom.decode import StoredPixels, mask_and_range
from chexnet_dicom.dicom.flags import FLAG_CONTENT_INVERTED
from chexnet_dicom.dicom.orientation import apply_orientation_ops, display_orientation, undo_orientation_ops
from chexnet_dicom.dicom.polarity import INVERSION_MARGIN, MIN_CONTENT_SIDE, inversion_score
from chexnet_dicom.dicom.resize import resize_display
from chexnet_dicom.dicom.voi import (
    Lut,
    RenderSteps,
    choose_voi,
    is_little_endian,
    modality_lut,
    padding_mask,
    presentation_inverts,
)
from chexnet_dicom.errors import CorruptPixelDataError, UnsupportedInputError

__all__ = ["DisplayImage", "GridMap", "render"]

logger = logging.getLogger(__name__)

#: Largest stored-value range rendered through a single lookup table.
_MAX_LUT_SPAN = 1 << 20


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
    output_grid
        (rows, columns) of the grid the outputs are computed on
        (:func:`chexnet_dicom.dicom.budget.grid_shape`): None, the source grid itself;
        smaller for a source above ``max_grid_side``.
    """

    image: np.ndarray
    source_shape: tuple[int, int]
    orientation_ops: tuple[str, ...] = ()
    decode_factor: int = 1
    provenance: dict[str, Any] = field(default_factory=dict)
    output_grid: tuple[int, int] | None = None

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, columns) of the output grid (:meth:`to_source_grid` maps onto it)."""
        return self.output_grid or self.source_shape

    @property
    def grid_scale(self) -> tuple[float, float]:
        """Source pixels per output-grid pixel along (rows, columns); (1, 1) on the source grid."""
        g = self.grid_shape
        return (self.source_shape[0] / g[0], self.source_shape[1] / g[1])

    @property
    def flags(self) -> list[str]:
        """The sanity-check flags that fired."""
        return list(self.provenance.get("flags", []))

    def to_source_grid(self, arr: np.ndarray) -> np.ndarray:
        """Map an array on the display grid back onto the source pixel grid.

        The orientation operations are undone (in reverse order) and the result is
        resized with bilinear interpolation to the output grid: (Rows, Columns), or for
        a source above ``max_grid_side`` that grid reduced by an integer factor
        (:attr:`grid_shape`), as a :class:`GridMap` that knows the source's shape.

        Parameters
        ----------
        arr
            (h, w) or (C, h, w) array aligned with :attr:`image` (any resolution with
            the same field of view, e.g. a 7x7 or 224x224 heatmap).

        Returns
        -------
        numpy.ndarray
            float32 (rows, columns) or (C, rows, columns) of :attr:`grid_shape`.
        """
        a = np.asarray(arr)
        if a.ndim == 3:
            out = np.stack([np.asarray(self.to_source_grid(a[i])) for i in range(a.shape[0])])
        elif a.ndim == 2:
            out = resize_display(undo_orientation_ops(a, self.orientation_ops), self.grid_shape)
        else:
            raise ValueError(f"to_source_grid needs a 2-D or 3-D array, got shape {a.shape}")
        if self.grid_shape != tuple(self.source_shape):
            return GridMap.wrap(out, self.source_shape)
        return out


class GridMap(np.ndarray):
    """An array on a reduced output grid that knows the shape of the source grid it stands for.

    What :meth:`DisplayImage.to_source_grid` returns for a source above ``max_grid_side``:
    numpy operations keep the attribute, so a consumer of a heatmap
    (:func:`chexnet_dicom.outputs.regions.heatmap_region`) can scale coordinates back
    to the source without being told.
    """

    source_shape: tuple[int, int] | None

    @classmethod
    def wrap(cls, arr: np.ndarray, source_shape: tuple[int, int]) -> GridMap:
        """``arr`` viewed as a :class:`GridMap` of a ``source_shape`` source (no copy)."""
        out = np.asarray(arr).view(cls)
        out.source_shape = (int(source_shape[0]), int(source_shape[1]))
        return out

    def __array_finalize__(self, obj: Any) -> None:
        self.source_shape = getattr(obj, "source_shape", None)

    def __reduce__(self) -> Any:  # pickled as a plain array: the grid travels with its image
        return (np.asarray, (np.asarray(self),))


def render(
    ds: Dataset,
    stored: StoredPixels,
    *,
    policy: PixelPolicy | None = None,
    max_grid_side: int | None = None,
) -> DisplayImage:
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
    max_grid_side
        Largest side of the output grid (``IngestLimits.max_grid_side``; its default
        when None).

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
    chain = RenderSteps()
    arr = np.asarray(stored.array)
    if arr.ndim != 2 or arr.size == 0:
        raise CorruptPixelDataError(f"stored pixels have shape {arr.shape}; a 2-D image is needed")
    photometric = text(ds, "PhotometricInterpretation").upper()
    if photometric not in ("", "MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedInputError(
            f"PhotometricInterpretation {photometric} is not grey scale; only MONOCHROME1/2 "
            "images can be analysed",
            reason="COLOR",
        )
    pixel = image_pixel(ds)
    rows = pixel.rows if pixel else arr.shape[0] * max(stored.factor, 1)
    cols = pixel.columns if pixel else arr.shape[1] * max(stored.factor, 1)
    signed = pixel.signed if pixel else int_attr(ds, "PixelRepresentation", 0) == 1
    little = is_little_endian(ds)
    integer = np.issubdtype(arr.dtype, np.integer)
    bits = (pixel.bits_stored if pixel else arr.dtype.itemsize * 8) if integer else 0
    arr, value_range = _checked_stored(arr, stored, bits if integer else None, signed, chain)
    pad = padding_mask(ds, arr, signed, chain)

    modality = modality_lut(ds, signed, little, chain)
    stats = _modality_values(arr, value_range, pad, modality)
    nominal = _nominal_range(bits, signed, modality) if value_range is not None else None
    voi = choose_voi(ds, stats.values, stats.weights, policy, signed, little, chain, nominal)
    invert = presentation_inverts(ds, chain)
    out = _grey_scale(arr, stats, modality, voi, invert)
    if pad is not None:
        out[pad] = 0.0

    # Geometry: PatientOrientation -> standard frontal.
    ops = display_orientation(ds, out, policy, chain)
    img = np.ascontiguousarray(apply_orientation_ops(out, ops))
    img, score, measurable = _content_polarity(img, pad, ops, policy, chain)
    laterality = text(ds, "ImageLaterality").upper()
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
    grid, scale = grid_shape(rows, cols, max_grid_side or IngestLimits().max_grid_side)
    if scale > 1:
        provenance["output_grid"] = list(grid)
        chain.steps.append(
            f"grid: outputs on the source grid reduced by {scale} ({grid[0]}x{grid[1]}), "
            "the working-set budget"
        )
    return DisplayImage(
        image=img.astype(np.float32, copy=False),
        source_shape=(rows, cols),
        orientation_ops=tuple(ops),
        decode_factor=int(stored.factor),
        provenance=provenance,
        output_grid=grid if scale > 1 else None,
    )


def _checked_stored(
    arr: np.ndarray, stored: StoredPixels, bits: int | None, signed: bool, chain: RenderSteps
) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Integer stored values (``bits`` given) masked to BitsStored with their range; floating
    point values (``bits`` None, range None) must be finite."""
    if bits is not None:
        if stored.masked and stored.value_range is not None:
            value_range = stored.value_range
        else:
            arr, value_range = mask_and_range(arr, bits, signed)
        chain.steps.append(f"stored: {bits} bits {'signed' if signed else 'unsigned'}")
        return arr, value_range
    if not np.all(np.isfinite(arr)):
        raise CorruptPixelDataError("decoded pixel data holds NaN or infinite values")
    chain.steps.append(f"stored: floating point ({arr.dtype})")
    return arr, None


@dataclass
class _ModalityValues:
    """The valid (non-padding) modality values the VOI is chosen from.

    With a table (``use_lut``: an integer image of a small enough range) they are the
    distinct values with their counts, and ``offs`` indexes ``mod_domain`` per pixel.
    """

    values: np.ndarray
    weights: np.ndarray | None
    use_lut: bool = False
    offs: np.ndarray | None = None
    mod_domain: np.ndarray | None = None


def _modality_values(
    arr: np.ndarray,
    value_range: tuple[int, int] | None,
    pad: np.ndarray | None,
    modality: Any,
) -> _ModalityValues:
    if value_range is not None and value_range[1] - value_range[0] < _MAX_LUT_SPAN:
        vmin, vmax = value_range
        if vmin >= 0 and vmax < _MAX_LUT_SPAN and arr.dtype.kind == "u" and arr.dtype.itemsize <= 4:
            vmin = 0  # index the table with the stored values themselves: no int64 copy
        offs = (arr.astype(np.int64) - vmin) if vmin != 0 or arr.dtype.itemsize > 4 else arr
        domain = np.arange(vmin, vmax + 1, dtype=np.int64)
        hist = np.bincount((offs if pad is None else offs[~pad]).ravel(), minlength=domain.size)
        present = hist > 0
        if not present.any():
            hist, present = np.bincount(offs.ravel(), minlength=domain.size), np.ones(domain.size, bool)
        mod_domain = modality(domain.astype(np.float64))
        return _ModalityValues(mod_domain[present], hist[present], True, offs, mod_domain)
    flat = arr.astype(np.float64) if pad is None else arr[~pad].astype(np.float64)
    if flat.size == 0:
        flat = arr.astype(np.float64).ravel()
    return _ModalityValues(modality(flat.ravel()), None)


def _nominal_range(bits: int, signed: bool, modality: Any) -> tuple[float, float]:
    """The modality values of the whole stored range of BitsStored."""
    lo_s, hi_s = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    # every output of a table is one of its entries
    ends = modality.table if isinstance(modality, Lut) else modality(np.array([lo_s, hi_s], dtype=np.float64))
    return float(np.min(ends)), float(np.max(ends))


def _grey_scale(
    arr: np.ndarray,
    stats: _ModalityValues,
    modality: Any,
    voi: Any,
    invert: bool,
) -> np.ndarray:
    """Modality -> VOI -> Presentation over the image, clipped to [0, 1] (float32)."""
    if stats.use_lut and stats.mod_domain is not None and stats.offs is not None:
        table = voi(stats.mod_domain)
        if invert:
            table = 1.0 - table
        # clipping the table clips every output pixel: one pass less over the image
        return np.take(np.clip(table, 0.0, 1.0).astype(np.float32), stats.offs)
    out = voi(modality(arr.astype(np.float64)))
    if invert:
        out = 1.0 - out
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _content_polarity(
    img: np.ndarray, pad: np.ndarray | None, ops: Sequence[str], policy: PixelPolicy, chain: RenderSteps
) -> tuple[np.ndarray, float, bool]:
    """Measure the polarity (on an image large enough to show anatomy) and correct it if the
    policy says so; returns the image, the score and whether it was measurable."""
    if min(img.shape) < MIN_CONTENT_SIDE:
        chain.steps.append(f"content: {img.shape[0]}x{img.shape[1]} too small to measure polarity")
        return img, float("nan"), False
    score = inversion_score(img)
    if score < -INVERSION_MARGIN and policy.inversion != "ignore":
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
    return img, score, True
