"""Secondary Capture overlays: validity, references, and the heatmap where the CAM is high."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from chexnet_dicom.dicom.load import load_image
from chexnet_dicom.errors import ConfigError, OutputError
from chexnet_dicom.model.card import policy_text
from chexnet_dicom.model.labels import DISPLAY_NAMES, LABELS
from chexnet_dicom.outputs.sc import (
    SC_COMPRESSIONS,
    blend_overlay,
    build_sc,
    colormap,
    legend_lines,
    overlay_findings,
    overlay_instance_number,
    overlay_pixels,
    preview_pixels,
    sc_orientation,
)
from chexnet_dicom.outputs.write import write_dataset
from tests.helpers.outputs import blob, dciodvfy_errors, make_card, make_dx, make_result
from tests.helpers.shared import shared_path

PROBS = np.array([0.2, 0.1, 0.3, 0.05, 0.9, 0.6, 0.1, 0.7, 0.0, 0.1, 0.2, 0.3, 0.4, 0.05])  # top: Mass


def _png_roundtrip(ds: pydicom.Dataset) -> np.ndarray:
    """Render the stored SC to PNG and read it back (what a person without a viewer sees)."""
    buf = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(buf, format="PNG")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.int16)


def _colourfulness(rgb: np.ndarray) -> np.ndarray:
    return rgb.max(axis=2) - rgb.min(axis=2)


@pytest.mark.parametrize("source", ["siim_6904.dcm", "CR-MONO1-10-chest.dcm"])
def test_overlay_of_a_real_chest_is_valid_and_references_the_source(source: str, tmp_path: Path) -> None:
    path = shared_path("dicom", "chest", source)
    ds = pydicom.dcmread(path, force=True)
    display = load_image(path).display
    card = make_card()
    rows, cols = int(ds.Rows), int(ds.Columns)
    heat = np.repeat(blob(rows, cols, 0.6 * rows, 0.6 * cols, rows / 10)[None], len(LABELS), axis=0)
    sc = build_sc(make_result(ds, card, PROBS, heat=heat, display=display), card)
    out = write_dataset(sc, tmp_path / "sc.dcm")
    errors, warnings = dciodvfy_errors(out)
    assert errors == [], errors
    expected = ("DICOMDIR", "Person Name", "Device UID", "Standard Extended")
    assert [w for w in warnings if not any(e in w for e in expected)] == []
    back = pydicom.dcmread(out)
    assert back.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert (back.PhotometricInterpretation, back.SamplesPerPixel) == ("RGB", 3)
    # the image area's rows; a small image gets a taller panel (its text keeps clear of a
    # viewer's corner annotations) and black below the image area
    assert rows <= back.Rows <= max(rows, 560)  # 534 with the OOD line: a bound on growth
    assert not back.pixel_array[rows:, :cols].any()
    assert back.Columns > cols  # the legend panel beside the image area
    assert back.BurnedInAnnotation == "YES"
    assert "RESEARCH USE ONLY" in back.SeriesDescription
    ref = back.SourceImageSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (ds.SOPClassUID, ds.SOPInstanceUID)
    for kw in ("PatientName", "PatientID", "StudyInstanceUID", "AccessionNumber"):
        if kw in ds:
            assert str(back.get(kw)) == str(ds.get(kw)), kw
    assert back.SeriesInstanceUID != ds.SeriesInstanceUID
    algo = [i for i in back.ContributingEquipmentSequence if i.Manufacturer == "chexnet-dicom project"]
    assert [i.DeviceUID for i in algo] == [card.device_uid]
    if source == "siim_6904.dcm":  # JPEG baseline source: the overlay is derived from lossy pixels
        assert back.LossyImageCompression == "01"
    # the overlay is coloured at the blob and grey far from it
    rgb = _png_roundtrip(back)
    colour = _colourfulness(rgb)
    assert colour[int(0.6 * rows), int(0.6 * cols)] > 30
    assert colour[int(0.95 * rows), int(0.05 * cols)] <= 2


def test_heatmap_of_the_top_present_finding_lies_where_its_evidence_is_high(tmp_path: Path) -> None:
    ds = make_dx(rows=240, cols=256)
    card = make_card()
    heat = np.zeros((len(LABELS), 240, 256), np.float32)
    centres = {LABELS.index("Mass"): (175, 70), LABELS.index("Nodule"): (175, 200)}
    for k, (cy, cx) in centres.items():
        heat[k] = blob(240, 256, cy, cx, 12.0)
    top = int(np.argmax(PROBS))
    assert LABELS[top] == "Mass"
    result = make_result(ds, card, PROBS, heat=heat)
    sc = build_sc(result, card)
    back = pydicom.dcmread(write_dataset(sc, tmp_path / "sc.dcm"))
    colour = _colourfulness(_png_roundtrip(back))
    colour = colour[:240, :256]  # the image area (the legend panel lies to its right)
    ys, xs = np.nonzero(colour > 10)
    cy, cx = centres[top]
    assert abs(ys.mean() - cy) <= 2.0 and abs(xs.mean() - cx) <= 2.0, ((ys.mean(), xs.mean()), (cy, cx))
    other = centres[LABELS.index("Nodule")]  # Nodule's blob is not shown
    assert colour[other] <= 2
    # exactly the part of the map at or above the drawing level is coloured, graded
    level = result.heatmap(top)
    assert level is not None
    drawn = level >= card.cam_threshold
    below = level < card.cam_threshold - 0.02
    coloured = colour > 10
    assert coloured[drawn].mean() > 0.97
    assert coloured[below].mean() < 0.01
    rgb = _png_roundtrip(back)[:240, :256][drawn]
    assert len({tuple(v) for v in rgb}) > 20  # the colour follows the value: many levels


def test_an_absent_finding_is_never_drawn_and_the_legend_says_why() -> None:
    ds = make_dx(rows=240, cols=256)
    card = make_card(threshold=0.95)  # nothing reaches its operating point
    heat = np.repeat(blob(240, 256, 120, 128, 20)[None], len(LABELS), axis=0)
    result = make_result(ds, card, PROBS, heat=heat)
    rgb = overlay_pixels(result, card)
    assert (_colourfulness(rgb.astype(np.int16))[160:] == 0).all()
    assert "No heatmap: no finding is present at its operating point" in legend_lines(result, card, None)
    # asking for an absent finding draws nothing either
    assert (_colourfulness(overlay_pixels(result, card, "Mass").astype(np.int16))[160:] == 0).all()


def test_a_flat_map_is_not_drawn_and_the_legend_says_so() -> None:
    ds = make_dx(rows=96, cols=96)
    card = make_card()
    result = make_result(ds, card, PROBS, heat=np.full((len(LABELS), 96, 96), 0.3, np.float32))
    assert result.heatmap(LABELS.index("Mass")) is None
    lines = legend_lines(result, card, "Mass", flat=True)
    assert any("map is flat" in line for line in lines)


def test_legend_ranks_by_margin_present_first_and_names_the_drawn_finding() -> None:
    card = make_card()
    lines = legend_lines(make_result(make_dx(), card, PROBS), card, "Mass")
    assert lines[0] == "RESEARCH USE ONLY - not for diagnosis"
    assert lines[1] == "Heatmap: Mass"
    assert lines[2] == "probability 0.90, threshold 0.50: present"
    listed = [line for line in lines if line[:2] in ("* ", "  ") and " / " in line]
    # thresholds are all 0.5 here: margin order is probability order; present ones starred
    assert listed[:4] == [
        "* Mass 0.90 / 0.50  [drawn]",
        "* Pneumothorax 0.70 / 0.50",
        "* Nodule 0.60 / 0.50",
        "  Pleural thickening 0.40 / 0.50",  # the one spelling: the code meaning
    ]
    assert "* present: probability >= threshold" in lines
    assert lines[lines.index("* present: probability >= threshold") + 1].strip() == (
        f"(threshold: {policy_text(card.operating_points)})"
    )
    assert not any(line.startswith("! ") for line in lines)  # no "!" listed, no footnote
    assert any(line.startswith("Colour: share of the map's peak evidence") for line in lines)
    assert lines[-1] == f"{card.name} {card.version}"


def test_the_drawn_finding_is_listed_even_when_its_margin_is_small() -> None:
    card = make_card()
    probs = np.full(14, 0.95)
    probs[LABELS.index("Hernia")] = 0.51
    lines = legend_lines(make_result(make_dx(), card, probs), card, "Hernia")
    assert "* Hernia 0.51 / 0.50  [drawn]" in lines
    assert len([line for line in lines if " / 0.50" in line]) == 6  # five by margin and the drawn one


def test_legend_and_colour_key_are_burned_in_beside_the_image() -> None:
    ds = make_dx(rows=480, cols=512)
    card = make_card()
    heat = np.repeat(blob(480, 512, 400, 400, 20)[None], len(LABELS), axis=0)
    result = make_result(ds, card, PROBS, heat=heat)
    sc = build_sc(result, card)
    rgb = sc.pixel_array.astype(int)
    assert 480 <= rgb.shape[0] <= 560 and rgb.shape[1] > 512  # the panel may be taller than the image
    np.testing.assert_array_equal(  # the image area is the overlay, untouched by the legend
        rgb[:480, :512], blend_overlay(result.display.image, result.heatmap(LABELS.index("Mass")), 0.5)
    )
    panel = rgb[:, 512:]
    assert (panel == 0).all(axis=2).mean() > 0.5  # black panel
    assert (panel > 150).all(axis=2).sum() > 50  # white (antialiased) text
    colourful = _colourfulness(panel) > 40
    assert colourful.sum() > 200  # the colour key
    assert len({tuple(v) for v in panel[colourful]}) > 30  # a gradient, not one colour
    assert (rgb[300:340, 10:40] == 128).all()  # untouched grey away from the map


def test_per_finding_overlays_and_deterministic_uids() -> None:
    ds = make_dx()
    card = make_card()
    heat = np.zeros((len(LABELS), ds.Rows, ds.Columns), np.float32)
    result = make_result(ds, card, PROBS, heat=heat)

    def overlays(r: object, per_finding: bool) -> list[pydicom.Dataset]:
        labels = overlay_findings(r, card, per_finding=per_finding)  # type: ignore[arg-type]
        return [build_sc(r, card, finding=f) for f in labels]  # type: ignore[arg-type]

    scs = overlays(result, True)
    positives = [label for label, p in zip(LABELS, PROBS, strict=True) if p >= 0.5]
    assert len(scs) == len(positives) == 3
    assert len({s.SOPInstanceUID for s in scs}) == 3
    assert len({s.SeriesInstanceUID for s in scs}) == 3  # one series per finding ...
    assert all(DISPLAY_NAMES[f] in s.SeriesDescription for f, s in zip(positives, scs, strict=True))
    assert [s.InstanceNumber for s in scs] == [100 + LABELS.index(f) + 1 for f in positives]
    again = overlays(result, True)
    assert [s.SOPInstanceUID for s in again] == [s.SOPInstanceUID for s in scs]
    top = overlays(result, False)
    # ... and the default overlay is the per-finding overlay of its finding: a repeat run adds nothing
    (same,) = [s for s in scs if s.SeriesDescription == top[0].SeriesDescription]
    assert (top[0].SOPInstanceUID, top[0].InstanceNumber) == (same.SOPInstanceUID, same.InstanceNumber)
    other = build_sc(make_result(ds, make_card("cd" * 32), PROBS, heat=heat), make_card("cd" * 32))
    assert (
        other.SOPInstanceUID != top[0].SOPInstanceUID and other.SeriesInstanceUID != top[0].SeriesInstanceUID
    )
    negative = make_result(ds, card, np.zeros(14), heat=heat)
    assert overlay_findings(negative, card, per_finding=True) == [None]  # falls back to the top finding
    assert overlay_instance_number(2, None) == 200


@pytest.mark.parametrize(
    ("charset", "name"),
    [("ISO_IR 100", "Müller^Jürgen^Ä"), ("ISO_IR 192", "山田^太郎=Yamada^Tarō")],
)
def test_non_ascii_patient_name_round_trips(charset: str, name: str, tmp_path: Path) -> None:
    ds = pydicom.dcmread(write_dataset(make_dx(charset=charset, name=name), tmp_path / "src.dcm"))
    card = make_card()
    heat = np.zeros((len(LABELS), ds.Rows, ds.Columns), np.float32)
    sc = build_sc(make_result(ds, card, PROBS, heat=heat), card)
    out = write_dataset(sc, tmp_path / "sc.dcm")
    back = pydicom.dcmread(out)
    assert back.SpecificCharacterSet == charset
    assert str(back.PatientName) == name
    assert dciodvfy_errors(out)[0] == []


def test_colormap_is_matplotlib_inferno() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    x = np.linspace(0, 1, 256)
    ref = matplotlib.colormaps["inferno"](x)[:, :3] * 255
    assert np.abs(colormap(x) - ref).max() < 8
    lum = colormap(x) @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(lum) >= -0.5)  # perceptual: luminance never decreases


def test_blend_is_transparent_below_the_level_and_graded_above() -> None:
    grey = np.full((4, 5), 0.25, np.float32)
    heat = np.array([[0.0, 0.49, 0.5, 0.75, 1.0]] * 4, np.float32)
    rgb = blend_overlay(grey, heat, 0.5).astype(int)
    assert (rgb[:, :2] == 64).all()  # 0.25 * 255 rounded, untouched
    assert _colourfulness(rgb)[0, 2] > 10  # visible from the level on
    luminance = rgb[0] @ np.array([0.2126, 0.7152, 0.0722])
    assert luminance[2] < luminance[3] < luminance[4]  # rising with the value
    assert len({tuple(rgb[0, k]) for k in (2, 3, 4)}) == 3
    assert (blend_overlay(grey, None, 0.5) == 64).all()


def test_bad_inputs_are_output_errors() -> None:
    ds = make_dx()
    card = make_card()
    with pytest.raises(OutputError, match="needs heatmaps"):
        build_sc(make_result(ds, card, PROBS), card)
    heat = np.zeros((len(LABELS), ds.Rows, ds.Columns), np.float32)
    with pytest.raises(OutputError, match="image area"):
        build_sc(make_result(ds, card, PROBS, heat=heat), card, pixels=np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(OutputError, match="unknown finding"):
        build_sc(make_result(ds, card, PROBS, heat=heat), card, finding="Sadness")


@pytest.mark.parametrize("compression", ["jpeg2000", "jpegls", "rle"])
def test_compressed_overlays_are_valid_lossless_and_smaller(compression: str, tmp_path: Path) -> None:
    path = shared_path("dicom", "chest", "CR-MONO1-10-chest.dcm")
    ds = pydicom.dcmread(path, force=True)
    card = make_card()
    rows, cols = int(ds.Rows), int(ds.Columns)
    heat = np.repeat(blob(rows, cols, 0.4 * rows, 0.5 * cols, rows / 8)[None], len(LABELS), axis=0)
    result = make_result(ds, card, PROBS, heat=heat, display=load_image(path).display)
    plain = write_dataset(build_sc(result, card), tmp_path / "plain.dcm")
    packed = write_dataset(build_sc(result, card, compression=compression), tmp_path / "packed.dcm")
    errors, _warnings = dciodvfy_errors(packed)
    assert errors == [], errors
    a, b = pydicom.dcmread(plain), pydicom.dcmread(packed)
    assert b.file_meta.TransferSyntaxUID == SC_COMPRESSIONS[compression][0]
    assert b.SOPInstanceUID == a.SOPInstanceUID  # the encoding does not change the instance
    np.testing.assert_array_equal(b.pixel_array, a.pixel_array)  # lossless: the legend stays exact
    assert packed.stat().st_size < plain.stat().st_size
    with pytest.raises(ConfigError, match="SC compression"):
        build_sc(result, card, compression="jpeg-lossy")


def test_cli_offers_every_sc_compression() -> None:
    import argparse

    from chexnet_dicom.cli import infer

    parser = argparse.ArgumentParser()
    infer.register(parser.add_subparsers())
    for name in SC_COMPRESSIONS:
        assert parser.parse_args(["infer", "x", "--sc-compression", name]).sc_compression == name
    assert parser.parse_args(["infer", "x"]).sc_compression is None  # the [outputs] default, "none"


@pytest.mark.parametrize("body_part", ["CHEST", "THORAX CHEST PA", None])
def test_laterality_is_present_unless_the_body_part_is_chest(body_part: str | None, tmp_path: Path) -> None:
    ds = make_dx(rows=96, cols=96)
    if body_part is None:
        if "BodyPartExamined" in ds:
            del ds.BodyPartExamined
    else:
        ds.BodyPartExamined = body_part
    card = make_card()
    heat = np.repeat(blob(96, 96, 48, 48, 10)[None], len(LABELS), axis=0)
    sc = build_sc(make_result(ds, card, PROBS, heat=heat, display=ds.pixel_array / 4095.0), card)
    errors, _warnings = dciodvfy_errors(write_dataset(sc, tmp_path / "sc.dcm"))
    assert errors == [], errors
    assert ("Laterality" in sc) == (body_part != "CHEST")


def test_an_sc_whose_source_was_turned_is_written_head_up_with_a_true_orientation() -> None:
    from chexnet_dicom.dicom.pixels import DisplayImage

    ds = make_dx(rows=480, cols=512)
    ds.PatientOrientation = ["L", "H"]  # stored upside down
    card = make_card()
    # the map as the model saw it (head up): low in the image
    heat = np.repeat(blob(480, 512, 400, 450, 15)[None], len(LABELS), axis=0)
    grey = np.full((480, 512), 0.5, np.float32)
    stored_upside_down = DisplayImage(image=grey, source_shape=(480, 512), orientation_ops=("flipud",))
    result = make_result(ds, card, PROBS, heat=heat, display=stored_upside_down)
    sc = build_sc(result, card)
    rgb = sc.pixel_array.astype(np.int16)
    np.testing.assert_array_equal(rgb, preview_pixels(result, card))  # the preview shows the same
    ys = np.nonzero(_colourfulness(rgb[:, :512])[:, 400:] > 10)[0]
    assert abs(ys.mean() - 400) < 5  # head up, as the model saw it
    assert list(sc.PatientOrientation) == ["L", "F"]  # true for the pixels, never the source's L\\H
    assert "flipud" in sc.DerivationDescription


@pytest.mark.parametrize(
    ("orientation", "view", "expected"),
    [(["R", "F"], "PA", ["R", "F"]), (None, "PA", ["L", "F"]), (None, "AP", ["L", "F"]), (None, None, None)],
)
def test_sc_orientation_is_copied_derived_or_left_unknown(
    orientation: list[str] | None, view: str | None, expected: list[str] | None
) -> None:
    ds = make_dx(rows=96, cols=96)
    for kw, value in (("PatientOrientation", orientation), ("ViewPosition", view)):
        if value is None:
            if kw in ds:
                delattr(ds, kw)
        else:
            setattr(ds, kw, value)
    card = make_card()
    result = make_result(ds, card, PROBS, heat=np.zeros((len(LABELS), 96, 96), np.float32))
    assert sc_orientation(result) == (tuple(expected) if expected else None)
    sc = build_sc(result, card)
    assert (list(sc.PatientOrientation) if sc.PatientOrientation else None) == expected
