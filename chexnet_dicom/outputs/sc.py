"""RGB Secondary Capture overlays: a finding's heatmap blended over the source image.

One SC per analysed image shows the highest-scoring finding (optionally one per
positive finding). The overlay lies on the source pixel grid, so it lines up with the
source instance it references (SourceImageSequence) and keeps its PatientOrientation:

* grey base: the [0, 1] display image (VOI and MONOCHROME1 already applied by
  :mod:`chexnet_dicom.dicom.pixels`), mapped to the source grid;
* colour: the heatmap (fixed model scale, never min-max normalised per image) through
  the perceptual *inferno* colormap (17 anchors of matplotlib's table, linear in
  between: within 7/255 of it);
* opacity: 0 below half the card's ``cam_threshold``, rising linearly to
  ``max_alpha`` at ``cam_threshold``: only the high part of the map is coloured;
* burned-in legend (Pillow's default font, top left): "RESEARCH USE ONLY", the
  finding shown, the top three findings with probabilities (``*`` = present at the
  operating point) and the model name and version. BurnedInAnnotation is YES.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from highdicom.sc import SCImage
from highdicom.sr import CodedConcept
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from chexnet_dicom.config import SC_COMPRESSION_NAMES
from chexnet_dicom.errors import ConfigError, OutputError
from chexnet_dicom.logs import phi_ref, redact
from chexnet_dicom.model.labels import DISPLAY_NAMES, LABELS
from chexnet_dicom.outputs.header import evidence_header, quiet_highdicom, sanitize_copied
from chexnet_dicom.outputs.identity import (
    MANUFACTURER,
    RESEARCH_USE_ONLY,
    SERIES_DESCRIPTIONS,
    SERIES_NUMBERS,
    CardLike,
    finalize_file_meta,
    output_uid,
    series_uid,
    software_versions,
)
from chexnet_dicom.outputs.provenance import algorithm_equipment
from chexnet_dicom.results import ImageResult

__all__ = [
    "INFERNO_ANCHORS",
    "SC_COMPRESSIONS",
    "blend_overlay",
    "build_sc",
    "colormap",
    "legend_lines",
    "overlay_findings",
    "overlay_pixels",
]

logger = logging.getLogger(__name__)

#: Overlay pixel encodings (``chexdcm infer --sc-compression``): name -> (transfer syntax,
#: photometric interpretation).  All are lossless, so the burned-in legend stays exact;
#: "none" (uncompressed, the default) is accepted by every PACS, JPEG 2000 lossless stores
#: the overlay in a fraction of the space (``tests/outputs/test_sc.py`` measures it).
SC_COMPRESSIONS: dict[str, tuple[UID, str]] = {
    "none": (ExplicitVRLittleEndian, "RGB"),
    "jpeg2000": (JPEG2000Lossless, "YBR_RCT"),
    "jpegls": (JPEGLSLossless, "RGB"),
    "rle": (RLELossless, "RGB"),
}
assert tuple(SC_COMPRESSIONS) == SC_COMPRESSION_NAMES  # the config validates against the names

#: matplotlib's "inferno" at 0, 1/16, ..., 1 (8-bit RGB).
INFERNO_ANCHORS = np.array(
    [
        (0, 0, 4), (11, 7, 36), (33, 12, 74), (61, 9, 101), (87, 16, 110), (113, 25, 110),
        (138, 34, 106), (163, 44, 97), (188, 55, 84), (210, 70, 68), (228, 90, 49), (241, 115, 29),
        (249, 142, 9), (252, 172, 17), (249, 203, 53), (242, 234, 105), (252, 255, 164),
    ],
    dtype=np.float32,
)  # fmt: skip

_LUT = np.stack(
    [
        np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(INFERNO_ANCHORS)), INFERNO_ANCHORS[:, c])
        for c in range(3)
    ],
    axis=1,
).astype(np.float32)

_LOSSY_SYNTAXES = {JPEGBaseline8Bit, JPEGExtended12Bit, JPEG2000, JPEGLSNearLossless}


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to inferno RGB (float32 in [0, 255], shape ``values.shape + (3,)``)."""
    idx = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return _LUT[idx]


