"""Synthetic chest radiographs: a deterministic phantom, DICOM builders and encoders.

Nothing here comes from a patient. The module serves tests, benchmarks and the
``sample_data/`` generator:

* :func:`chest_phantom` draws a frontal (PA/AP) or lateral chest radiograph as a
  float image in [0, 1] (bright = dense, standard display orientation: head up,
  patient's right on the image left), deterministic from a seed, any size, with
  an optional lesion blob;
* :func:`make_dataset` wraps an image (float display image or integer stored
  values) into a DX, CR or Secondary Capture dataset with the grey-scale
  pipeline attributes a test needs (BitsStored, signed data, rescale or Modality
  LUT Sequence, windows or VOI LUT Sequence, VOILUTFunction, MONOCHROME1,
  PresentationLUTShape, PatientOrientation...) and deterministic UIDs;
* :func:`encode` re-encodes a dataset in any transfer syntax we can write
  (uncompressed, deflated, big endian, RLE, JPEG-LS, JPEG 2000, JPEG baseline);
* :func:`write` writes it with or without preamble and file meta information.

Float input semantics: a float image ``v`` in [0, 1] is quantised so that the
standard rendering (stored -> Modality LUT -> VOI -> Presentation) of the dataset
gives back ``v`` (up to quantisation) when the ``"auto"`` window or the VOI LUT is
used: ``p = 1 - v`` when the display is inverted (MONOCHROME1, or
PresentationLUTShape INVERSE with MONOCHROME2), else ``p = v``; stored value
``lo + round(p * (hi - lo))`` over ``stored_range`` (default: the whole range of
BitsStored).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, derive_uid

__all__ = [
    "CR_IMAGE_STORAGE",
    "DX_PRESENTATION_STORAGE",
    "DX_PROCESSING_STORAGE",
    "ENCODABLE_TRANSFER_SYNTAXES",
    "LOSSLESS_TRANSFER_SYNTAXES",
    "SC_IMAGE_STORAGE",
    "DatasetSpec",
    "Lesion",
    "chest_phantom",
    "encode",
    "make_dataset",
    "stored_range_for",
    "to_stored",
    "write",
]

logger = logging.getLogger(__name__)

#: SOP classes the builders make.
DX_PRESENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")
DX_PROCESSING_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1.1")
CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
SC_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")

#: Transfer syntaxes that :func:`encode` writes without loss.
LOSSLESS_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
)
#: Every transfer syntax :func:`encode` accepts (lossy ones last).
ENCODABLE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    *LOSSLESS_TRANSFER_SYNTAXES,
    JPEGLSNearLossless,
    JPEG2000,
    JPEGBaseline8Bit,
)

_UNCOMPRESSED = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
_SYNTH_ROOT = "chexnet-dicom-synth"
_VIEW_CODES = {
    "PA": codes.SCT.PosteroAnterior,
    "AP": codes.SCT.AnteroPosterior,
    "LL": codes.SCT.LeftLateral,
    "RL": codes.SCT.RightLateral,
}
# PatientOrientation (row direction, column direction) of the standard display of each view.
_ORIENTATION = {"PA": ("L", "F"), "AP": ("L", "F"), "LL": ("A", "F"), "RL": ("P", "F"), "LATERAL": ("A", "F")}


# --------------------------------------------------------------------------- phantom


@dataclass(frozen=True)
class Lesion:
    """A round opacity added to the phantom.

    Attributes
    ----------
    cy, cx
        Centre as fractions of the image height and width (0 = top/left).
    radius
        Gaussian sigma as a fraction of the smaller image side.
    amplitude
        Peak brightness added (display units, bright = dense).
    """

    cy: float = 0.45
    cx: float = 0.30
    radius: float = 0.03
    amplitude: float = 0.25


def _soft_inside(r: np.ndarray, edge: float) -> np.ndarray:
    """1 inside (r < 1), 0 outside, with a logistic edge of width ``edge``."""
    return 0.5 * (1.0 - np.tanh((r - 1.0) / (2.0 * edge)))


def _ellipse_r(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)


def _smooth_field(rng: np.random.Generator, rows: int, cols: int, cells: int = 12) -> np.ndarray:
    """Low-frequency random field in about [-1, 1] (bilinear upsampling of a coarse grid)."""
    coarse = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1))
    ys = np.linspace(0.0, cells, rows)
    xs = np.linspace(0.0, cells, cols)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return (a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx).astype(np.float64)


def _segment_distance(
    yy: np.ndarray, xx: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]
) -> np.ndarray:
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx), 0.0, 1.0)
    return np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))


def _frontal(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    j = rng.uniform(-0.015, 0.015, size=8)  # anatomical jitter
    edge = 0.012
    body = _soft_inside(_ellipse_r(yy, xx, 0.58 + j[0], 0.5, 0.78, 0.45 + j[1]), edge)
    img = 0.04 + 0.50 * body
    # Skin line / subcutaneous soft tissue border.
    r_body = _ellipse_r(yy, xx, 0.58 + j[0], 0.5, 0.78, 0.45 + j[1])
    img += 0.04 * np.exp(-(((r_body - 0.985) / 0.012) ** 2))
    # Diaphragm domes: the right one (image left) sits higher; liver below it.
    dome_r = 0.66 + j[2] + 0.10 * ((xx - 0.30) / 0.20) ** 2
    dome_l = 0.70 + j[3] + 0.10 * ((xx - 0.70) / 0.20) ** 2
    above = np.where(
        xx < 0.5, 0.5 * (1 - np.tanh((yy - dome_r) / 0.02)), 0.5 * (1 - np.tanh((yy - dome_l) / 0.02))
    )
    lung_r = _soft_inside(_ellipse_r(yy, xx, 0.45, 0.30 + j[4], 0.34, 0.155), edge) * above
    lung_l = _soft_inside(_ellipse_r(yy, xx, 0.47, 0.70 + j[5], 0.34, 0.150), edge) * above
    # Heart (towards the patient's left = image right) and aortic knob cover part of the lungs.
    heart = _soft_inside(_ellipse_r(yy, xx, 0.62 + j[6], 0.56 + j[7], 0.13, 0.16), 0.03)
    knob = _soft_inside(_ellipse_r(yy, xx, 0.30, 0.58, 0.035, 0.035), 0.05)
    lungs = np.clip(lung_r + lung_l * (1.0 - 0.8 * heart) * (1.0 - 0.7 * knob), 0.0, 1.0)
    vessels = _smooth_field(rng, *shape)
    img -= lungs * (0.34 + 0.03 * vessels - 0.06 * np.clip(1 - np.abs(xx - 0.5) / 0.25, 0, 1))
    # Mediastinum and spine: the bright central strip with vertebral end plates.
    strip = 0.5 * (1 - np.tanh((np.abs(xx - 0.5) - 0.035) / 0.006))
    plates = 0.5 + 0.5 * np.cos(2 * np.pi * (yy / 0.055))
    img += strip * (0.16 + 0.04 * plates)
    # Ribs: curved bands on each side, inside the thorax only.
    thorax = _soft_inside(_ellipse_r(yy, xx, 0.46, 0.5, 0.38, 0.42), 0.02)
    ribs = np.zeros_like(img)
    for side in (-1.0, 1.0):
        lat = np.clip((xx - 0.5) * side, 0, None)  # distance from the spine on this side
        # Ten ribs 0.055 apart, each bending down then up laterally: one periodic band per side.
        t = (yy - 0.17 - 0.9 * lat**2 + 0.25 * lat) / 0.055
        phase = (t + 0.5) % 1.0 - 0.5
        ribs += np.exp(-((phase * 0.055 / 0.009) ** 2)) * (t > -0.5) * (t < 9.5) * (lat > 0.03)
    img += 0.09 * np.clip(ribs, 0, 1.5) * thorax
    # Clavicles.
    for p0, p1 in (((0.17, 0.14), (0.13, 0.46)), ((0.17, 0.86), (0.13, 0.54))):
        d = _segment_distance(yy, xx, p0, p1)
        img += 0.15 * np.exp(-((d / 0.012) ** 2))
    # Gastric air bubble under the left hemidiaphragm (image right).
    img -= 0.12 * _soft_inside(_ellipse_r(yy, xx, 0.80, 0.70, 0.035, 0.05), 0.08)
    return img


def _lateral(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    j = rng.uniform(-0.015, 0.015, size=4)
    body = _soft_inside(_ellipse_r(yy, xx, 0.58, 0.5, 0.80, 0.40 + j[0]), 0.012)
    img = 0.04 + 0.55 * body
    dome = 0.70 + j[1] + 0.12 * ((xx - 0.5) / 0.3) ** 2
    above = 0.5 * (1 - np.tanh((yy - dome) / 0.02))
    lung = _soft_inside(_ellipse_r(yy, xx, 0.45, 0.50 + j[2], 0.35, 0.27), 0.02) * above
    heart = _soft_inside(_ellipse_r(yy, xx, 0.60 + j[3], 0.38, 0.14, 0.14), 0.04)
    img -= lung * (1 - 0.7 * heart) * (0.30 + 0.03 * _smooth_field(rng, *shape))
    # Spine posteriorly (image right), sternum anteriorly (image left).
    spine = 0.5 * (1 - np.tanh((np.abs(xx - 0.80) - 0.045) / 0.006))
    img += spine * (0.18 + 0.05 * (0.5 + 0.5 * np.cos(2 * np.pi * yy / 0.06)))
    sternum = 0.5 * (1 - np.tanh((np.abs(xx - 0.16 - 0.05 * yy) - 0.012) / 0.004)) * (yy > 0.2) * (yy < 0.65)
    img += 0.12 * sternum
    return img


def chest_phantom(
    shape: int | tuple[int, int] = 512,
    *,
    seed: int = 0,
    view: Literal["frontal", "lateral"] = "frontal",
    lesion: Lesion | Sequence[Lesion] | None = None,
    noise: float = 0.01,
) -> np.ndarray:
    """Draw a synthetic chest radiograph.

    Parameters
    ----------
    shape
        ``(rows, columns)``, or one int for a square image. Any size >= 8.
    seed
        Seed of the anatomical jitter, lung texture and noise; same seed, same image.
    view
        ``"frontal"`` (PA/AP: two dark lung fields either side of the bright
        mediastinum and spine, heart towards image right, brighter below the
        diaphragm, ribs, clavicles, body outline) or ``"lateral"``.
    lesion
        One or more :class:`Lesion` opacities to add.
    noise
        Standard deviation of the Gaussian noise (display units).

    Returns
    -------
    numpy.ndarray
        float32 array ``(rows, columns)`` in [0, 1], bright = dense, head up,
        patient's right on the image left.

    Raises
    ------
    ValueError
        On a size below 8 pixels, an unknown view or negative noise.
    """
    rows, cols = (shape, shape) if isinstance(shape, int) else (int(shape[0]), int(shape[1]))
    if rows < 8 or cols < 8:
        raise ValueError(f"phantom shape must be at least 8x8, got {rows}x{cols}")
    if noise < 0:
        raise ValueError("noise must be >= 0")
    rng = np.random.default_rng(seed)
    yy = ((np.arange(rows, dtype=np.float64) + 0.5) / rows)[:, None]
    xx = ((np.arange(cols, dtype=np.float64) + 0.5) / cols)[None, :]
    yy, xx = np.broadcast_arrays(yy, xx)
    if view == "frontal":
        img = _frontal(yy, xx, rng, (rows, cols))
    elif view == "lateral":
        img = _lateral(yy, xx, rng, (rows, cols))
    else:
        raise ValueError(f"view must be 'frontal' or 'lateral', not {view!r}")
    lesions = [lesion] if isinstance(lesion, Lesion) else list(lesion or ())
    for les in lesions:
        sigma = les.radius * min(rows, cols)
        d2 = ((yy - les.cy) * rows) ** 2 + ((xx - les.cx) * cols) ** 2
        img = img + les.amplitude * np.exp(-d2 / (2 * sigma * sigma))
    if noise:
        img = img + rng.normal(0.0, noise, size=(rows, cols))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- stored values


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


# --------------------------------------------------------------------------- datasets


def _ds_number(x: float) -> str:
    """A DS string of at most 16 characters."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    text = f"{x:.6g}"
    return text if len(text) <= 16 else f"{x:.8e}"[:16]


