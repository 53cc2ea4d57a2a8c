"""The outputs of real radiographs, with the bundled demo weights, show what they claim.

On the seven real chest files and on held-out NIH images written as DICOM:

* an image whose overlay finding is present at its operating point has coloured pixels
  on 1-60% of the image, in many colour levels (no flat, saturated polygon), and the
  colour bar is burned in;
* an absent finding is never drawn;
* the SR's image region of the drawn finding lies inside what the overlay colours;
* the PNG preview of DX_J2K_0Padding is head up, as ``chexdcm render`` shows it;
* (``test_legend.py``) the legend covers no image pixel and the colour key holds the
  image's colours;
* every SR passes PixelMed's DicomSRValidator (the IHE AI Results test tool) with 0
  errors and only the warning documented as its TID 1501 gap, and dciodvfy with 0 errors.
"""

from __future__ import annotations

import csv
import html
import re
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from skimage.draw import polygon as fill_polygon

from chexnet_dicom.dicom.study import scan
from chexnet_dicom.model.backends import load_predictor
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.resolve import DEMO_CARD
from chexnet_dicom.outputs.build import build_outputs
from chexnet_dicom.outputs.identity import RESEARCH_USE_ONLY
from chexnet_dicom.outputs.sc import blend_overlay, image_area, overlay_pixels, preview_pixels, shown_finding
from chexnet_dicom.outputs.sr import finding_name
from chexnet_dicom.outputs.write import write_dataset
from chexnet_dicom.pipeline import results_for_paths
from chexnet_dicom.results import ImageResult, StudyResult, study_summary
from chexnet_dicom.testing import synth
from tests.helpers.outputs import PIXELMED_TID1501_GAP, dciodvfy_errors, pixelmed_sr_reports, scoord_regions
from tests.helpers.shared import REPO, require_tool

#: Held-out NIH images (the test split of the demo weights' recipe) written as DICOM.
N_NIH = 16
#: A test that finds nothing present proves nothing: at least this many images must show a map.
MIN_PRESENT = 10


def _colourful(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int16)
    return (rgb.max(axis=-1) - rgb.min(axis=-1)) > 12