def blend_overlay(
    display: np.ndarray, heatmap: np.ndarray, cam_threshold: float, *, max_alpha: float = 0.6
) -> np.ndarray:
    """Blend a heatmap over a grey image.

    Parameters
    ----------
    display
        (H, W) grey image in [0, 1] (bright = dense).
    heatmap
        (H, W) heatmap in [0, 1] on the model's fixed scale.
    cam_threshold
        Level at which the colour reaches full opacity; transparent below half of it.
    max_alpha
        Opacity of the colour where the map is high.

    Returns
    -------
    numpy.ndarray
        (H, W, 3) uint8 RGB.
    """
    grey = np.clip(np.nan_to_num(np.asarray(display, dtype=np.float32)), 0.0, 1.0) * 255.0
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if grey.shape != heat.shape:
        raise OutputError(f"display image {grey.shape} and heatmap {heat.shape} must share the source grid")
    lo = 0.5 * float(cam_threshold)
    hi = max(float(cam_threshold), lo + 1e-6)
    alpha = (np.clip((heat - lo) / (hi - lo), 0.0, 1.0) * float(max_alpha))[..., None]
    rgb = grey[..., None] * (1.0 - alpha) + colormap(heat) * alpha
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def legend_lines(result: ImageResult, card: CardLike, finding: str) -> list[str]:
    """Text burned into the overlay (ASCII only)."""
    probs = np.asarray(result.prediction.probabilities, dtype=np.float64)
    order = np.argsort(-probs, kind="stable")[:3]
    k = LABELS.index(finding)
    lines = [f"{RESEARCH_USE_ONLY} - not for diagnosis", f"Heatmap: {DISPLAY_NAMES[finding]} {probs[k]:.2f}"]
    for rank, i in enumerate(order, start=1):
        mark = " *" if probs[i] >= card.threshold(LABELS[i]) else ""
        lines.append(f"{rank}. {DISPLAY_NAMES[LABELS[i]]} {probs[i]:.2f}{mark}")
    lines.append(f"{card.name} {card.version}"[:60])
    return [line.encode("ascii", "replace").decode("ascii") for line in lines]