def _code_item(code: Any) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _lut_element(tag: int, values: np.ndarray) -> DataElement:
    """LUT Data as OW (little endian bytes; :func:`encode` swaps them for big endian)."""
    return DataElement(tag, "OW", values.astype("<u2").tobytes())


def _descriptor(n: int, first: int, values: np.ndarray) -> DataElement:
    """LUT Descriptor: entries (0 means 65536), first mapped value, bits per entry (8-16)."""
    vr = "SS" if first < 0 else "US"
    bits = max(8, int(values.max()).bit_length())
    return DataElement(0x00283002, vr, [n if n < 65536 else 0, first, bits])


def _is_ascii(text: str) -> bool:
    return all(ord(ch) < 128 for ch in text)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything :func:`make_dataset` writes besides the pixels (all fields have defaults).

    Attributes
    ----------
    modality
        The IOD: ``"DX"`` (Digital X-Ray for presentation/processing), ``"CR"``
        or ``"SC"`` (Secondary Capture, ConversionType SYN).
    modality_value
        Modality (0008,0060) to write instead of the IOD's (``"OT"`` for SC).
    sop_class_uid
        SOPClassUID override (gate tests).
    presentation_intent
        DX PresentationIntentType; selects the DX SOP class.
    photometric
        ``"MONOCHROME1"``, ``"MONOCHROME2"`` or ``"RGB"``.
    bits_allocated, bits_stored, pixel_representation
        Image Pixel module values; BitsAllocated defaults to 8 when
        BitsStored <= 8, else 16. HighBit is BitsStored - 1.
    stored_range
        Stored values that 0 and 1 of a float image map to.
    rescale_slope, rescale_intercept
        Modality rescale (RescaleType "US"). The DX IOD requires 1 and 0: other
        values make a non-conformant DX (fine for robustness tests; use CR for
        a conformant rescaled image).
    modality_lut
        Write a Modality LUT Sequence instead of rescale: 16-bit output
        stretching the representable stored range linearly over 0..65535.
    window
        ``"auto"``: one window exactly covering the modality values of the
        stored range for the chosen ``voi_lut_function``; a ``(center, width)``
        pair; a sequence of pairs (several windows with explanations); ``None``
        for no window.
    voi_lut_function
        VOILUTFunction to write (absent means LINEAR).
    voi_lut
        Add a VOI LUT Sequence mapping the modality range linearly to 16 bits.
    presentation_lut_shape
        ``"auto"`` writes INVERSE for MONOCHROME1 and IDENTITY for MONOCHROME2
        (required by DX, omitted for CR/SC); ``None`` omits it.
    view_position
        ViewPosition (``"PA"``, ``"AP"``, ``"LL"``, ``"RL"``, ``""``) or None to omit.
    view_code
        Add a ViewCodeSequence item (CID 4010 SNOMED CT code) for known views.
    patient_orientation
        ``"auto"`` derives it from the view (``L\\F`` frontal, ``A\\F`` left lateral),
        a pair, or None for an empty value.
    body_part
        BodyPartExamined, None to omit.
    laterality
        ImageLaterality (DX Type 1), None to omit.
    patient_name, patient_id
        Person name (may be non-ASCII) and ID (default derived from the seed).
    specific_character_set
        ``"auto"`` writes ``ISO_IR 192`` (UTF-8) when the name is not ASCII; pass
        ``"ISO_IR 100"`` for Latin-1; None omits it.
    seed, study_key, series_number, instance_number
        Deterministic identity: UIDs are :func:`~chexnet_dicom.dicom.uids.derive_uid`
        of (``study_key`` or the seed, role, series, instance), so instances
        with one ``study_key`` share a study and a series number shares a series.
    study_uid, series_uid, sop_uid
        Explicit UIDs (override the derived ones).
    study_date, study_description, series_description
        Descriptive attributes.
    imager_pixel_spacing
        ImagerPixelSpacing in mm (default 430 mm over the larger side).
    pixel_padding_value
        PixelPaddingValue to declare (the caller places it in the pixels).
    junk_high_bits
        Set every bit above HighBit (BitsStored < BitsAllocated) to 1 in the
        pixel data, as some modalities do; readers must mask them.
    extra
        Further attributes by keyword, set last (may override anything).
    """

    modality: Literal["DX", "CR", "SC"] = "DX"
    modality_value: str | None = None
    sop_class_uid: str | None = None
    presentation_intent: Literal["FOR PRESENTATION", "FOR PROCESSING"] = "FOR PRESENTATION"
    photometric: str = "MONOCHROME2"
    bits_allocated: int | None = None
    bits_stored: int = 12
    pixel_representation: int = 0
    stored_range: tuple[int, int] | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    modality_lut: bool = False
    window: tuple[float, float] | Sequence[tuple[float, float]] | Literal["auto"] | None = "auto"
    voi_lut_function: Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"] | None = None
    voi_lut: bool = False
    presentation_lut_shape: Literal["IDENTITY", "INVERSE", "auto"] | None = "auto"
    view_position: str | None = "PA"
    view_code: bool = True
    patient_orientation: tuple[str, str] | Literal["auto"] | None = "auto"
    body_part: str | None = "CHEST"
    laterality: str | None = "U"
    patient_name: str = "Synthetic^Patient"
    patient_id: str | None = None
    specific_character_set: str | None = "auto"
    seed: int = 0
    study_key: str | None = None
    series_number: int = 1
    instance_number: int = 1
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    study_date: str = "20240102"
    study_description: str = "CHEST 2 VIEWS (SYNTHETIC)"
    series_description: str | None = None
    imager_pixel_spacing: float | None = None
    pixel_padding_value: int | None = None
    junk_high_bits: bool = False
    extra: Mapping[str, Any] | None = None


def make_dataset(pixels: np.ndarray, spec: DatasetSpec | None = None, /, **fields: Any) -> Dataset:
    """Build a DX, CR or Secondary Capture image dataset (uncompressed, explicit VR LE).

    Parameters
    ----------
    pixels
        Either a float display image in [0, 1] (bright = dense; quantised as the
        module docstring says), or integer *stored* values used as they are.
        2-D for one frame; ``(frames, rows, cols)`` makes a multi-frame image
        and ``(rows, cols, 3)`` uint8 with ``photometric="RGB"`` a colour one
        (both outside the DX/CR IODs: for gate tests only).
    spec
        What to write (:class:`DatasetSpec`); the defaults when omitted.
    **fields
        :class:`DatasetSpec` fields by name, replacing those of ``spec``
        (``make_dataset(img, bits_stored=16)`` is ``make_dataset(img, DatasetSpec(bits_stored=16))``).

    Returns
    -------
    pydicom.dataset.Dataset
        The dataset with ``file_meta`` (Explicit VR Little Endian).

    Raises
    ------
    TypeError
        On a keyword that is not a :class:`DatasetSpec` field.
    ValueError
        On inconsistent arguments.
    """
    spec = dataclasses.replace(spec, **fields) if spec is not None else DatasetSpec(**fields)
    arr = np.asarray(pixels)
    fmt = _pixel_format(arr, spec)
    stored = _stored_values(arr, spec, fmt)
    ds = Dataset()
    key = spec.study_key if spec.study_key is not None else str(spec.seed)
    _identity(ds, spec, key)
    _acquisition(ds, spec, fmt)
    _image_pixel(ds, spec, fmt)
    if not fmt.colour:
        _grey_pipeline(ds, spec, fmt)
    ds.PixelData = _pack(stored, fmt.bits_allocated, fmt.bits_stored, spec.junk_high_bits)
    ds["PixelData"].VR = "OB" if fmt.bits_allocated == 8 else "OW"
    for keyword, value in (spec.extra or {}).items():
        setattr(ds, keyword, value)
    ds.file_meta = _file_meta(ds)
    return ds


@dataclass(frozen=True)
class _Format:
    """The pixel layout :func:`make_dataset` resolves from the pixels and the spec."""

    colour: bool
    frames: int
    rows: int
    cols: int
    multi_frame: bool
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    #: PresentationLUTShape to write (None: omit) and whether the display is inverted.
    shape_value: str | None
    inverted: bool
    #: The whole stored range of BitsStored, and the part that 0 and 1 of a float image map to.
    rmin: int
    rmax: int
    lo: int
    hi: int


def _pixel_format(arr: np.ndarray, spec: DatasetSpec) -> _Format:
    """Check the pixels against the spec and resolve the Image Pixel values."""
    photometric, modality = spec.photometric, spec.modality
    colour = photometric == "RGB"
    if colour:
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError("RGB pixels must have shape (rows, cols, 3)")
        frames = 1
        rows, cols = arr.shape[:2]
    elif arr.ndim == 2:
        frames, (rows, cols) = 1, arr.shape
    elif arr.ndim == 3:
        frames, rows, cols = arr.shape
    else:
        raise ValueError(f"pixels must be 2-D or 3-D, got shape {arr.shape}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB"):
        raise ValueError(f"photometric must be MONOCHROME1, MONOCHROME2 or RGB, not {photometric!r}")
    if modality not in ("DX", "CR", "SC"):
        raise ValueError(f"modality must be DX, CR or SC, not {modality!r}")
    bits_stored, pixel_representation = (8, 0) if colour else (spec.bits_stored, spec.pixel_representation)
    bits_allocated = spec.bits_allocated
    if bits_allocated is None:
        bits_allocated = 8 if bits_stored <= 8 else 16
    if bits_allocated not in (8, 16) or bits_stored > bits_allocated:
        raise ValueError(f"unsupported BitsAllocated {bits_allocated} / BitsStored {bits_stored}")
    if pixel_representation not in (0, 1):
        raise ValueError("pixel_representation must be 0 or 1")
    if spec.presentation_lut_shape == "auto":
        shape_value: str | None = None
        if modality == "DX" and not colour:
            shape_value = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    else:
        shape_value = spec.presentation_lut_shape
    inverted = photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape_value == "INVERSE")
    rmin, rmax = stored_range_for(bits_stored, pixel_representation)
    lo, hi = spec.stored_range if spec.stored_range is not None else (rmin, rmax)
    multi_frame = frames > 1 or (arr.ndim == 3 and not colour)
    return _Format(
        colour,
        frames,
        rows,
        cols,
        multi_frame,
        bits_allocated,
        bits_stored,
        pixel_representation,
        shape_value,
        inverted,
        rmin,
        rmax,
        lo,
        hi,
    )


def _stored_values(arr: np.ndarray, spec: DatasetSpec, fmt: _Format) -> np.ndarray:
    """The stored values: a float image quantised (module docstring), integers checked and kept."""
    if np.issubdtype(arr.dtype, np.floating):
        if fmt.colour:
            return np.rint(np.clip(arr, 0, 1) * 255).astype(np.int64)
        return to_stored(
            arr,
            bits_stored=fmt.bits_stored,
            pixel_representation=fmt.pixel_representation,
            invert=fmt.inverted,
            stored_range=(fmt.lo, fmt.hi),
        )
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        stored = arr.astype(np.int64)
        if stored.size and (stored.min() < fmt.rmin or stored.max() > fmt.rmax):
            raise ValueError(
                f"stored values {stored.min()}..{stored.max()} do not fit {fmt.bits_stored}-bit "
                f"{'signed' if fmt.pixel_representation else 'unsigned'} data"
            )
        return stored
    raise ValueError(f"unsupported pixel dtype {arr.dtype}")


def _sop_class(spec: DatasetSpec) -> UID:
    if spec.sop_class_uid:
        return UID(spec.sop_class_uid)
    if spec.modality == "DX":
        return (
            DX_PRESENTATION_STORAGE
            if spec.presentation_intent == "FOR PRESENTATION"
            else DX_PROCESSING_STORAGE
        )
    return CR_IMAGE_STORAGE if spec.modality == "CR" else SC_IMAGE_STORAGE


def _identity(ds: Dataset, spec: DatasetSpec, key: str) -> None:
    """SOP Common, Patient, Study, Series and equipment attributes, with deterministic UIDs."""
    modality, series_number = spec.modality, spec.series_number
    if spec.specific_character_set == "auto":
        charset: str | None = None if _is_ascii(spec.patient_name) else "ISO_IR 192"
    else:
        charset = spec.specific_character_set
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""] if modality == "DX" else ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = _sop_class(spec)
    ds.SOPInstanceUID = spec.sop_uid or derive_uid(
        _SYNTH_ROOT, key, "instance", str(series_number), str(spec.instance_number)
    )
    ds.StudyDate = spec.study_date
    ds.SeriesDate = spec.study_date
    ds.ContentDate = spec.study_date
    ds.StudyTime = "101500"
    ds.SeriesTime = "101500"
    ds.ContentTime = f"1015{spec.instance_number % 60:02d}"
    ds.AccessionNumber = f"SYN{abs(_hash_int(key)) % 10**8:08d}"
    ds.Modality = spec.modality_value or ("OT" if modality == "SC" else modality)
    if modality == "SC":
        ds.ConversionType = "SYN"
    ds.Manufacturer = "chexnet-dicom synthetic phantom"
    ds.InstitutionName = "Synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = spec.series_description or f"{spec.view_position or 'chest'} synthetic"
    ds.ManufacturerModelName = "chest_phantom"
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id or f"SYN-{abs(_hash_int(key)) % 10**6:06d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic data: no patient"
    if spec.body_part is not None:
        ds.BodyPartExamined = spec.body_part
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = IMPLEMENTATION_VERSION_NAME
    ds.StudyInstanceUID = spec.study_uid or derive_uid(_SYNTH_ROOT, key, "study")
    ds.SeriesInstanceUID = spec.series_uid or derive_uid(_SYNTH_ROOT, key, "series", str(series_number))
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = spec.instance_number


def _acquisition(ds: Dataset, spec: DatasetSpec, fmt: _Format) -> None:
    """View, orientation and laterality, and the DX / CR acquisition attributes."""
    modality, view_position = spec.modality, spec.view_position
    if modality in ("DX", "CR"):
        ds.ViewPosition = view_position or ""
    elif view_position is not None:
        ds.ViewPosition = view_position
    if spec.patient_orientation == "auto":
        ds.PatientOrientation = list(_ORIENTATION.get((view_position or "").upper(), ("L", "F")))
    elif spec.patient_orientation is None:
        ds.PatientOrientation = ""
    else:
        ds.PatientOrientation = list(spec.patient_orientation)
    laterality = spec.laterality
    if (laterality is not None and modality == "DX") or (laterality is not None and laterality != "U"):
        ds.ImageLaterality = laterality
    if spec.view_code and modality == "DX" and view_position and view_position.upper() in _VIEW_CODES:
        item = _code_item(_VIEW_CODES[view_position.upper()])
        item.ViewModifierCodeSequence = DicomSequence([])
        ds.ViewCodeSequence = DicomSequence([item])
    spacing = spec.imager_pixel_spacing or 430.0 / max(fmt.rows, fmt.cols)
    if modality == "DX":
        ds.PresentationIntentType = spec.presentation_intent
        ds.AnatomicRegionSequence = DicomSequence([_code_item(codes.SCT.Chest)])
        ds.PixelIntensityRelationship = "LIN"
        ds.PixelIntensityRelationshipSign = -1 if spec.photometric == "MONOCHROME1" else 1
        ds.DetectorType = "SCINTILLATOR"
        ds.PatientPosition = ""
        ds.PositionerType = ""
        ds.AcquisitionContextSequence = DicomSequence([])
        ds.ImagerPixelSpacing = [_ds_number(round(spacing, 6))] * 2
        ds.DistanceSourceToDetector = "1800"
        ds.KVP = "120"
        ds.ExposureTime = "10"
        ds.XRayTubeCurrent = "200"
        ds.BurnedInAnnotation = "NO"
        ds.DetectorConfiguration = "AREA"
        ds.Exposure = "2"
    elif modality == "CR":
        ds.ImagerPixelSpacing = [_ds_number(round(spacing, 6))] * 2
        ds.KVP = "120"


def _image_pixel(ds: Dataset, spec: DatasetSpec, fmt: _Format) -> None:
    """The Image Pixel module (the pixel data itself is packed last)."""
    ds.SamplesPerPixel = 3 if fmt.colour else 1
    ds.PhotometricInterpretation = spec.photometric
    if fmt.colour:
        ds.PlanarConfiguration = 0
    ds.Rows = fmt.rows
    ds.Columns = fmt.cols
    if fmt.multi_frame:
        ds.NumberOfFrames = fmt.frames
    ds.BitsAllocated = fmt.bits_allocated
    ds.BitsStored = fmt.bits_stored
    ds.HighBit = fmt.bits_stored - 1
    ds.PixelRepresentation = fmt.pixel_representation
    if spec.pixel_padding_value is not None:
        vr = "SS" if fmt.pixel_representation else "US"
        ds.add(DataElement(0x00280120, vr, spec.pixel_padding_value))
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"


def _grey_pipeline(ds: Dataset, spec: DatasetSpec, fmt: _Format) -> None:
    """Modality LUT (rescale or sequence), VOI (windows, function, LUT) and Presentation LUT Shape."""
    # Modality values of the stored range (for the auto window and the VOI LUT).
    if spec.modality_lut:
        n_lut = fmt.rmax - fmt.rmin + 1
        lut_values = np.rint(np.linspace(0.0, 65535.0, n_lut))
        mlo, mhi = float(lut_values[fmt.lo - fmt.rmin]), float(lut_values[fmt.hi - fmt.rmin])
        item = Dataset()
        item.add(_descriptor(n_lut, fmt.rmin, lut_values))
        item.ModalityLUTType = "US"
        item.LUTExplanation = "synthetic linear modality LUT"
        item.add(_lut_element(0x00283006, lut_values))
        ds.ModalityLUTSequence = DicomSequence([item])
    else:
        slope, intercept = spec.rescale_slope, spec.rescale_intercept
        mlo, mhi = fmt.lo * slope + intercept, fmt.hi * slope + intercept
        if spec.modality != "SC" or slope != 1.0 or intercept != 0.0:
            ds.RescaleIntercept = _ds_number(intercept)
            ds.RescaleSlope = _ds_number(slope)
            ds.RescaleType = "US"
    mlo, mhi = min(mlo, mhi), max(mlo, mhi)
    windows = _windows(spec.window, mlo, mhi, spec.voi_lut_function)
    if windows:
        if len(windows) > 1:
            ds.WindowCenter = [_ds_number(c) for c, _ in windows]
            ds.WindowWidth = [_ds_number(w) for _, w in windows]
            ds.WindowCenterWidthExplanation = [f"WINDOW{i + 1}" for i in range(len(windows))]
        else:
            ds.WindowCenter = _ds_number(windows[0][0])
            ds.WindowWidth = _ds_number(windows[0][1])
            ds.WindowCenterWidthExplanation = "WINDOW1"
    if spec.voi_lut_function is not None:
        ds.VOILUTFunction = spec.voi_lut_function
    if spec.voi_lut:
        ds.VOILUTSequence = DicomSequence([_voi_lut_item(mlo, mhi)])
    if fmt.shape_value is not None:
        ds.PresentationLUTShape = fmt.shape_value


def _voi_lut_item(mlo: float, mhi: float) -> Dataset:
    """A VOI LUT Sequence item mapping the modality range ``mlo..mhi`` linearly to 16 bits."""
    first, last = math.floor(mlo), math.ceil(mhi)
    n = last - first + 1
    if n > 65536:
        raise ValueError("voi_lut needs a modality range of at most 65536 values")
    voi_values = np.rint(np.linspace(0.0, 65535.0, n))
    item = Dataset()
    item.add(_descriptor(n, first, voi_values))
    item.LUTExplanation = "synthetic linear VOI LUT"
    item.add(_lut_element(0x00283006, voi_values))
    return item


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _hash_int(text: str) -> int:
    """A stable non-negative integer derived from ``text`` (for synthetic IDs)."""
    return int(derive_uid(_SYNTH_ROOT, "id", text)[5:20])


def _windows(
    window: tuple[float, float] | Sequence[tuple[float, float]] | Literal["auto"] | None,
    mlo: float,
    mhi: float,
    function: str | None,
) -> list[tuple[float, float]]:
    if window is None:
        return []
    if isinstance(window, str):
        if window != "auto":
            raise ValueError(
                f"window must be 'auto', a (center, width) pair, a list of pairs or None, not {window!r}"
            )
        if function == "LINEAR_EXACT" or function == "SIGMOID":
            return [((mlo + mhi) / 2.0, mhi - mlo)]
        # LINEAR (PS3.3 C.11.2.1.2.1): the ramp runs from c - 0.5 - (w-1)/2 to c - 0.5 + (w-1)/2.
        return [((mlo + mhi) / 2.0 + 0.5, mhi - mlo + 1.0)]
    pairs: list[tuple[float, float]]
    if len(window) == 2 and all(isinstance(v, (int, float)) for v in window):
        pairs = [(float(window[0]), float(window[1]))]  # type: ignore[arg-type]
    else:
        pairs = [(float(c), float(w)) for c, w in window]  # type: ignore[misc]
    for _, w in pairs:
        if (w < 1 and function != "LINEAR_EXACT") or w <= 0:
            raise ValueError(f"window width {w} is invalid (>= 1, or > 0 for LINEAR_EXACT)")
    return pairs


def _pack(stored: np.ndarray, bits_allocated: int, bits_stored: int, junk: bool) -> bytes:
    """Little-endian pixel bytes; signed values are two's complement sign-extended to the container."""
    container = (1 << bits_allocated) - 1
    out = stored & container
    if junk and bits_stored < bits_allocated:
        out = (out & ((1 << bits_stored) - 1)) | (container & ~((1 << bits_stored) - 1))
    data = out.astype("<u2").tobytes() if bits_allocated == 16 else out.astype(np.uint8).tobytes()
    return data + (b"\x00" if len(data) % 2 else b"")


