"""RGB Secondary Capture overlays: where the evidence for a present finding lies.

One SC per analysed image shows the present finding with the largest margin over its
operating point (optionally one per present finding); when no finding is drawn it
shows the image with a legend that says why, never an absent finding's map.  A finding
that is *unreliable at this threshold* (:mod:`chexnet_dicom.outputs.reliability`) is
listed with a "!" but not drawn unless ``draw_unreliable`` asks for it.

Geometry
    The SC is the image area followed, on the right, by a black legend panel
    (:mod:`chexnet_dicom.outputs.legend`): no legend pixel lies over the image.  Where
    the panel's text needs more rows than a small image has, the SC is taller than the
    image area and black below it.  The
    image area is the source pixel grid (same Rows x Columns, same pixel spacing, top
    left at the SC's top left) **turned head up** when the source needed an orientation
    correction (``orientation-corrected`` / ``orientation-header-swapped``): the
    display orientation operations (:attr:`DisplayImage.orientation_ops`) are applied
    to the source grid, and PatientOrientation is then ``L\\F``, true for the SC's
    pixels.  Otherwise the source's PatientOrientation is copied when it is a valid
    frontal pair, derived as ``L\\F`` for a PA/AP view used as stored, and left empty
    (type 2: unknown) when neither holds.  The PNG preview shows the same pixels.
Colour
    The finding's relative evidence map (:mod:`chexnet_dicom.results`) where it reaches
    the card's ``cam_threshold``, through the perceptual *inferno* colormap (from 0.3 of
    it) with an opacity that rises with the value; the colour key in the panel is drawn
    with the same blend over a grey ramp, so it holds exactly the image's colours.
Legend
    "RESEARCH USE ONLY", the finding drawn (or why none is), the findings ranked by
    margin (present first), what ``*`` and ``!`` mean, the colour key with ticks, and
    the model name and version.  BurnedInAnnotation YES.
Identity
    The UIDs of an overlay follow from (source image, finding drawn, weights, heatmap
    method), so a default run and a ``--sc-per-finding`` run give the same object for
    the same finding; each finding has its own series, named in its SeriesDescription.
"""

from __future__ import annotations

import logging

import numpy as np
from highdicom.sc import SCImage
from highdicom.sr import CodedConcept
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
from chexnet_dicom.dicom.flags import FLAG_ORIENTATION_NOT_APPLIED, FLAG_ORIENTATION_UNUSABLE
from chexnet_dicom.dicom.orientation import STANDARD_ORIENTATION, apply_orientation_ops, orientation_ops_for
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
    record_left_out,
    series_uid,
    software_versions,
)
from chexnet_dicom.outputs.legend import KEY_CAPTION, add_legend_panel
from chexnet_dicom.outputs.ood_items import legend_line, withheld_legend_lines, withholds
from chexnet_dicom.outputs.provenance import algorithm_equipment
from chexnet_dicom.outputs.reliability import (
    MIN_VALIDATION_POSITIVES,
    UNRELIABLE_TEXT,
    by_margin,
    unreliable_findings,
    unreliable_reason,
)
from chexnet_dicom.results import ImageResult

