"""Parametric Map of the float heatmap: investigated and dropped (documented here).

Finding (highdicom 0.28, PS3.3 2024 tables bundled with it)

* The Parametric Map IOD (PS3.3 A.75) makes the Frame of Reference module
  **mandatory** (``iod_module_map["parametric-map"]``: ``frame-of-reference`` usage
  ``M``), and its functional groups carry Plane Position / Orientation (Patient)
  in a patient coordinate system.
* A chest radiograph (CR, DX, or Secondary Capture) is a projection image: it has no
  Frame of Reference UID, no Image Position / Orientation (Patient), and no
  patient-space geometry to copy. Providing one would be inventing geometry.
* highdicom 0.28 lets a source without a Frame of Reference through its checks only
  when the *source* IOD does not require one, then fails while building the
  dimension index of the map (``RuntimeError: Unexpected mismatch between dimension
  index values ...``) -- and the result would lack the mandatory module anyway
  (compare highdicom issue #159, SEG of 2-D mammograms without a Frame of Reference,
  where SEG allows it and PM does not).

Decision: no Parametric Map. The heatmap reaches users as the SC overlay (per finding
with ``per_finding=True``), as the SR's image regions, and as numbers in the sidecar.
``tests/outputs/test_pmap.py`` pins both facts, so a highdicom or standard change that
makes a valid map possible shows up as a failing test.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

__all__ = ["PMAP_UNAVAILABLE", "pmap_unavailable_reason"]

#: Why the optional Parametric Map output is not produced (for ``--pmap``).
PMAP_UNAVAILABLE = (
    "a DICOM Parametric Map needs a Frame of Reference and patient-space plane geometry "
    "(PS3.3 A.75, module mandatory); a projection chest radiograph has neither, so no valid map "
    "can be written without inventing geometry. The heatmap is in the SC overlay, the SR image "
    "regions and the JSON sidecar instead."
)


def pmap_unavailable_reason(ds: Dataset) -> str:
    """Return why no Parametric Map is written for ``ds``.

    Parameters
    ----------
    ds
        The analysed source instance.

    Returns
    -------
    str
        :data:`PMAP_UNAVAILABLE` prefixed with what the source lacks (every projection
        radiograph lacks a Frame of Reference UID and plane geometry); for a source that
        has them, a note that this package does not write maps.
    """
    missing = [
        kw
        for kw in ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient")
        if not ds.get(kw)
    ]
    if missing:
        return f"source lacks {', '.join(missing)}: {PMAP_UNAVAILABLE}"
    return (
        "the source has patient geometry, but chexnet-dicom writes no Parametric Map (chest radiographs only)"
    )
