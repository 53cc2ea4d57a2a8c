"""The overlay legend on the real chest files: it hides nothing, reads legibly, tells the truth.

* the legend panel lies beside the image: the SC's image area is exactly the blended
  overlay (0 % of the image covered by the legend), and every SR region outline of a
  present finding lies inside the image area, away from the panel;
* the panel's text keeps clear of a viewer's corner annotations (an empty top and bottom band);
* the text is at least 12 px high at the SC's own size, with the spaces between words kept;
* the colour key holds only colours the overlay can draw (the same blend over a grey ramp);
* a finding unreliable at its threshold is listed with "!" and never drawn by default;
* a default run and a per-finding run give one object per (image, finding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy.spatial import cKDTree
from skimage.draw import polygon as fill_polygon

from chexnet_dicom.config import OutputOptions
from chexnet_dicom.dicom.study import scan
from chexnet_dicom.model.backends import load_predictor
from chexnet_dicom.model.labels import DISPLAY_NAMES, LABELS
from chexnet_dicom.model.resolve import DEMO_CARD
from chexnet_dicom.outputs.build import build_outputs
from chexnet_dicom.outputs.legend import (
    VIEWER_BOTTOM_MARGIN,
    VIEWER_TOP_MARGIN,
    add_legend_panel,
    colour_key,
    font_size,
    legend_font,
)
from chexnet_dicom.outputs.reliability import unreliable_findings
from chexnet_dicom.outputs.sc import (
    blend_overlay,
    head_up,
    image_area,
    legend_lines,
    overlay_pixels,
    present_findings,
    shown_finding,
)
from chexnet_dicom.pipeline import results_for_paths
from chexnet_dicom.results import StudyResult
from tests.helpers.outputs import scoord_regions


@pytest.fixture(scope="module")
def chest(shared_dicom: Path) -> list[StudyResult]:
    predictor = load_predictor(DEMO_CARD, device="cpu")
    results = [st for st in results_for_paths(scan([shared_dicom / "chest"]), predictor) if st.images]
    assert len(results) == 6  # the seventh file is a duplicate
    return results


def test_the_legend_covers_no_image_pixel_and_no_region(chest: list[StudyResult]) -> None:
    card = chest[0].card
    regions = 0
    for st in chest:
        (im,) = st.images
        rows, cols = image_area(im)
        rgb = overlay_pixels(im, card, draw_unreliable=True)  # a drawn map on as many files as possible
        shown = shown_finding(im, card, draw_unreliable=True)
        heat = im.heatmap(LABELS.index(shown)) if shown is not None else None
        expected = head_up(
            blend_overlay(im.display.to_source_grid(im.display.image), heat, card.cam_threshold), im
        )
        # covered fraction of the image: 0 (every image pixel is the overlay, nothing burned over it)
        covered = float((rgb[:rows, :cols] != expected).any(axis=-1).mean())
        assert covered == 0.0, f"{Path(im.path).name}: legend covers {covered:.1%} of the image"
        assert rgb.shape[1] > cols and (rgb[:, cols:] != 0).any()  # the legend is in the panel
        # the SR's region outlines (source grid) all lie inside the image area
        mask = np.zeros(im.source_shape, bool)
        for pts in scoord_regions(build_outputs(st, OutputOptions(sc=False, previews=False)).sr):
            rr, cc = fill_polygon(pts[:, 1], pts[:, 0], shape=im.source_shape)
            mask[rr, cc] = True
            regions += 1
        turned = head_up(mask[..., None], im)[..., 0]
        assert turned.shape == (rows, cols)  # regions map into the image area, never into the panel
    assert regions >= 3


def test_text_is_legible_with_its_spaces() -> None:
    for rows in (440, 1024, 2128):
        size = font_size(rows)
        img = Image.new("L", (40 * size, 2 * size), 0)
        ImageDraw.Draw(img).text((0, 0), "RESEARCH USE ONLY", fill=255, font=legend_font(size))
        ink = np.asarray(img) > 96
        ys = np.nonzero(ink.any(axis=1))[0]
        # capital letters at least 12 px high (and 1/70 of the image height)
        assert ys.max() - ys.min() + 1 >= max(12, rows / 70), (
            f"text {ys.max() - ys.min() + 1} px high on a {rows} px image"
        )
        cols = np.asarray(ink.any(axis=0), dtype=bool)
        xs = np.nonzero(cols)[0]
        gaps = [len(g) for g in "".join("1" if c else "0" for c in cols[xs.min() : xs.max()]).split("1") if g]
        word_gaps = sorted(gaps)[-2:]  # the two widest gaps are the spaces between the three words
        assert min(word_gaps) >= 0.2 * size, (rows, gaps)


@pytest.mark.parametrize("rows", [440, 2128])
def test_the_panel_text_keeps_clear_of_the_viewers_corner_annotations(rows: int) -> None:
    """Orthanc's Web Viewer writes 3 lines top right and the zoom bottom right over the panel."""
    lines = ["RESEARCH USE ONLY - not for diagnosis", "Heatmap: Atelectasis"]
    lines += [f"* Finding {i} 0.{i}0 / 0.20" for i in range(14)]  # more text than a 440 px panel holds
    lines += ["Colour: share of the map's peak evidence", "  (not a probability)", "model 1.0"]
    image = np.full((rows, rows // 2, 3), 128, np.uint8)
    out = add_legend_panel(image, lines, 0.5, blend_overlay, key=True)
    panel = out[:, image.shape[1] :]
    ink = np.nonzero(panel.any(axis=(1, 2)))[0]
    height = out.shape[0]
    assert height >= rows
    assert ink.min() >= VIEWER_TOP_MARGIN * height, (ink.min(), height)  # the top band is empty
    assert ink.max() < (1.0 - VIEWER_BOTTOM_MARGIN) * height, (ink.max(), height)
    assert ink.max() - ink.min() > 0.3 * height  # and the text is there
    assert (out[:rows, : image.shape[1]] == 128).all()  # the image untouched


def test_the_colour_key_holds_only_the_images_colours() -> None:
    key = colour_key(200, 40, 0.5, blend_overlay)
    grey = np.linspace(0, 1, 256, dtype=np.float32)
    values = np.linspace(0.5, 1.0, 256, dtype=np.float32)
    g, v = np.meshgrid(grey, values, indexing="ij")
    possible = np.unique(blend_overlay(g, v, 0.5).reshape(-1, 3), axis=0).astype(np.int16)
    drawn = np.unique(key.reshape(-1, 3), axis=0).astype(np.int16)
    # Chebyshev distance from each drawn colour to its nearest possible overlay colour
    near, _ = cKDTree(possible).query(drawn, p=np.inf)
    assert near.max() <= 3  # every key colour is an overlay colour (up to the ramp's sampling)
    assert len(drawn) > 100


def test_unreliable_findings_are_marked_and_not_drawn(chest: list[StudyResult]) -> None:
    card = chest[0].card
    unreliable = unreliable_findings(card)
    assert {"Infiltration", "Edema", "Hernia"} <= unreliable  # validation sensitivity 0.00
    marked = 0
    for st in chest:
        (im,) = st.images
        shown = shown_finding(im, card)
        assert shown is None or shown not in unreliable
        present = present_findings(im, card)
        lines = legend_lines(im, card, shown)
        for label in present[:3]:
            if label in unreliable:
                (line,) = [
                    x for x in lines if x.startswith("* ") and " / " in x and DISPLAY_NAMES[label] in x
                ]
                assert " !" in line
                marked += 1
        if any(line.startswith("* ") and " / " in line for line in lines):
            assert "* present: probability >= threshold" in lines  # the footnote points at something
    assert marked >= 1


def test_a_per_finding_run_after_a_default_run_adds_no_second_copy(chest: list[StudyResult]) -> None:
    for st in chest:
        default = build_outputs(st, OutputOptions(previews=False))
        per = build_outputs(st, OutputOptions(previews=False, sc_per_finding=True))
        uids = {str(sc.SOPInstanceUID): (name, int(sc.InstanceNumber)) for name, sc in per.overlays}
        for name, sc in default.overlays:
            assert uids[str(sc.SOPInstanceUID)] == (name, int(sc.InstanceNumber))  # the same object
        numbers = [int(sc.InstanceNumber) for _, sc in per.overlays]
        assert len(set(numbers)) == len(numbers)
        for name, sc in per.overlays:
            assert sc.SeriesDate and sc.SeriesTime
            if not name.endswith("-none.dcm"):
                finding = name.removeprefix("sc-1-").removesuffix(".dcm")
                assert finding.replace("-", " ") in sc.SeriesDescription.lower()