# --------------------------------------------------------------------------- encoding


def _pixel_values(ds: Dataset) -> np.ndarray:
    """The stored pixel values of an uncompressed dataset, masked to BitsStored and sign-extended."""
    ba, bs, pr = int(ds.BitsAllocated), int(ds.BitsStored), int(ds.PixelRepresentation)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.SamplesPerPixel)
    count = int(ds.Rows) * int(ds.Columns) * frames * spp
    dtype = np.dtype("<u2") if ba == 16 else np.dtype(np.uint8)
    raw = np.frombuffer(ds.PixelData, dtype=dtype, count=count).astype(np.int64)
    raw &= (1 << bs) - 1
    if pr == 1:
        raw = np.where(raw >= (1 << (bs - 1)), raw - (1 << bs), raw)
    shape: tuple[int, ...] = (int(ds.Rows), int(ds.Columns))
    if frames > 1:
        shape = (frames, *shape)
    if spp > 1:
        shape = (*shape, spp)
    return raw.reshape(shape)


def encode(
    ds: Dataset,
    transfer_syntax: str,
    *,
    jls_error: int = 2,
    j2k_ratio: float = 10.0,
    jpeg_quality: int = 90,
) -> Dataset:
    """Return a copy of an uncompressed dataset re-encoded in ``transfer_syntax``.

    Parameters
    ----------
    ds
        A dataset from :func:`make_dataset` (native pixel data).
    transfer_syntax
        One of :data:`ENCODABLE_TRANSFER_SYNTAXES`: Explicit/Implicit VR Little
        Endian, Deflated, Explicit VR Big Endian (pixel and LUT data byte-swapped),
        RLE Lossless, JPEG-LS lossless and near-lossless (pyjpegls), JPEG 2000
        lossless and lossy (pylibjpeg-openjpeg), JPEG baseline (Pillow, 8-bit
        monochrome only).
    jls_error
        NEAR parameter of JPEG-LS near-lossless.
    j2k_ratio
        Compression ratio of lossy JPEG 2000.
    jpeg_quality
        Pillow quality of baseline JPEG.

    Returns
    -------
    pydicom.dataset.Dataset
        A new dataset; lossy encodings set LossyImageCompression "01", the ratio
        and the method. The SOP Instance UID is kept (callers that need a new
        instance pass a new ``sop_uid`` to :func:`make_dataset`).

    Raises
    ------
    ValueError
        For an unknown transfer syntax, already compressed input or baseline
        JPEG of data that is not 8-bit monochrome.
    """
    tsyntax = UID(transfer_syntax)
    if tsyntax not in ENCODABLE_TRANSFER_SYNTAXES:
        raise ValueError(f"cannot encode transfer syntax {tsyntax} ({tsyntax.name})")
    current = ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)
    if UID(current).is_compressed or current == ExplicitVRBigEndian:
        raise ValueError(
            "encode() needs little-endian uncompressed pixel data; build the dataset again with make_dataset"
        )
    out = copy.deepcopy(ds)
    values = _pixel_values(ds)
    uncompressed_bytes = values.size * (int(ds.BitsAllocated) // 8)
    if tsyntax in _UNCOMPRESSED:
        out.file_meta.TransferSyntaxUID = tsyntax
        if tsyntax == ExplicitVRBigEndian:
            _swap_words(out)
        return out
    if tsyntax == JPEGBaseline8Bit:
        _encode_jpeg_baseline(out, values, jpeg_quality)
    else:
        kwargs: dict[str, Any] = {"generate_instance_uid": False}
        arr = values
        if int(ds.PixelRepresentation) == 0:
            arr = values.astype(np.uint16 if int(ds.BitsAllocated) == 16 else np.uint8)
        else:
            arr = values.astype(np.int16 if int(ds.BitsAllocated) == 16 else np.int8)
        if tsyntax == JPEGLSNearLossless:
            kwargs["jls_error"] = jls_error
        if tsyntax == JPEG2000:
            kwargs["j2k_cr"] = [j2k_ratio]
        out.compress(tsyntax, arr, **kwargs)
    if not tsyntax.is_compressed or tsyntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        return out
    compressed_bytes = len(out.PixelData)
    out.LossyImageCompression = "01"
    out.LossyImageCompressionRatio = _ds_number(round(uncompressed_bytes / max(compressed_bytes, 1), 2))
    out.LossyImageCompressionMethod = {
        JPEGLSNearLossless: "ISO_14495_1",
        JPEG2000: "ISO_15444_1",
        JPEGBaseline8Bit: "ISO_10918_1",
    }[tsyntax]
    return out


def _encode_jpeg_baseline(out: Dataset, values: np.ndarray, quality: int) -> None:
    from PIL import Image

    if (
        int(out.BitsAllocated) != 8
        or int(out.SamplesPerPixel) != 1
        or int(out.get("NumberOfFrames", 1) or 1) != 1
    ):
        raise ValueError(
            "baseline JPEG needs single-frame 8-bit monochrome data (make_dataset(bits_stored=8))"
        )
    if int(out.PixelRepresentation) != 0:
        raise ValueError("baseline JPEG needs unsigned data")
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint8), mode="L").save(
        buf, format="JPEG", quality=quality, optimize=False
    )
    out.PixelData = encapsulate([buf.getvalue()])
    out["PixelData"].VR = "OB"
    out["PixelData"].is_undefined_length = True
    out.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def _swap_words(ds: Dataset) -> None:
    """Byte-swap 16-bit PixelData and OW LUT data (little <-> big endian)."""
    if int(ds.BitsAllocated) == 16 and "PixelData" in ds:
        ds.PixelData = np.frombuffer(ds.PixelData, dtype="<u2").byteswap().tobytes()
    for keyword in ("ModalityLUTSequence", "VOILUTSequence"):
        for item in ds.get(keyword, []):
            if "LUTData" in item and item["LUTData"].VR == "OW":
                item.LUTData = np.frombuffer(item.LUTData, dtype="<u2").byteswap().tobytes()


