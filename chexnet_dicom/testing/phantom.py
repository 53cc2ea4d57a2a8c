"""The synthetic chest phantom: a deterministic frontal or lateral radiograph as a float image.

:func:`chest_phantom` draws a frontal (PA/AP) or lateral chest radiograph as a float
image in [0, 1] (bright = dense, standard display orientation: head up, patient's right
on the image left), deterministic from a seed, any size, with an optional
:class:`Lesion`.  Nothing here comes from a patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Lesion", "chest_phantom"]


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