@pytest.fixture(scope="module")
def studies(shared_dicom: Path, nih_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[StudyResult]:
    folder = tmp_path_factory.mktemp("nih-dicom")
    with open(REPO / "pipelines" / "splits" / "nih500_split.csv", newline="") as fh:
        held_out = sorted(row["key"] for row in csv.DictReader(fh) if row["split"] == "test")[:N_NIH]
    assert len(held_out) == N_NIH
    for seed, name in enumerate(held_out, start=900):
        grey = np.asarray(Image.open(nih_dir / "images" / name).convert("L").resize((512, 512)), np.float32)
        ds = synth.make_dataset(grey / 255.0, seed=seed, bits_stored=12)
        synth.write(ds, folder / f"{Path(name).stem}.dcm")
    predictor = load_predictor(DEMO_CARD, device="cpu")
    found = scan([shared_dicom / "chest", folder])
    results = list(results_for_paths(found, predictor))
    assert sum(len(st.images) for st in results) == 6 + N_NIH  # the seventh chest file is a duplicate
    return results


@pytest.fixture(scope="module")
def analysed(studies: list[StudyResult]) -> list[ImageResult]:
    return [im for st in studies for im in st.images]


def test_present_findings_get_a_visible_graded_map_with_a_colour_bar(analysed: list[ImageResult]) -> None:
    card = load_predictor(DEMO_CARD, device="cpu").card
    drawn = 0
    for im in analysed:
        shown = shown_finding(im, card)
        name = Path(im.path).name
        rgb = overlay_pixels(im, card)
        if shown is None:
            # nothing present: not one coloured pixel (no map, no colour bar)
            assert not _colourful(rgb).any(), name
            continue
        heat = im.heatmap(LABELS.index(shown))
        assert heat is not None, f"{name}: {shown} is present but its map is flat"
        grey = im.display.to_source_grid(im.display.image)
        mapped = blend_overlay(grey, heat, card.cam_threshold)
        coloured = _colourful(mapped)
        share = float(coloured.mean())
        assert 0.01 <= share <= 0.60, f"{name}: {shown} coloured on {share:.1%} of the image"
        colours, counts = np.unique(mapped[coloured].reshape(-1, 3), axis=0, return_counts=True)
        assert len(colours) > 50, f"{name}: only {len(colours)} colours: a flat map"
        assert counts.max() < 0.2 * counts.sum(), f"{name}: one colour covers most of the map"
        # the colour key: a strip of many colours in the legend panel (right of the image)
        legend = rgb[:, image_area(im)[1] :]
        bar_colours = np.unique(legend[_colourful(legend)].reshape(-1, 3), axis=0)
        assert len(bar_colours) > 30, f"{name}: no colour key in the legend"
        drawn += 1
    assert drawn >= MIN_PRESENT, f"only {drawn} images have a present finding: test more NIH images"


def test_absent_findings_are_never_drawn(analysed: list[ImageResult]) -> None:
    card = load_predictor(DEMO_CARD, device="cpu").card
    asked = 0
    for im in analysed:
        probs = im.prediction.probabilities
        absent = [label for k, label in enumerate(LABELS) if probs[k] < card.threshold(label)]
        for label in absent[:3]:
            assert shown_finding(im, card, label) is None
            # no map and no colour bar: not one coloured pixel in the whole overlay
            rgb = overlay_pixels(im, card, label)
            assert not _colourful(rgb).any(), f"{Path(im.path).name}: absent {label} drawn"
            asked += 1
    assert asked > 20


def test_the_sr_region_lies_where_the_overlay_is_coloured(analysed: list[ImageResult]) -> None:
    card = load_predictor(DEMO_CARD, device="cpu").card
    checked = 0
    for im in analysed:
        shown = shown_finding(im, card)
        if shown is None:
            continue
        study = StudyResult(study_uid=str(im.dataset.StudyInstanceUID), card=card, images=(im,))
        sr = build_outputs(study).sr
        regions = scoord_regions(sr)
        present = sum(
            im.prediction.probabilities[k] >= card.threshold(label) for k, label in enumerate(LABELS)
        )
        # each present finding with a map: its outline and its bounding box
        assert 2 <= len(regions) <= 2 * present and len(regions) % 2 == 0
        heat = im.heatmap(LABELS.index(shown))
        assert heat is not None
        grey = im.display.to_source_grid(im.display.image)
        coloured = _colourful(blend_overlay(grey, heat, card.cam_threshold))
        # the drawn finding's region: the one that the overlay's colour covers best
        best = 0.0
        for pts in regions:
            rr, cc = fill_polygon(pts[:, 1], pts[:, 0], shape=coloured.shape)
            if len(rr):
                best = max(best, float(coloured[rr, cc].mean()))
        assert best > 0.95, f"{Path(im.path).name}: the SR region is not where the overlay is coloured"
        checked += 1
    assert checked >= MIN_PRESENT


def test_the_preview_is_head_up_as_render_shows_it(analysed: list[ImageResult], tmp_path: Path) -> None:
    from chexnet_dicom.cli import main

    card = load_predictor(DEMO_CARD, device="cpu").card
    (im,) = [im for im in analysed if Path(im.path).name == "DX_J2K_0Padding.dcm"]
    assert im.display.orientation_ops, "this file's header asks for an orientation correction"
    out = tmp_path / "render.png"
    assert main(["render", im.path, "-o", str(out)]) == 0
    rendered = np.asarray(Image.open(out).convert("L"), np.float64)
    preview = np.asarray(Image.fromarray(preview_pixels(im, card)).convert("L"), np.float64)
    preview = preview[: rendered.shape[0], : rendered.shape[1]]  # the image area, left of the legend
    assert preview.shape == rendered.shape
    # compare away from the drawn map: the lower half
    lower = slice(rendered.shape[0] // 2, None)
    a, b = preview[lower].ravel(), rendered[lower].ravel()
    twin = np.flipud(rendered)[lower].ravel()
    upright = np.corrcoef(a, b)[0, 1]
    flipped = np.corrcoef(a, twin)[0, 1]
    assert upright > 0.9 and upright > flipped + 0.3, (upright, flipped)


def test_every_sr_passes_pixelmed_and_dciodvfy(studies: list[StudyResult], tmp_path: Path) -> None:
    paths = []
    for n, st in enumerate(studies):
        sr = build_outputs(st).sr
        assert sr is not None
        paths.append(write_dataset(sr, tmp_path / f"sr-{n}.dcm"))
    reports = pixelmed_sr_reports(paths)
    for path in paths:
        errors, warnings = reports[path]
        assert not errors, f"{path.name}: {errors[:5]}"
        unexplained = [w for w in warnings if not PIXELMED_TID1501_GAP.match(w)]
        assert not unexplained, f"{path.name}: {unexplained[:5]}"
        # the gap: each finding's present/absent CODE and each image's out-of-distribution
        # Yes/No CODE; each region group's present CODE and its geometric purpose CODE
        # (PixelMed checks region groups as TID 1501 once there are 2+), nothing else
        st = studies[paths.index(path)]
        regions = len(scoord_regions(pydicom.dcmread(path)))
        # every region is reachable through highdicom's ROI accessor, two per present finding
        rois = hd.sr.srread(path).content.get_planar_roi_measurement_groups()
        assert len(rois) == regions and regions % 2 == 0
        assert all(r.get_qualitative_evaluations()[0].value.value == "52101004" for r in rois)  # Present
        expected = sum(14 + (im.prediction.ood_score is not None) for im in st.images) + 2 * regions
        assert len(warnings) == expected
        errors, _ = dciodvfy_errors(path)
        assert not errors, f"{path.name}: {errors[:5]}"


def _rendered_text(path: Path) -> str:
    done = subprocess.run(["dsr2html", str(path)], capture_output=True, check=True)
    html_text = done.stdout.decode("latin-1")  # the page declares the SR's character set
    text = html.unescape(re.sub(r"<[^>]+>", " ", html_text))
    return re.sub(r"\s+", " ", text)


def test_dsr2html_shows_research_use_findings_and_labelled_probabilities(
    studies: list[StudyResult], tmp_path: Path
) -> None:
    """Issue 16's SR rendering test: what a PACS user reads in dcmtk's rendering."""
    require_tool("dsr2html")
    for n, st in enumerate(studies):
        sr = build_outputs(st).sr
        assert sr is not None
        text = _rendered_text(write_dataset(sr, tmp_path / f"sr-{n}.dcm"))
        first_group = text.index("Measurement Group")
        assert text.index(RESEARCH_USE_ONLY) < first_group
        assert text.index("Summary") < first_group
        assert "finding index" not in text.lower()
        for label, s in study_summary(st.images).items():
            name = finding_name(label)
            assert f"{name}: study maximum Probability {s.probability:.3g} " in text, (n, label)
        # every value rendered carries its label: "Probability: <3 digits> 1"
        values = re.findall(r"(\w+(?: \w+)?): (\d\.\d+(?:e-\d+)?) 1 ", text)
        assert len(values) == 2 * len(LABELS) * len(st.images), (n, len(values))
        assert {name for name, _ in values} == {"Probability", "Threshold Value"}