__all__ = [
    "HEATMAP_METHOD",
    "INFERNO_ANCHORS",
    "LEGEND_FINDINGS",
    "SC_COMPRESSIONS",
    "blend_overlay",
    "build_sc",
    "colormap",
    "head_up",
    "image_area",
    "legend_lines",
    "overlay_findings",
    "overlay_instance_number",
    "overlay_pixels",
    "overlay_slug",
    "present_findings",
    "preview_pixels",
    "sc_orientation",
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
    return _LUT[_to_uint8(_finite(np.asarray(values, dtype=np.float32)) * 255.0)]


def _finite(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN/inf replaced as :func:`numpy.nan_to_num` does; no copy when all finite."""
    return values if bool(np.isfinite(values).all()) else np.nan_to_num(values)


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
    grey = np.clip(_finite(np.asarray(display, dtype=np.float32)), 0.0, 1.0)
    grey *= 255.0
    coloured: tuple[np.ndarray, np.ndarray] | None = None
    if heatmap is not None:
        heat = np.clip(_finite(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
        if grey.shape != heat.shape:
            raise OutputError(f"display image {grey.shape} and heatmap {heat.shape} must share one grid")
        t = _graded(heat, level).ravel()
        # Only the drawn pixels are coloured: elsewhere alpha is 0 and the grey stays exact,
        # so the result is the same as blending every pixel (tests/outputs/test_blend.py).
        # Flat indices: a boolean mask indexes an (H, W, 3) array 3x slower.
        drawn = np.flatnonzero(t >= 0.0)
        t = np.clip(t[drawn], 0.0, 1.0)
        lo, hi = COLOUR_RANGE
        a_lo, a_hi = ALPHA_RANGE
        alpha = (a_lo + (a_hi - a_lo) * t)[..., None]
        mixed = grey.ravel()[drawn][..., None] * (1.0 - alpha) + colormap(lo + (hi - lo) * t) * alpha
        coloured = (drawn, _to_uint8(mixed))
    # the grey is rounded once on the (H, W) grid and broadcast to the three channels: the
    # same bytes as rounding an (H, W, 3) float copy, at a third of the memory traffic
    grey8 = _to_uint8(grey)
    rgb = np.stack([grey8, grey8, grey8], axis=-1)  # (a broadcast copy is 6x slower)
    if coloured is not None:
        rgb.reshape(-1, 3)[coloured[0]] = coloured[1]
    return rgb


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Round float values in [0, 255] to uint8 (``clip(v + 0.5, 0, 255)``, truncated); ``values`` is reused."""
    values += 0.5
    return np.clip(values, 0, 255, out=values).astype(np.uint8)


def _reliable(card: CardLike, label: str, draw_unreliable: bool) -> bool:
    return draw_unreliable or unreliable_reason(card, label) is None


def present_findings(result: ImageResult, card: CardLike, *, draw_unreliable: bool = True) -> list[str]:
    """The findings present at their operating point, largest margin over it first.

    With ``draw_unreliable=False`` the findings unreliable at their threshold are left out.
    """
    probs = np.asarray(result.prediction.probabilities, dtype=np.float64)
    return [
        label
        for label in by_margin(probs, card)
        if probs[LABELS.index(label)] >= card.threshold(label) and _reliable(card, label, draw_unreliable)
    ]


def shown_finding(
    result: ImageResult, card: CardLike, finding: str | None = None, *, draw_unreliable: bool = False
) -> str | None:
    """The finding an overlay draws: ``finding`` if present, else the present one with the largest margin.

    Returns None when the finding asked for (or, without one, every finding) is absent
    at its operating point, or unreliable at it (unless ``draw_unreliable``): an absent
    finding is never drawn as if it were present.
    """
    if finding is not None and finding not in LABELS:
        raise OutputError(f"unknown finding {finding!r}")
    present = present_findings(result, card, draw_unreliable=draw_unreliable)
    if finding is not None:
        return finding if finding in present else None
    return present[0] if present else None


#: Findings listed in the legend (the drawn one is added when it is not among them).
LEGEND_FINDINGS = 5


def legend_lines(
    result: ImageResult,
    card: CardLike,
    shown: str | None,
    *,
    flat: bool = False,
    asked: str | None = None,
) -> list[str]:
    """Text of the legend panel (ASCII only); the colour key is drawn after the ``Colour:`` line.

    Parameters
    ----------
    result, card
        The analysed image and its model card.
    shown
        The finding drawn (:func:`shown_finding`), or None.
    flat
        ``shown``'s map is flat (nothing drawn).
    asked
        The finding the overlay was asked for, when ``shown`` is None (to say why).
    """
    probs = np.asarray(result.prediction.probabilities, dtype=np.float64)
    unreliable = unreliable_findings(card)
    lines = [f"{RESEARCH_USE_ONLY} - not for diagnosis"]
    if shown is not None:
        k = LABELS.index(shown)
        state = f"probability {probs[k]:.2f}, threshold {card.threshold(shown):.2f}: present"
        lines.append(
            f"No heatmap: the {DISPLAY_NAMES[shown]} map is flat"
            if flat
            else f"Heatmap: {DISPLAY_NAMES[shown]}"
        )
        lines.append(state + (" (unreliable at this threshold)" if shown in unreliable else ""))
    else:
        reason = "no finding is present at its operating point"
        target = [asked] if asked is not None else present_findings(result, card)
        target = [t for t in target if probs[LABELS.index(t)] >= card.threshold(t)]
        if target and all(t in unreliable for t in target):
            reason = "the present findings are unreliable at this threshold"
        elif asked is not None:
            reason = f"{DISPLAY_NAMES[asked]} is absent at its operating point"
        lines.append(f"No heatmap: {reason}")
    lines.append(legend_line(result.prediction))  # the out-of-distribution score and flag
    order = by_margin(probs, card)
    listed = order[:LEGEND_FINDINGS]
    if shown is not None and shown not in listed:
        listed.append(shown)
    lines.append("Present first, by margin (p / threshold):")
    for label in listed:
        k = LABELS.index(label)
        star = "*" if probs[k] >= card.threshold(label) else " "
        bang = " !" if label in unreliable else ""
        drawn = "  [drawn]" if label == shown and not flat else ""
        lines.append(
            f"{star} {DISPLAY_NAMES[label]} {probs[k]:.2f} / {card.threshold(label):.2f}{bang}{drawn}"
        )
    if any(probs[LABELS.index(label)] >= card.threshold(label) for label in listed):
        lines.append("* present: probability >= threshold")
        lines.append(f"  (threshold: {policy_text(card.operating_points)})")
    if any(label in unreliable for label in listed):
        lines.append(
            f"! {UNRELIABLE_TEXT}: validation sensitivity 0 or < {MIN_VALIDATION_POSITIVES} positives"
        )
    if shown is not None and not flat:
        lines.append(f"{KEY_CAPTION}")
        lines.append("  (not a probability), over bright to dark")
    lines.append(f"{card.name} {card.version}")
    return [line.encode("ascii", "replace").decode("ascii") for line in lines]


def _base_and_legend(
    result: ImageResult, card: CardLike, finding: str | None, draw_unreliable: bool, ood_policy: str = "flag"
) -> tuple[np.ndarray, np.ndarray | None, list[str], bool]:
    """Grey source-grid image, the drawn map (or None), the legend lines, whether a key is drawn."""
    if not result.has_heatmaps:
        raise OutputError("an overlay needs heatmaps; run the predictor with heatmaps enabled")
    if withholds(result.prediction, ood_policy):  # findings withheld: no map, the legend says why
        grey = result.display.to_source_grid(result.display.image)
        return grey, None, withheld_legend_lines(result.prediction), False
    shown = shown_finding(result, card, finding, draw_unreliable=draw_unreliable)
    heat = result.heatmap(LABELS.index(shown)) if shown is not None else None
    flat = shown is not None and heat is None
    grey = result.display.to_source_grid(result.display.image)
    lines = legend_lines(result, card, shown, flat=flat, asked=finding)
    return grey, heat, lines, heat is not None


def head_up(rgb: np.ndarray, result: ImageResult) -> np.ndarray:
    """An (H, W, C) source-grid array turned to the display orientation (head up)."""
    ops = result.display.orientation_ops
    if not ops:
        return rgb
    return np.ascontiguousarray(
        np.stack([apply_orientation_ops(rgb[..., c], ops) for c in range(rgb.shape[-1])], axis=-1)
    )


def image_area(result: ImageResult) -> tuple[int, int]:
    """(rows, columns) of the overlay's image area (the source grid, turned head up); the panel follows."""
    rows, cols = result.display.grid_shape  # the source grid; reduced above max_grid_side
    return (cols, rows) if "transpose" in result.display.orientation_ops else (rows, cols)


def overlay_pixels(
    result: ImageResult,
    card: CardLike,
    finding: str | None = None,
    *,
    draw_unreliable: bool = False,
    ood_policy: str = "flag",
) -> np.ndarray:
    """The SC overlay: the image area (source grid, head up) and the legend panel on its right.

    Parameters
    ----------
    result
        The analysed image (its prediction must carry CAMs).
    card
        Model card (name, version, operating points, cam_threshold).
    finding
        The finding to draw (drawn only if present); None: the present one with the
        largest margin over its threshold.
    draw_unreliable
        Also draw findings unreliable at their threshold.
    ood_policy
        ``[outputs] ood``: ``"withhold"`` draws no map on an out-of-distribution image
        and its legend says why (:mod:`chexnet_dicom.outputs.ood_items`).

    Returns
    -------
    numpy.ndarray
        (rows, columns + panel, 3) uint8 RGB; ``[:rows, :columns]`` is the image area
        (:func:`image_area`), never covered by the legend.
    """
    grey, heat, lines, key = _base_and_legend(result, card, finding, draw_unreliable, ood_policy)
    rgb = head_up(blend_overlay(grey, heat, card.cam_threshold), result)
    return add_legend_panel(rgb, lines, card.cam_threshold, blend_overlay, key=key)


def preview_pixels(
    result: ImageResult, card: CardLike, finding: str | None = None, *, draw_unreliable: bool = False
) -> np.ndarray:
    """The PNG preview: the same pixels as the SC (head up, as ``chexdcm render`` shows the image)."""
    return overlay_pixels(result, card, finding, draw_unreliable=draw_unreliable)


def overlay_findings(
    result: ImageResult, card: CardLike, *, per_finding: bool = False, draw_unreliable: bool = False
) -> list[str | None]:
    """Which overlays an image gets: ``[None]`` (the present finding with the largest margin, or none).

    With ``per_finding``, one per finding present at its operating point (reliable
    ones only unless ``draw_unreliable``), in label order; when none is, the single
    overlay that says so.
    """
    if not per_finding:
        return [None]
    present = set(present_findings(result, card, draw_unreliable=draw_unreliable))
    return [label for label in LABELS if label in present] or [None]


#: Heatmap method, part of every overlay's UID (a new method gives new objects).
HEATMAP_METHOD = "relative-evidence-cam"


def overlay_slug(label: str | None) -> str:
    """File-name part naming an overlay's finding: ``pleural-thickening``, or ``none``."""
    return label.lower().replace("_", "-") if label is not None else "none"


def overlay_instance_number(image_number: int, label: str | None) -> int:
    """Instance Number of an (image, finding) overlay: ``100 * image + finding number`` (0: none).

    Fixed per (image, finding), so a repeat run, with or without per-finding overlays,
    numbers each overlay the same and no two overlays of a study share a number.
    """
    return 100 * int(image_number) + (LABELS.index(label) + 1 if label is not None else 0)


def _overlay_series(label: str | None) -> tuple[str, int, str]:
    """(series UID kind, series number, series description) of a finding's overlay series."""
    if label is None:
        return "sc", SERIES_NUMBERS["sc"], SERIES_DESCRIPTIONS["sc"]
    name = DISPLAY_NAMES[label]
    return (
        f"sc-{overlay_slug(label)}",
        SERIES_NUMBERS["sc"] + 8 + LABELS.index(label),
        f"CheXNet heatmap {name} - {RESEARCH_USE_ONLY}"[:64],
    )


def _orientation(ds: Dataset) -> tuple[str, str] | None:
    value = ds.get("PatientOrientation")
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    return (str(value[0]), str(value[1]))


def sc_orientation(result: ImageResult) -> tuple[str, str] | None:
    """PatientOrientation true for the SC's image area (see the module docstring), or None (unknown)."""
    if result.display.orientation_ops:
        return STANDARD_ORIENTATION
    source = _orientation(result.dataset)
    if source is not None and orientation_ops_for(*source) is not None:
        return source
    doubtful = {FLAG_ORIENTATION_UNUSABLE, FLAG_ORIENTATION_NOT_APPLIED} & set(result.flags)
    view = str(result.dataset.get("ViewPosition") or "").strip().upper()
    if not doubtful and source is None and view in ("PA", "AP"):
        return (
            STANDARD_ORIENTATION  # a frontal view, used as stored: head up, the patient's right on the left
        )
    return None


def _pixel_spacing(ds: Dataset, transposed: bool) -> tuple[list[float], str] | None:
    """(row, column) spacing in mm of the source and the attribute it came from, or None."""
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(kw)
        try:
            pair = [float(v) for v in value] if value is not None and not isinstance(value, str) else []
        except (TypeError, ValueError):
            continue
        if len(pair) == 2 and all(np.isfinite(v) and v > 0 for v in pair):
            return (pair[::-1] if transposed else pair), kw
    return None


def build_sc(
    result: ImageResult,
    card: CardLike,
    *,
    finding: str | None = None,
    instance_number: int | None = None,
    compression: str = "none",
    pixels: np.ndarray | None = None,
    draw_unreliable: bool = False,
    image_number: int = 1,
    ood_policy: str = "flag",
) -> SCImage:
    """Build one RGB Secondary Capture overlay for an analysed image.

    Parameters
    ----------
    result
        The analysed image (its prediction must carry CAMs).
    card
        Model card (name, version, operating points, cam_threshold, weights hash).
    finding
        Which finding's heatmap to show (drawn only if present and reliable); default
        the present finding with the largest margin, or none (the legend then says why).
    instance_number
        Instance Number; default :func:`overlay_instance_number` of ``image_number``
        and the finding drawn.
    compression
        A key of :data:`SC_COMPRESSIONS` (lossless; default uncompressed).
    pixels
        The overlay from :func:`overlay_pixels` when the caller already made it (its
        PNG preview shows the same pixels).
    draw_unreliable
        Also draw a finding unreliable at its threshold.
    image_number
        1-based number of the image in its study's analysis order.
    ood_policy
        ``[outputs] ood``: under ``"withhold"`` an out-of-distribution image's overlay
        draws no finding (its own UID: the legend differs) and says why.

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
    withheld = withholds(result.prediction, ood_policy)
    label = None if withheld else shown_finding(result, card, finding, draw_unreliable=draw_unreliable)
    rgb = (
        overlay_pixels(result, card, finding, draw_unreliable=draw_unreliable, ood_policy=ood_policy)
        if pixels is None
        else pixels
    )
    ds = result.dataset
    area = image_area(result)
    if rgb.shape[0] < area[0] or rgb.shape[1] <= area[1]:
        raise OutputError(f"overlay has shape {rgb.shape[:2]}, smaller than its image area {area} and panel")
    header = evidence_header(ds)
    orientation = sc_orientation(result)
    ops = result.display.orientation_ops
    spacing = _pixel_spacing(ds, transposed="transpose" in ops)
    study = str(ds.StudyInstanceUID)
    kind, series_number, description = _overlay_series(label)
    sop_uid = output_uid(
        "sc", card.weights_sha256, str(ds.SOPInstanceUID), overlay_slug(label), HEATMAP_METHOD,
        *(["findings-withheld"] if withheld else []),
    )  # fmt: skip
    number = overlay_instance_number(image_number, label) if instance_number is None else instance_number
    try:
        with quiet_highdicom():
            sc = SCImage.from_ref_dataset(
                ref_dataset=header,
                pixel_array=rgb,
                photometric_interpretation=photometric,
                bits_allocated=8,
                coordinate_system="PATIENT",
                series_instance_uid=series_uid(kind, study, card.weights_sha256),
                series_number=series_number,
                sop_instance_uid=sop_uid,
                instance_number=number,
                manufacturer=MANUFACTURER,
                patient_orientation=orientation or ("L", "F"),
                transfer_syntax_uid=transfer_syntax,
                contributing_equipment=[algorithm_equipment(card, description="Heatmap overlay")],
                series_description=description,
                manufacturer_model_name=str(card.name)[:64],
                software_versions=software_versions(card),
            )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise OutputError(f"highdicom rejected the overlay ({type(exc).__name__}: {redact(exc)})") from exc
    if orientation is None:
        sc["PatientOrientation"].value = None  # type 2: unknown for this source, never guessed
    # the series is dated by the analysis, as the SC content is (highdicom: now)
    sc.SeriesDate, sc.SeriesTime = sc.ContentDate, sc.ContentTime
    scale = result.display.grid_scale  # (1, 1) unless the source exceeds max_grid_side
    if spacing is not None:
        row_col = scale[::-1] if "transpose" in ops else scale
        sc.PixelSpacing = [format(v * f, ".6g") for v, f in zip(spacing[0], row_col, strict=True)]
        calibration = ds.get("PixelSpacingCalibrationType") if spacing[1] == "PixelSpacing" else None
        if calibration in ("GEOMETRY", "FIDUCIAL"):
            sc.PixelSpacingCalibrationType = calibration
    if ds.get("BodyPartExamined"):
        sc.BodyPartExamined = ds.BodyPartExamined
    if str(ds.get("BodyPartExamined") or "").strip().upper() != "CHEST" and "Laterality" not in sc:
        # Type 2C (General Series): required unless the body part is known to be unpaired
        # (CHEST); for a missing or non-standard term ("THORAX CHEST PA") it is unknown.
        sc.add_new("Laterality", "CS", None)
    sc.BurnedInAnnotation = "YES"
    what = f"{DISPLAY_NAMES[label]} heatmap" if label is not None else "no heatmap"
    what = f"{what} (findings withheld: out of distribution)" if withheld else what
    sc.ImageComments = f"{RESEARCH_USE_ONLY}: {what} of {card.name} {card.version}"[:10240]
    turned = f" turned head up ({', '.join(ops)} of the source grid)" if ops else ""
    where = f"the source pixel grid{turned} at the top left ({area[0]} x {area[1]}), a legend panel to its right (black below the image area where the panel is taller)"
    if scale != (1.0, 1.0):
        where += f" (the source grid reduced by {scale[0]:.6g} x {scale[1]:.6g}: the working-set budget)"
    measured = f"; pixel spacing from the source's {spacing[1]}" if spacing is not None else ""
    sc.DerivationDescription = (
        f"{what}: relative class activation evidence (above the image mean, over its maximum), "
        f"drawn from {card.cam_threshold:.3g} with the inferno colormap over the rendered source image; "
        f"{where}{measured}"
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
    record_left_out(sc, ds, card)  # a source value the SC could not keep is recorded, not lost
    logger.info("built SC overlay %s (%s)", phi_ref(sop_uid), label or "no finding drawn")
    return finalize_file_meta(sc)
