"""The blend that colours only the drawn pixels gives the same pixels as blending every pixel.

The reference below is the whole-image blend as it was before (``nan_to_num`` on every
array, the colour map evaluated on every pixel, alpha 0 where nothing is drawn).
"""

from __future__ import annotations

import numpy as np
import pytest

from chexnet_dicom.outputs.sc import _LUT, ALPHA_RANGE, COLOUR_RANGE, blend_overlay


def _reference(display: np.ndarray, heatmap: np.ndarray | None, level: float) -> np.ndarray:
    grey = np.clip(np.nan_to_num(np.asarray(display, dtype=np.float32)), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if heatmap is not None:
        heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
        t = (heat - float(level)) / max(1.0 - float(level), 1e-6)
        drawn = t >= 0.0
        t = np.clip(t, 0.0, 1.0)
        lo, hi = COLOUR_RANGE
        a_lo, a_hi = ALPHA_RANGE
        alpha = np.where(drawn, a_lo + (a_hi - a_lo) * t, 0.0)[..., None]
        v = np.nan_to_num((lo + (hi - lo) * t).astype(np.float32))
        cmap = _LUT[np.clip(v * 255.0 + 0.5, 0, 255).astype(np.uint8)]
        rgb = rgb * (1.0 - alpha) + cmap * alpha
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("level", [0.0, 0.3, 0.5, 0.95])
@pytest.mark.parametrize("nan", [False, True])
def test_blend_is_pixel_identical_to_the_whole_image_blend(level: float, nan: bool) -> None:
    rng = np.random.default_rng(int(level * 100) + nan)
    display = rng.random((193, 211))
    yy, xx = np.mgrid[0:193, 0:211]
    heat = np.exp(-((yy - 90.0) ** 2 + (xx - 120.0) ** 2) / 2000.0) + rng.normal(0, 0.02, (193, 211))
    if nan:
        display[5, 7] = np.nan
        heat[100, 100] = np.nan
        heat[3, 3] = np.inf
    got = blend_overlay(display, heat, level)
    want = _reference(display, heat, level)
    assert (
        int(
            (
                got
                != np.repeat(
                    (np.clip(np.nan_to_num(display), 0, 1) * 255 + 0.5).astype(np.uint8)[..., None], 3, -1
                )
            )
            .any(-1)
            .sum()
        )
        > 0
    )
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(blend_overlay(display, None, level), _reference(display, None, level))


def test_the_legend_panel_is_drawn_apart_and_joined_unchanged() -> None:
    from chexnet_dicom.outputs.legend import KEY_CAPTION, add_legend_panel

    lines = [
        "RESEARCH USE ONLY",
        "* Atelectasis 0.31 (>= 0.22)",
        f"{KEY_CAPTION} relative evidence",
        "model 1",
    ]
    rng = np.random.default_rng(3)
    a, b = (rng.integers(0, 256, (300, 280, 3), dtype=np.uint8) for _ in range(2))
    out_a = add_legend_panel(a, lines, 0.5, blend_overlay, key=True)
    out_b = add_legend_panel(b, lines, 0.5, blend_overlay, key=True)
    np.testing.assert_array_equal(out_a[:300, :280], a)
    np.testing.assert_array_equal(out_a[:, 280:], out_b[:, 280:])  # the panel depends on its lines only
    assert int((out_a[:, 280:] == 255).all(-1).sum()) > 100  # white text was drawn
