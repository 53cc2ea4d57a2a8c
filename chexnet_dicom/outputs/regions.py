"""The image regions of a present finding: its strongest evidence, and all of it.

:func:`heatmap_region` outlines the largest 8-connected area where a relative evidence
map reaches the card's ``cam_threshold``; :func:`evidence_regions` also gives the
rectangle around every pixel that reaches it (the whole area the overlay colours, in
the bounding-box form of localisation ground truth such as NIH ChestX-ray14's
``BBox_List_2017.csv``). The SR puts each in a POLYLINE SCOORD of its own TID 1410 group.

Bounded work
    Labelling runs on the bounding box of the thresholded mask, and the contour, the
    costly step, only on the bounding box of its largest component (plus a one-pixel
    margin): the polygon is the same as on the whole map, at a fraction of the cost.
Source coordinates
    A map on a reduced output grid (a :class:`~chexnet_dicom.dicom.pixels.GridMap`, the
    heatmap of a source above ``max_grid_side``; or any map with ``source_shape``
    given) is outlined at its own size and its coordinates are scaled back to the
    source's pixel grid: grid pixel ``(r, c)`` covers source rows ``[r * sy, (r + 1) *
    sy)`` and columns ``[c * sx, (c + 1) * sx)``, with ``(sy, sx)`` the ratio of the
    shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from skimage import measure

from chexnet_dicom.errors import OutputError

__all__ = ["EvidenceRegions", "evidence_regions", "heatmap_region"]


class EvidenceRegions(NamedTuple):
    """The two regions of a finding's map, (N, 2) float32 (column, row) closed polylines.

    Attributes
    ----------
    outline
        The outline of the largest 8-connected area at or above the threshold
        (:func:`heatmap_region`).
    box
        The rectangle (5 points, corners clockwise from the top left) around every pixel
        at or above the threshold, on pixel edges.
    """

    outline: np.ndarray
    box: np.ndarray


def heatmap_region(
    heatmap: np.ndarray, threshold: float, *, source_shape: tuple[int, int] | None = None
) -> np.ndarray | None:
    """Return a closed polygon around the largest high region of a heatmap.

    Parameters
    ----------
    heatmap
        (rows, columns) relative evidence map in [0, 1] on the source pixel grid, or on
        the reduced output grid of a large source.
    threshold
        Level (``card.cam_threshold``) at or above which a pixel belongs to the region.
    source_shape
        (Rows, Columns) of the source image the coordinates refer to; None: the map's
        own ``source_shape`` (a :class:`~chexnet_dicom.dicom.pixels.GridMap`), else the
        map's shape.

    Returns
    -------
    numpy.ndarray or None
        (N, 2) float32 (column, row) DICOM image coordinates of the source (origin at the
        top left corner of the top left pixel) of the outline of the largest
        8-connected component, first point repeated at the end; None when no pixel
        reaches the threshold.
    """
    found = evidence_regions(heatmap, threshold, source_shape=source_shape)
    return None if found is None else found.outline


def evidence_regions(
    heatmap: np.ndarray, threshold: float, *, source_shape: tuple[int, int] | None = None
) -> EvidenceRegions | None:
    """Return the outline of the largest high area of a heatmap and the box around all of them.

    Parameters
    ----------
    heatmap, threshold, source_shape
        As for :func:`heatmap_region`.

    Returns
    -------
    EvidenceRegions or None
        Both regions in the source's DICOM image coordinates; None when no pixel reaches
        the threshold.
    """
    if source_shape is None:
        source_shape = getattr(heatmap, "source_shape", None)
    h = np.asarray(heatmap, dtype=np.float32)
    if h.ndim != 2:
        raise OutputError(f"a heatmap must be 2-D, got shape {h.shape}")
    mask = h >= float(threshold)  # NaN compares False: a NaN pixel is below any threshold > 0
    if float(threshold) <= 0.0:
        mask |= np.isnan(h)  # as NaN read as 0 (numpy.nan_to_num) would
    rows_any = np.flatnonzero(mask.any(axis=1))
    if not len(rows_any):
        return None
    # label on the bounding box of the mask: every component lies inside it, and the
    # raster order (so the labels and the first largest component) is the same
    mr0, mr1 = int(rows_any[0]), int(rows_any[-1]) + 1
    cols_any = np.flatnonzero(mask[mr0:mr1].any(axis=0))
    mc0, mc1 = int(cols_any[0]), int(cols_any[-1]) + 1
    box = np.array([[mc0, mr0], [mc1, mr0], [mc1, mr1], [mc0, mr1], [mc0, mr0]], dtype=np.float64)
    labels = measure.label(mask[mr0:mr1, mc0:mc1], connectivity=2)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = int(np.argmax(sizes))
    rows_any = np.flatnonzero(np.any(labels == keep, axis=1))
    r0, r1 = int(rows_any[0]), int(rows_any[-1]) + 1
    band = labels[r0:r1] == keep
    cols_any = np.flatnonzero(np.any(band, axis=0))
    c0, c1 = int(cols_any[0]), int(cols_any[-1]) + 1
    largest = band[:, c0:c1]
    r0, c0 = r0 + mr0, c0 + mc0  # back to the map's indices
    padded = np.pad(largest, 1).astype(np.float32)
    contours = measure.find_contours(padded, 0.5)
    # undo the padding and the crop: (row, col) indices of the map.  The simplification
    # runs on these absolute coordinates: its distance ties (edges at exactly the
    # tolerance) then round as they did on the whole map, so the polygon is the same.
    outline = max(contours, key=len) - 1.0 + np.array([r0, c0], dtype=np.float64)
    tolerance = max(0.5, 0.002 * max(h.shape))
    outline = measure.approximate_polygon(outline, tolerance=tolerance)
    # Pixel (r, c) covers [c, c+1) x [r, r+1) in DICOM image coordinates; the contour at
    # level 0.5 runs half-way between pixel centres, i.e. on the pixel edges.
    coords = np.stack([outline[:, 1] + 0.5, outline[:, 0] + 0.5], axis=1)
    coords = np.clip(coords, 0.0, [h.shape[1], h.shape[0]])
    if len(coords) < 4 or not np.array_equal(coords[0], coords[-1]):
        coords = np.vstack([coords, coords[:1]])
    if len(coords) < 4:  # a single pixel: outline its square
        r, c = np.argwhere(largest)[0]
        r, c = r + r0, c + c0
        coords = np.array([[c, r], [c + 1, r], [c + 1, r + 1], [c, r + 1], [c, r]], dtype=np.float32)
    if source_shape is not None and tuple(source_shape) != h.shape:
        sy, sx = source_shape[0] / h.shape[0], source_shape[1] / h.shape[1]
        coords = np.clip(coords * np.array([sx, sy]), 0.0, [source_shape[1], source_shape[0]])
        box = box * np.array([sx, sy])
    return EvidenceRegions(outline=coords.astype(np.float32), box=box.astype(np.float32))
