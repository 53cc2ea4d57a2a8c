"""RGB Secondary Capture overlays: where the evidence for a present finding lies.

One SC per analysed image shows the most probable finding that is present at its
operating point (optionally one per present finding); when no finding is present it
shows the image with a legend that says so, never an absent finding's map.

* grey base: the [0, 1] display image (VOI and MONOCHROME1 already applied by
  :mod:`chexnet_dicom.dicom.pixels`), mapped to the **source pixel grid**: the SC keeps
  the source's Rows x Columns and PatientOrientation, so it registers with the source
  it references (SourceImageSequence) in a viewer, pixel for pixel;
* colour: the finding's relative evidence map (:mod:`chexnet_dicom.results`: its class
  activation above the image mean, divided by its maximum) where it reaches the card's
  ``cam_threshold``, through the perceptual *inferno* colormap (from 0.3 of it, so the
  weakest drawn colour is still visible) with an opacity that rises with the value: the
  colour follows the value and never saturates into one flat colour;
* burned-in legend (Pillow's default font, top left): "RESEARCH USE ONLY", the finding
  drawn (or why nothing is), the top three findings with probabilities, what ``*``
  means (present at its operating point, and the policy that chose it), a colour bar
  with what the colours mean, and the model name and version. BurnedInAnnotation YES.

The PNG previews (:func:`preview_pixels`) show the same overlay turned head up, as
``chexdcm render`` shows the image, with the legend drawn upright.
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
from chexnet_dicom.dicom.orientation import apply_orientation_ops
from chexnet_dicom.errors import ConfigError, OutputError
from chexnet_dicom.logs import phi_ref, redact
from chexnet_dicom.model.card import policy_text
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
    "present_findings",
    "preview_pixels",
    "shown_finding",
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


#: Where in the colormap the drawn values start (the low end of inferno is near black,
#: which would vanish on a dark radiograph) and end.
COLOUR_RANGE = (0.3, 1.0)
#: Opacity of the colour at the drawing level and at the strongest location.
ALPHA_RANGE = (0.35, 0.65)


def _graded(heat: np.ndarray, level: float) -> np.ndarray:
    """0 at ``level``, 1 at the strongest location; negative below ``level``."""
    return (heat - float(level)) / max(1.0 - float(level), 1e-6)


def blend_overlay(display: np.ndarray, heatmap: np.ndarray | None, level: float) -> np.ndarray:
    """Blend a relative-evidence heatmap over a grey image.

    Pixels below ``level`` stay grey; from ``level`` to 1 the colour runs through the
    :data:`COLOUR_RANGE` of inferno and the opacity through :data:`ALPHA_RANGE`, so the
    colour follows the value and never saturates into one flat colour.

    Parameters
    ----------
    display
        (H, W) grey image in [0, 1] (bright = dense).
    heatmap
        (H, W) relative evidence in [0, 1] (:meth:`ImageResult.heatmap`), or None
        (nothing is drawn).
    level
        The card's ``cam_threshold``: where drawing starts.

    Returns
    -------
    numpy.ndarray
        (H, W, 3) uint8 RGB.
    """
    grey = np.clip(np.nan_to_num(np.asarray(display, dtype=np.float32)), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if heatmap is not None:
        heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
        if grey.shape != heat.shape:
            raise OutputError(f"display image {grey.shape} and heatmap {heat.shape} must share one grid")
        t = _graded(heat, level)
        drawn = t >= 0.0
        t = np.clip(t, 0.0, 1.0)
        lo, hi = COLOUR_RANGE
        a_lo, a_hi = ALPHA_RANGE
        alpha = np.where(drawn, a_lo + (a_hi - a_lo) * t, 0.0)[..., None]
        rgb = rgb * (1.0 - alpha) + colormap(lo + (hi - lo) * t) * alpha
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def present_findings(result: ImageResult, card: CardLike) -> list[str]:
    """The findings present at their operating point, highest probability first."""
    probs = np.asarray(result.prediction.probabilities, dtype=np.float64)
    present = [k for k, label in enumerate(LABELS) if probs[k] >= card.threshold(label)]
    return [LABELS[k] for k in sorted(present, key=lambda k: -probs[k])]


def shown_finding(result: ImageResult, card: CardLike, finding: str | None = None) -> str | None:
    """The finding an overlay draws: ``finding`` if present, else the most probable present one.

    Returns None when the finding asked for (or, without one, every finding) is absent
    at its operating point: an absent finding is never drawn as if it were present.
    """
    present = present_findings(result, card)
    if finding is not None:
        if finding not in LABELS:
            raise OutputError(f"unknown finding {finding!r}")
        return finding if finding in present else None
    return present[0] if present else None


def legend_lines(result: ImageResult, card: CardLike, shown: str | None, *, flat: bool = False) -> list[str]:
    """Text burned into the overlay (ASCII only); the colour bar is drawn below its last lines."""
    probs = np.asarray(result.prediction.probabilities, dtype=np.float64)
    order = np.argsort(-probs, kind="stable")[:3]
    lines = [f"{RESEARCH_USE_ONLY} - not for diagnosis"]
    if shown is None:
        lines.append("No heatmap: no finding is present at its operating point")
    else:
        k = LABELS.index(shown)
        what = f"{DISPLAY_NAMES[shown]} {probs[k]:.2f} (present: >= {card.threshold(shown):.2f})"
        lines.append(f"No heatmap: the {what} map is flat" if flat else f"Heatmap: {what}")
    for rank, i in enumerate(order, start=1):
        mark = " *" if probs[i] >= card.threshold(LABELS[i]) else ""
        lines.append(f"{rank}. {DISPLAY_NAMES[LABELS[i]]} {probs[i]:.2f}{mark}")
    lines.append("* present at its operating point, chosen by")
    lines.append(f"  {policy_text(card.operating_points)}"[:72])
    if shown is not None and not flat:
        lines.append(
            f"colour: share of the map's peak evidence, {card.cam_threshold:.1f} to 1 (not a probability)"
        )
    lines.append(f"{card.name} {card.version}"[:60])
    return [line.encode("ascii", "replace").decode("ascii") for line in lines]


def _draw_legend(rgb: np.ndarray, lines: Sequence[str], level: float, *, colour_bar: bool) -> np.ndarray:
    """Burn the legend box (and the colour bar, after the line that explains it) into ``rgb``."""
    img = Image.fromarray(rgb, mode="RGB")
    rows, cols = rgb.shape[:2]
    size = max(8, round(min(rows, cols) / 45))
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(img)
    pad = max(2, size // 3)
    widths = [draw.textlength(line, font=font) for line in lines]
    box_w = min(int(max(widths)) + 2 * pad, cols - 1)
    bar_h = size if colour_bar else 0
    box_h = min(len(lines) * (size + pad) + pad + (bar_h + pad if colour_bar else 0), rows - 1)
    draw.rectangle((0, 0, box_w, box_h), fill=(0, 0, 0))
    y = pad
    for line in lines:
        draw.text((pad, y), line, fill=(255, 255, 255), font=font)
        y += size + pad
        if colour_bar and line.startswith("colour:"):
            bar_w = max(8, box_w - 2 * pad)
            values = level + (1.0 - level) * np.linspace(0.0, 1.0, bar_w)
            # the bar shows the colours at full strength (the overlay blends them over grey)
            strip = colormap(COLOUR_RANGE[0] + (COLOUR_RANGE[1] - COLOUR_RANGE[0]) * _graded(values, level))
            bar = np.repeat(np.clip(strip + 0.5, 0, 255).astype(np.uint8)[None], bar_h, axis=0)
            img.paste(Image.fromarray(bar, mode="RGB"), (pad, y))
            y += bar_h + pad
    return np.asarray(img, dtype=np.uint8)


def _base_and_legend(
    result: ImageResult, card: CardLike, finding: str | None
) -> tuple[np.ndarray, np.ndarray | None, list[str], bool]:
    """Grey source-grid image, the drawn map (or None), the legend lines, whether a bar is drawn."""
    if not result.has_heatmaps:
        raise OutputError("an overlay needs heatmaps; run the predictor with heatmaps enabled")
    shown = shown_finding(result, card, finding)
    heat = result.heatmap(LABELS.index(shown)) if shown is not None else None
    flat = shown is not None and heat is None
    grey = result.display.to_source_grid(result.display.image)
    return grey, heat, legend_lines(result, card, shown, flat=flat), heat is not None


def overlay_pixels(result: ImageResult, card: CardLike, finding: str | None = None) -> np.ndarray:
    """The SC overlay on the source pixel grid (so it registers with the source), legend burned in.

    Parameters
    ----------
    result
        The analysed image (its prediction must carry CAMs).
    card
        Model card (name, version, operating points, cam_threshold).
    finding
        The finding to draw (drawn only if present); None: the most probable present one.

    Returns
    -------
    numpy.ndarray
        (Rows, Columns, 3) uint8 RGB.
    """
    grey, heat, lines, bar = _base_and_legend(result, card, finding)
    rgb = blend_overlay(grey, heat, card.cam_threshold)
    return _draw_legend(rgb, lines, card.cam_threshold, colour_bar=bar)


def preview_pixels(result: ImageResult, card: CardLike, finding: str | None = None) -> np.ndarray:
    """The same overlay head up, as ``chexdcm render`` shows the image (the PNG preview).

    The overlay is turned to the display orientation before the legend is drawn, so
    the text reads upright whatever the source's PatientOrientation.
    """
    grey, heat, lines, bar = _base_and_legend(result, card, finding)
    rgb = blend_overlay(grey, heat, card.cam_threshold)
    ops = result.display.orientation_ops
    if ops:
        rgb = np.ascontiguousarray(
            np.stack([apply_orientation_ops(rgb[..., c], ops) for c in range(3)], axis=-1)
        )
    return _draw_legend(rgb, lines, card.cam_threshold, colour_bar=bar)


def overlay_findings(result: ImageResult, card: CardLike, *, per_finding: bool = False) -> list[str | None]:
    """Which overlays an image gets: ``[None]`` (the most probable present finding, or none).

    With ``per_finding``, one per finding present at its operating point, in label
    order; when none is present, the single overlay that says so.
    """
    if not per_finding:
        return [None]
    present = set(present_findings(result, card))
    return [label for label in LABELS if label in present] or [None]


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
        Which finding's heatmap to show (drawn only if present); default the most
        probable present finding, or none (the legend then says so).
    instance_number
        Instance Number in the overlay series.
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
    label = shown_finding(result, card, finding)
    rgb = overlay_pixels(result, card, finding) if pixels is None else pixels
    ds = result.dataset
    if rgb.shape[:2] != (int(ds.Rows), int(ds.Columns)):
        raise OutputError(
            f"overlay has shape {rgb.shape[:2]}, the source grid is {(int(ds.Rows), int(ds.Columns))}"
        )
    header = evidence_header(ds)

    orientation = _orientation(ds)
    study = str(ds.StudyInstanceUID)
    sop_uid = output_uid(
        "sc", card.weights_sha256, str(ds.SOPInstanceUID), finding if finding is not None else "top"
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
    what = f"{DISPLAY_NAMES[label]} heatmap" if label is not None else "no heatmap (no finding present)"
    sc.ImageComments = f"{RESEARCH_USE_ONLY}: {what} of {card.name} {card.version}"[:10240]
    sc.DerivationDescription = (
        f"{what}: relative class activation evidence (above the image mean, over its maximum), "
        f"drawn from {card.cam_threshold:.3g} with the inferno colormap over the rendered source image, "
        "on the source pixel grid; legend and colour bar burned in"
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
    logger.info("built SC overlay %s (%s)", phi_ref(sop_uid), label or "no finding present")
    return finalize_file_meta(sc)
