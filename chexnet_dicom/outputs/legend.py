"""The overlay's legend: what it says (:func:`legend_lines`) and the side panel that shows it.

The legend never lies over the image: :func:`add_legend_panel` puts it in a black panel
added to the right of the image, so every pixel of the image area is the blended
overlay and no body pixel is covered by text.  The panel is as tall as the image; its
text is sized from the image height (:func:`font_size`: at least :data:`MIN_FONT_SIZE`
px, about 1/45 of the height), so it is as legible on a 440 px image as on a 2000 px one.

Viewers draw their own annotations in the image's corners (Orthanc's Web Viewer: patient
ID, name and series description top right, the zoom bottom right, in screen pixels).  The
panel's text therefore starts below a top margin of :data:`VIEWER_TOP_MARGIN` and ends
above a bottom margin of :data:`VIEWER_BOTTOM_MARGIN` of the panel's height (the panel
grows taller when the text needs it): with the SC fitted to a window at least 500 px
high, three annotation lines of about 15 px each stay inside the empty top band.

The colour key (:func:`colour_key`) is drawn with the overlay's own blend: its columns
run through the drawn evidence values (ticks at the drawing level, half way and 1), its
rows over the image's grey from bright (top) to dark (bottom), so the key holds exactly
the colours that can appear on the image, no other.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "KEY_CAPTION",
    "MIN_FONT_SIZE",
    "VIEWER_BOTTOM_MARGIN",
    "VIEWER_TOP_MARGIN",
    "add_legend_panel",
    "colour_key",
    "font_size",
    "legend_font",
    "panel_width",
]

#: Smallest font size (px) of the legend text.
MIN_FONT_SIZE = 18
#: The legend line after which the colour key is drawn.
KEY_CAPTION = "Colour: share of the map's peak evidence"
#: Share of the panel's height left empty at its top, under a viewer's corner annotations
#: (Orthanc Web Viewer: 3 lines, about 75 screen px; 15% of a window 500 px high).
VIEWER_TOP_MARGIN = 0.15
#: Share left empty at its bottom (the viewer's zoom / window readout, one line).
VIEWER_BOTTOM_MARGIN = 0.06
#: Characters per panel line (longer legend lines wrap).
_WRAP = 42

Blend = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


def font_size(rows: int) -> int:
    """Legend font size (px) for an image ``rows`` high."""
    return max(MIN_FONT_SIZE, round(rows / 45))


@lru_cache(maxsize=16)
def legend_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The font of the legend text at ``size`` px (Pillow's scalable default font)."""
    return ImageFont.load_default(size=size)


def _wrapped(lines: Sequence[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip(" ")))
        out.extend(
            textwrap.wrap(
                line,
                _WRAP,
                initial_indent="",
                subsequent_indent=indent + "  ",
                drop_whitespace=True,
                break_on_hyphens=False,  # "out-of-distribution" stays one word
            )
            or [""]
        )
    return out


def panel_width(lines: Sequence[str], size: int) -> int:
    """Width (px) of the panel that holds ``lines`` at font ``size``."""
    font = legend_font(size)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = max((draw.textlength(line, font=font) for line in _wrapped(lines)), default=0.0)
    return int(np.ceil(max(widest, 14 * size))) + 2 * _pad(size)


