"""``chexdcm render``: writes the display image the model sees and prints its provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexnet_dicom.cli import main
from chexnet_dicom.config import IngestConfig, PixelPolicy
from chexnet_dicom.dicom.flags import (
    FLAG_CONTENT_INVERTED,
    FLAG_ORIENTATION_CORRECTED,
    FLAG_WINDOW_OUTSIDE_DATA,
)
from chexnet_dicom.dicom.load import load_image
from chexnet_dicom.dicom.resize import resize_display
from chexnet_dicom.testing import synth
from chexnet_dicom.transforms import resize_image
from tests.helpers.shared import shared_path


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L" and im.format == "PNG"
        return np.asarray(im)


@pytest.fixture(scope="module")
def mono1_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MONOCHROME1 12-bit CR stored mirrored left-right (PatientOrientation R\\F)."""
    phantom = synth.chest_phantom((160, 144), seed=3)
    ds = synth.make_dataset(
        phantom[:, ::-1].copy(),
        modality="CR",
        photometric="MONOCHROME1",
        bits_stored=12,
        patient_orientation=("R", "F"),
    )
    path = tmp_path_factory.mktemp("render") / "mono1.dcm"
    synth.write(ds, path)
    return path


def test_render_writes_what_load_image_gives(
    mono1_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.png"
    assert main(["render", str(mono1_file), "-o", str(out)]) == 0
    png = _png(out)
    shown = load_image(mono1_file).display
    assert png.shape == shown.image.shape
    np.testing.assert_array_equal(png, np.round(shown.image * 255).astype(np.uint8))
    # the mirrored storage was undone: the PNG matches the phantom as drawn
    phantom = synth.chest_phantom((160, 144), seed=3)
    assert float(np.abs(png / 255.0 - phantom).mean()) < 0.01
    text = capsys.readouterr().out
    assert f"flags: {FLAG_ORIENTATION_CORRECTED}" in text
    assert "orientation: fliplr" in text
    assert "voi: window[0] LINEAR" in text


def test_render_size_uses_the_model_resize(mono1_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.png"
    assert main(["render", str(mono1_file), "-o", str(out), "--size", "64", "--no-fast-path"]) == 0
    png = _png(out)
    assert png.shape == (64, 64)
    image = load_image(mono1_file).display.image
    expected = np.round(np.clip(resize_image(image, 64), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(png, expected)
    # the CLI's MONAI-free resize is the model's resize
    np.testing.assert_array_equal(resize_display(image, (64, 48)), resize_image(image, (64, 48)))


def test_render_json_and_inversion_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phantom = synth.chest_phantom((160, 160), seed=5)
    # the header lies: MONOCHROME1 over MONOCHROME2 pixels
    ds = synth.make_dataset(phantom, bits_stored=8, window=None, presentation_lut_shape=None)
    ds.PhotometricInterpretation = "MONOCHROME1"
    src = tmp_path / "liar.dcm"
    synth.write(ds, src)
    out = tmp_path / "liar.png"
    assert main(["render", str(src), "-o", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["flags"] == [FLAG_CONTENT_INVERTED]
    assert record["shape"] == [160, 160] and record["source_shape"] == [160, 160]
    assert any(s.startswith("content:") for s in record["steps"])
    corrected = _png(out) / 255.0
    assert float(np.abs(corrected - phantom).mean()) < 0.01
    assert main(["render", str(src), "-o", str(out), "--inversion", "flag"]) == 0
    assert f"flags: {FLAG_CONTENT_INVERTED}" in capsys.readouterr().out
    assert float(np.abs(_png(out) / 255.0 - (1 - phantom)).mean()) < 0.01
    flagged = load_image(src, config=IngestConfig(pixels=PixelPolicy(inversion="flag"))).display
    np.testing.assert_array_equal(_png(out), np.round(flagged.image * 255).astype(np.uint8))


def test_render_exit_codes(mono1_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(tmp_path / "missing.dcm"), "-o", str(tmp_path / "x.png")]) == 2
    assert main(["render", str(mono1_file), "-o", str(tmp_path / "x.png"), "--size", "0"]) == 2
    assert main(["render", str(mono1_file)]) == 2  # -o is required
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(mono1_file.read_bytes()[:-5000])
    assert main(["render", str(truncated), "-o", str(tmp_path / "t.png")]) == 1
    assert not (tmp_path / "t.png").exists()
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("not a DICOM file\n" * 50)
    assert main(["render", str(not_dicom), "-o", str(tmp_path / "n.png")]) == 1
    assert main(["render", str(mono1_file), "-o", str(tmp_path / "no" / "such" / "dir.png")]) == 1
    err = capsys.readouterr().err
    assert "chexdcm render: error:" in err


def test_render_real_lying_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = shared_path("dicom", "chest", "DX_J2K_0Padding.dcm")
    out = tmp_path / "dx.png"
    assert main(["render", str(src), "-o", str(out), "--size", "256"]) == 0
    assert _png(out).shape == (256, 256)
    text = capsys.readouterr().out
    assert FLAG_WINDOW_OUTSIDE_DATA in text and FLAG_CONTENT_INVERTED in text
    assert "orientation: flipud" in text