def write(
    ds: Dataset,
    path: str | os.PathLike[str],
    *,
    with_meta: bool = True,
    preamble: bool = True,
) -> None:
    """Write a dataset to ``path``.

    Parameters
    ----------
    ds
        A dataset from :func:`make_dataset` or :func:`encode`.
    path
        Destination file (overwritten).
    with_meta
        Write the File Meta Information (Implementation Class UID and Version
        Name of this package). Without it the dataset is written bare, in the
        (uncompressed) encoding of its transfer syntax, as old systems do.
    preamble
        Write the 128-byte preamble and ``DICM`` (only with ``with_meta``;
        ``preamble=False`` gives meta information without a preamble, which
        some systems produce).

    Raises
    ------
    ValueError
        When a compressed dataset is to be written without file meta.
    """
    out = copy.copy(ds)
    meta = FileMetaDataset()
    if "file_meta" in ds.__dict__ or hasattr(ds, "file_meta"):
        meta = copy.deepcopy(ds.file_meta)
    tsyntax = UID(meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
    if with_meta:
        meta.TransferSyntaxUID = tsyntax
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        out.file_meta = meta
        if preamble:
            out.preamble = b"\x00" * 128
            atomic_write(path, lambda tmp: dcmwrite(tmp, out, enforce_file_format=True))
        else:
            out.preamble = None
            atomic_write(path, lambda tmp: dcmwrite(tmp, out, enforce_file_format=False))
        return
    if tsyntax.is_compressed or tsyntax == DeflatedExplicitVRLittleEndian:
        raise ValueError(f"a {tsyntax.name} dataset cannot be written without file meta information")
    out.file_meta = FileMetaDataset()
    out.preamble = None
    atomic_write(
        path,
        lambda tmp: dcmwrite(
            tmp,
            out,
            implicit_vr=tsyntax == ImplicitVRLittleEndian,
            little_endian=tsyntax != ExplicitVRBigEndian,
        ),
    )