def _draw_legend(rgb: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    img = Image.fromarray(rgb, mode="RGB")
    rows, cols = rgb.shape[:2]
    size = max(8, round(min(rows, cols) / 45))
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(img)
    pad = max(2, size // 3)
    widths = [draw.textlength(line, font=font) for line in lines]
    box_w = int(max(widths)) + 2 * pad
    box_h = len(lines) * (size + pad) + pad
    draw.rectangle((0, 0, min(box_w, cols - 1), min(box_h, rows - 1)), fill=(0, 0, 0))
    for n, line in enumerate(lines):
        draw.text((pad, pad + n * (size + pad)), line, fill=(255, 255, 255), font=font)
    return np.asarray(img, dtype=np.uint8)


def overlay_pixels(result: ImageResult, card: CardLike, label: str, *, max_alpha: float = 0.6) -> np.ndarray:
    """The overlay of ``label``'s heatmap on the source grid, legend burned in.

    Parameters
    ----------
    result
        The analysed image (its prediction must carry CAMs).
    card
        Model card (name, version, operating points, cam_threshold).
    label
        The finding whose heatmap is shown.
    max_alpha
        Opacity of the colour where the heatmap is high.

    Returns
    -------
    numpy.ndarray
        (Rows, Columns, 3) uint8 RGB.
    """
    if label not in LABELS:
        raise OutputError(f"unknown finding {label!r}")
    if not result.has_heatmaps:
        raise OutputError("an overlay needs heatmaps; run the predictor with heatmaps enabled")
    grey = result.display.to_source_grid(result.display.image)
    rgb = blend_overlay(grey, result.heatmap(LABELS.index(label)), card.cam_threshold, max_alpha=max_alpha)
    return _draw_legend(rgb, legend_lines(result, card, label))


def overlay_findings(result: ImageResult, card: CardLike, *, per_finding: bool = False) -> list[str | None]:
    """Which overlays an image gets: ``[None]`` (the top finding) or each positive finding.

    With ``per_finding``, one per finding present at its operating point, in label
    order; when none is present, the single top-finding overlay.
    """
    if not per_finding:
        return [None]
    positives = [
        label
        for label, p in zip(LABELS, result.prediction.probabilities, strict=True)
        if float(p) >= card.threshold(label)
    ]
    return list(positives) or [None]


def _orientation(ds: Dataset) -> tuple[str, str] | None:
    value = ds.get("PatientOrientation")
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    return (str(value[0]), str(value[1]))


def build_sc(
    result: ImageResult,
    card: CardLike,
    *,
    finding: str | None = None,
    instance_number: int = 1,
    max_alpha: float = 0.6,
    compression: str = "none",
    pixels: np.ndarray | None = None,
) -> SCImage:
    """Build one RGB Secondary Capture overlay for an analysed image.

    Parameters
    ----------
    result
        The analysed image (its prediction must carry CAMs).
    card
        Model card (name, version, operating points, cam_threshold, weights hash).
    finding
        Which heatmap to show; default the highest-scoring finding.
    instance_number
        Instance Number in the overlay series.
    max_alpha
        Opacity of the colour where the heatmap is high.
    compression
        A key of :data:`SC_COMPRESSIONS` (lossless; default uncompressed).
    pixels
        The overlay from :func:`overlay_pixels` when the caller already made it (its
        PNG preview shows the same pixels).

    Returns
    -------
    highdicom.sc.SCImage
        With BurnedInAnnotation YES and the source in SourceImageSequence.

    Raises
    ------
    ConfigError
        Unknown ``compression``.
    OutputError
        Without heatmaps, with mismatched grids or when highdicom rejects the image.
    """
    if compression not in SC_COMPRESSIONS:
        raise ConfigError(f"SC compression must be one of {', '.join(SC_COMPRESSIONS)}, not {compression!r}")
    transfer_syntax, photometric = SC_COMPRESSIONS[compression]
    probs = np.asarray(result.prediction.probabilities, dtype=np.float64)
    label = finding if finding is not None else LABELS[int(np.argmax(probs))]
    rgb = overlay_pixels(result, card, label, max_alpha=max_alpha) if pixels is None else pixels
    ds = result.dataset
    if rgb.shape[:2] != (int(ds.Rows), int(ds.Columns)):
        raise OutputError(
            f"overlay has shape {rgb.shape[:2]}, the source grid is {(int(ds.Rows), int(ds.Columns))}"
        )
    header = evidence_header(ds)

    orientation = _orientation(ds)
    study = str(ds.StudyInstanceUID)
    sop_uid = output_uid(
        "sc", card.weights_sha256, str(ds.SOPInstanceUID), label if finding is not None else "top"
    )
    try:
        with quiet_highdicom():
            sc = SCImage.from_ref_dataset(
                ref_dataset=header,
                pixel_array=rgb,
                photometric_interpretation=photometric,
                bits_allocated=8,
                coordinate_system="PATIENT",
                series_instance_uid=series_uid("sc", study, card.weights_sha256),
                series_number=SERIES_NUMBERS["sc"],
                sop_instance_uid=sop_uid,
                instance_number=instance_number,
                manufacturer=MANUFACTURER,
                patient_orientation=orientation or ("L", "F"),
                transfer_syntax_uid=transfer_syntax,
                contributing_equipment=[algorithm_equipment(card, description="Heatmap overlay")],
                series_description=SERIES_DESCRIPTIONS["sc"],
                manufacturer_model_name=str(card.name)[:64],
                software_versions=software_versions(card),
            )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise OutputError(f"highdicom rejected the overlay ({type(exc).__name__}: {redact(exc)})") from exc
    if orientation is None:
        sc["PatientOrientation"].value = None  # type 2: unknown for this source, never guessed
    if ds.get("BodyPartExamined"):
        sc.BodyPartExamined = ds.BodyPartExamined
    if str(ds.get("BodyPartExamined") or "").strip().upper() != "CHEST" and "Laterality" not in sc:
        # Type 2C (General Series): required unless the body part is known to be unpaired
        # (CHEST); for a missing or non-standard term ("THORAX CHEST PA") it is unknown.
        sc.add_new("Laterality", "CS", None)
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = f"{RESEARCH_USE_ONLY}: {DISPLAY_NAMES[label]} heatmap of {card.name} {card.version}"[
        :10240
    ]
    sc.DerivationDescription = (
        f"{DISPLAY_NAMES[label]} class activation map (fixed model scale, inferno colormap, opaque from "
        f"{card.cam_threshold:.3g}) blended over the rendered source image; legend burned in"
    )[:1024]
    sc.DerivationCodeSequence = [CodedConcept.from_code(codes.DCM.ImageProcessing)]
    source_item = Dataset()
    source_item.ReferencedSOPClassUID = ds.SOPClassUID
    source_item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    source_item.PurposeOfReferenceCodeSequence = [
        CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    ]
    sc.SourceImageSequence = [source_item]
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if str(ds.get("LossyImageCompression", "")) == "01" or syntax in _LOSSY_SYNTAXES:
        sc.LossyImageCompression = "01"  # derived from lossy-compressed pixels
    sanitize_copied(sc)
    logger.info("built SC overlay %s (%s)", phi_ref(sop_uid), label)
    return finalize_file_meta(sc)
