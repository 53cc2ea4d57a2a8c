"""Provenance flags: caveats recorded with a result (a header that lied, a view not stated).

Pixel flags are set by :func:`chexnet_dicom.dicom.pixels.render` when a measured sanity
check fires; gate flags by :func:`chexnet_dicom.dicom.gate.gate_header` on an accepted
image.  Both end up in the result's provenance, the JSON sidecar and ``chexdcm check``.
"""

from __future__ import annotations

__all__ = [
    "FLAG_BODY_PART_UNKNOWN",
    "FLAG_CONSTANT_IMAGE",
    "FLAG_CONTENT_INVERTED",
    "FLAG_FOR_PROCESSING",
    "FLAG_ORIENTATION_CORRECTED",
    "FLAG_ORIENTATION_NOT_APPLIED",
    "FLAG_ORIENTATION_SWAPPED",
    "FLAG_ORIENTATION_UNUSABLE",
    "FLAG_PRESENTATION_LUT_CONFLICT",
    "FLAG_SECONDARY_CAPTURE",
    "FLAG_VIEW_UNKNOWN",
    "FLAG_VOI_FUNCTION_UNKNOWN",
    "FLAG_WINDOW_INDEX_OUT_OF_RANGE",
    "FLAG_WINDOW_INVALID",
    "FLAG_WINDOW_OUTSIDE_DATA",
    "GATE_FLAGS",
    "PIXEL_FLAGS",
]

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

#: Every pixel flag.
PIXEL_FLAGS: tuple[str, ...] = (
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
#: No view evidence in the header (accepted as frontal by default).
FLAG_VIEW_UNKNOWN = "view-unknown"
#: No body-part evidence in the header.
FLAG_BODY_PART_UNKNOWN = "body-part-unknown"
#: A Secondary Capture that says it is a chest radiograph.
FLAG_SECONDARY_CAPTURE = "secondary-capture"
#: A DX image FOR PROCESSING (raw detector data, not the processed image).
FLAG_FOR_PROCESSING = "for-processing"

#: Every gate flag.
GATE_FLAGS: tuple[str, ...] = (
    FLAG_VIEW_UNKNOWN,
    FLAG_BODY_PART_UNKNOWN,
    FLAG_SECONDARY_CAPTURE,
    FLAG_FOR_PROCESSING,
)