def _pad(size: int) -> int:
    return max(4, size // 2)


def colour_key(width: int, height: int, level: float, blend: Blend) -> np.ndarray:
    """The colour key: evidence ``level``..1 left to right, over grey bright (top) to dark (bottom).

    Parameters
    ----------
    width, height
        Size in px.
    level
        The drawing level (``cam_threshold``).
    blend
        The overlay's blend (:func:`chexnet_dicom.outputs.sc.blend_overlay`).

    Returns
    -------
    numpy.ndarray
        (height, width, 3) uint8.
    """
    values = level + (1.0 - level) * np.linspace(0.0, 1.0, max(width, 2), dtype=np.float32)
    greys = np.linspace(1.0, 0.0, max(height, 2), dtype=np.float32)
    heat = np.broadcast_to(values[None, :], (len(greys), len(values)))
    grey = np.broadcast_to(greys[:, None], heat.shape)
    return blend(np.ascontiguousarray(grey), np.ascontiguousarray(heat), level)[:height, :width]


def add_legend_panel(
    rgb: np.ndarray, lines: Sequence[str], level: float, blend: Blend, *, key: bool
) -> np.ndarray:
    """Return ``rgb`` with a black legend panel added on its right (the image itself untouched).

    Parameters
    ----------
    rgb
        (H, W, 3) uint8 overlay.
    lines
        :func:`chexnet_dicom.outputs.sc.legend_lines` (wrapped to the panel here).
    level
        The drawing level, for the colour key's ticks.
    blend
        The overlay's blend, so the key shows the image's own colours.
    key
        Draw the colour key after the line starting with :data:`KEY_CAPTION`.

    Returns
    -------
    numpy.ndarray
        (max(H, panel height), W + panel width, 3) uint8; ``[:H, :W]`` is ``rgb``.  The
        panel's text lies between its top :data:`VIEWER_TOP_MARGIN` and bottom
        :data:`VIEWER_BOTTOM_MARGIN` bands.
    """
    rows, cols = rgb.shape[:2]
    size = font_size(rows)
    font, small = legend_font(size), legend_font(max(MIN_FONT_SIZE - 2, round(size * 0.8)))
    pad = _pad(size)
    line_h = round(size * 1.25)
    wrapped = _wrapped(lines)
    width = panel_width(lines, size)
    key_block = 2 * size + max(4, size // 3) + line_h + pad if key else 0
    content = pad + len(wrapped) * line_h + key_block + pad
    free = 1.0 - VIEWER_TOP_MARGIN - VIEWER_BOTTOM_MARGIN
    height = max(rows, int(np.ceil(content / free)) + 1)
    top = int(np.ceil(VIEWER_TOP_MARGIN * height))  # empty: a viewer's corner annotations lie here
    # The panel is drawn on its own (a crop of the result) and joined to the image as
    # arrays: the image is never copied through PIL, and the text lands on the same pixels.
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = pad
    inner = width - 2 * pad
    after = len(wrapped)  # the key goes after the caption and its continuation lines
    if key:
        starts = [i for i, line in enumerate(wrapped) if line.startswith(KEY_CAPTION)]
        if starts:
            after = starts[0] + 1
            while after < len(wrapped) and wrapped[after].startswith("  "):
                after += 1
    y = top + pad
    for i, line in enumerate(wrapped):
        if key and i == after:
            y = _draw_key(draw, canvas, (x0, y + pad // 2), inner, size, level, blend, small) + pad
        _draw_line(draw, (x0, y), line, size, font)
        y += line_h
    if key and after == len(wrapped):
        _draw_key(draw, canvas, (x0, y + pad // 2), inner, size, level, blend, small)
    out = np.zeros((height, cols + width, 3), dtype=np.uint8)
    out[:rows, :cols] = rgb
    out[:, cols:] = np.asarray(canvas, dtype=np.uint8)
    return out


def _draw_line(
    draw: ImageDraw.ImageDraw,
    at: tuple[int, int],
    line: str,
    size: int,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    """Draw one panel line: a leading ``*``/``!`` marker in its own column, leading spaces as indent."""
    x, y = at
    if line[:2] in ("* ", "! "):
        draw.text((x, y), line[0], fill=(255, 255, 255), font=font)
        line = line[2:]
        x += size
    indent = len(line) - len(line.lstrip(" "))
    draw.text((x + indent * size // 2, y), line.lstrip(" "), fill=(255, 255, 255), font=font)


def _draw_key(
    draw: ImageDraw.ImageDraw,
    canvas: Image.Image,
    at: tuple[int, int],
    inner: int,
    size: int,
    level: float,
    blend: Blend,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> int:
    """Draw the colour key with ticks at ``at``; return the y below its tick labels."""
    x0, y = at
    key_h, tick_h = 2 * size, max(4, size // 3)
    canvas.paste(Image.fromarray(colour_key(inner, key_h, level, blend), mode="RGB"), (x0, y))
    y += key_h
    for t in (level, (level + 1.0) / 2.0, 1.0):
        x = x0 + round((t - level) / max(1.0 - level, 1e-6) * (inner - 1))
        draw.line((x, y, x, y + tick_h), fill=(255, 255, 255), width=max(1, size // 12))
        label = f"{t:.2f}".rstrip("0").rstrip(".") if t < 1.0 else "1"
        w = draw.textlength(label, font=font)
        tx = min(max(x - w / 2, x0), x0 + inner - w)
        draw.text((tx, y + tick_h), label, fill=(255, 255, 255), font=font)
    return y + tick_h + round(size * 1.25)
