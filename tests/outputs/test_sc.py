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
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.outputs.sc import (
    SC_COMPRESSIONS,
    blend_overlay,
    build_sc,
    colormap,
    legend_lines,
    overlay_findings,
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
    assert (back.PhotometricInterpretation, back.SamplesPerPixel, back.Rows, back.Columns) == (
        "RGB",
        3,
        rows,
        cols,
    )
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


def test_heatmap_of_the_top_finding_lies_where_its_cam_is_high(tmp_path: Path) -> None:
    ds = make_dx(rows=240, cols=256)
    card = make_card()
    heat = np.zeros((len(LABELS), 240, 256), np.float32)
    centres = {k: (60 + 12 * k, 40 + 14 * k) for k in range(len(LABELS))}
    for k, (cy, cx) in centres.items():
        heat[k] = blob(240, 256, cy, cx, 6.0)
    top = int(np.argmax(PROBS))
    display = np.full((240, 256), 0.5, np.float32)
    sc = build_sc(make_result(ds, card, PROBS, heat=heat, display=display), card)
    back = pydicom.dcmread(write_dataset(sc, tmp_path / "sc.dcm"))
    colour = _colourfulness(_png_roundtrip(back))
    legend_rows = 80  # legend box at the top left
    colour[:legend_rows, :] = 0
    ys, xs = np.nonzero(colour > 10)
    cy, cx = centres[top]
    assert abs(ys.mean() - cy) <= 1.5 and abs(xs.mean() - cx) <= 1.5, ((ys.mean(), xs.mean()), (cy, cx))
    other = centres[5]  # Nodule's blob is not shown
    assert colour[other] <= 2
    # the coloured area is the part of the blob at or above half the cam threshold
    coloured = colour > 10
    expected = heat[top] >= 0.5 * card.cam_threshold + 0.05
    assert coloured[expected].mean() > 0.95
    assert coloured[heat[top] < 0.5 * card.cam_threshold].mean() < 0.01


def test_legend_lists_top_three_model_version_and_research_use() -> None:
    card = make_card()
    lines = legend_lines(make_result(make_dx(), card, PROBS), card, "Mass")
    assert lines[0].startswith("RESEARCH USE ONLY")
    assert lines[2:5] == ["1. Mass 0.90 *", "2. Pneumothorax 0.70 *", "3. Nodule 0.60 *"]
    assert lines[-1] == f"{card.name} {card.version}"


def test_legend_is_burned_in() -> None:
    ds = make_dx(rows=240, cols=256)
    card = make_card()
    heat = np.zeros((len(LABELS), 240, 256), np.float32)
    sc = build_sc(make_result(ds, card, PROBS, heat=heat), card)
    rgb = sc.pixel_array.astype(int)
    box = rgb[:40, :120]
    assert (box == 0).all(axis=2).mean() > 0.5  # black box
    assert (box > 150).all(axis=2).sum() > 50  # white (antialiased) text
    assert (rgb[200:, 200:] == 128).all()  # untouched grey elsewhere (no heat)


def test_per_finding_overlays_and_deterministic_uids() -> None:
    ds = make_dx()
    card = make_card()
    heat = np.zeros((len(LABELS), ds.Rows, ds.Columns), np.float32)
    result = make_result(ds, card, PROBS, heat=heat)

    def overlays(r: object, per_finding: bool) -> list[pydicom.Dataset]:
        labels = overlay_findings(r, card, per_finding=per_finding)  # type: ignore[arg-type]
        return [build_sc(r, card, finding=f, instance_number=n) for n, f in enumerate(labels, 1)]  # type: ignore[arg-type]

    scs = overlays(result, True)
    positives = [label for label, p in zip(LABELS, PROBS, strict=True) if p >= 0.5]
    assert len(scs) == len(positives) == 3
    assert len({s.SOPInstanceUID for s in scs}) == 3
    assert [s.InstanceNumber for s in scs] == [1, 2, 3]
    again = overlays(result, True)
    assert [s.SOPInstanceUID for s in again] == [s.SOPInstanceUID for s in scs]
    top = overlays(result, False)
    assert len(top) == 1 and top[0].SOPInstanceUID not in {s.SOPInstanceUID for s in scs}
    other = build_sc(make_result(ds, make_card("cd" * 32), PROBS, heat=heat), make_card("cd" * 32))
    assert (
        other.SOPInstanceUID != top[0].SOPInstanceUID and other.SeriesInstanceUID != top[0].SeriesInstanceUID
    )
    negative = make_result(ds, card, np.zeros(14), heat=heat)
    assert overlay_findings(negative, card, per_finding=True) == [None]  # falls back to the top finding


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


def test_blend_is_transparent_below_half_the_threshold() -> None:
    grey = np.full((4, 4), 0.25, np.float32)
    heat = np.array([[0.0, 0.2, 0.3, 1.0]] * 4, np.float32)
    rgb = blend_overlay(grey, heat, 0.5, max_alpha=0.6).astype(int)
    assert (rgb[:, :2] == 64).all()  # 0.25 * 255 rounded, untouched
    assert _colourfulness(rgb)[0, 3] > 50


def test_bad_inputs_are_output_errors() -> None:
    ds = make_dx()
    card = make_card()
    with pytest.raises(OutputError, match="needs heatmaps"):
        build_sc(make_result(ds, card, PROBS), card)
    heat = np.zeros((len(LABELS), ds.Rows, ds.Columns), np.float32)
    with pytest.raises(OutputError, match="source grid"):
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
