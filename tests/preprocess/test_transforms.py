"""Model-input preparation and the image-loading MONAI transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.uid import JPEG2000Lossless

from chexnet_dicom.config import IngestConfig, PixelPolicy
from chexnet_dicom.dicom.pixels import DisplayImage
from chexnet_dicom.errors import CorruptPixelDataError, NotDicomError, UnsupportedInputError
from chexnet_dicom.model.card import Preprocessing
from chexnet_dicom.transforms import (
    LoadChestImaged,
    PrepareModelInputd,
    center_crop,
    image_to_grey,
    load_chest_image,
    prepare_model_input,
    resize_image,
    ten_crop,
)
from tests.helpers.decode import compressed, make_dataset, phantom

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# --------------------------------------------------------------------------- prepare_model_input


def test_prepare_model_input_shape_and_normalisation() -> None:
    img = np.full((300, 400), 0.5, dtype=np.float32)
    x = prepare_model_input(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], (0.5 - MEAN) / STD, rtol=1e-6)


def test_prepare_model_input_tencrop_order() -> None:
    img = np.zeros((256, 256), dtype=np.float32)
    img[0, 0] = 1.0  # top-left corner only in crop 0 and (mirrored) in crop 6
    x = prepare_model_input(img, tta="tencrop")
    assert x.shape == (10, 3, 224, 224)
    hot = [i for i in range(10) if x[i, 0].max() > (0.0 - MEAN[0]) / STD[0] + 1]
    assert hot == [0, 6]


def test_resize_keeps_row_column_order() -> None:
    img = np.zeros((100, 300), dtype=np.float32)
    img[:, :150] = 1.0  # left half bright
    out = resize_image(img, (50, 60))
    assert out.shape == (50, 60)
    assert out[:, :25].mean() > 0.99 and out[:, 35:].mean() < 0.01


def test_crops() -> None:
    img = np.arange(36, dtype=np.float32).reshape(6, 6)
    np.testing.assert_array_equal(center_crop(img, 2), [[14, 15], [20, 21]])
    crops = ten_crop(img, 2)
    np.testing.assert_array_equal(crops[0], img[:2, :2])
    np.testing.assert_array_equal(crops[5], img[:, ::-1][:2, :2])


# --------------------------------------------------------------------------- PNG modes


def _grey_ramp() -> np.ndarray:
    return np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (32, 1))


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16", "I"])
def test_image_to_grey_modes(mode: str) -> None:
    ramp = _grey_ramp()
    base = Image.fromarray(ramp, mode="L")
    if mode == "I;16":
        im = Image.fromarray(ramp.astype(np.uint16) * 257)
    elif mode == "I":
        im = Image.fromarray(ramp.astype(np.int32) * 257)
    else:
        im = base.convert(mode)
    assert im.mode == mode
    grey = image_to_grey(im)
    assert grey.dtype == np.float32 and grey.shape == ramp.shape
    np.testing.assert_allclose(grey, ramp / 255.0, atol=1e-5)


def test_image_to_grey_alpha_composited_over_black() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    grey = image_to_grey(Image.fromarray(rgba, mode="RGBA"))
    assert grey[0, 0] == 0.0
    assert grey[1, 1] == pytest.approx(200 / 255, abs=1e-6)


def test_image_to_grey_rejects_cmyk() -> None:
    with pytest.raises(UnsupportedInputError) as info:
        image_to_grey(Image.new("CMYK", (4, 4)))
    assert info.value.reason == "UNSUPPORTED_IMAGE"


def test_load_png_16_bit_and_format_sniffed(tmp_path: Path) -> None:
    vals = (np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)
    path = tmp_path / "no_suffix"
    Image.fromarray(vals).save(path, format="PNG")
    disp = load_chest_image(path)
    assert isinstance(disp, DisplayImage)
    assert disp.source_shape == (30, 40) and disp.provenance["decode_path"] == "png"
    np.testing.assert_allclose(disp.image, vals / 65535.0, atol=1e-6)


def test_truncated_png_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(phantom(64, 64, bits=8).astype(np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:80])
    with pytest.raises(CorruptPixelDataError, match="PNG image cannot be decoded"):
        load_chest_image(path)


def test_not_an_image_is_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not an image " * 20)
    with pytest.raises(NotDicomError):
        load_chest_image(path)


def test_real_nih_rgba_png_equals_grey(nih_dir: Path) -> None:
    rgba = nih_dir / "images" / "00000100_000.png"
    with Image.open(rgba) as im:
        assert im.mode == "RGBA"
        expected = np.asarray(im)[..., 0] / 255.0
    disp = load_chest_image(rgba)
    assert disp.image.shape == (512, 512)
    np.testing.assert_allclose(disp.image, expected, atol=1e-5)


# --------------------------------------------------------------------------- MONAI dict transforms


def _asymmetric_dicom(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 12-bit 300x200 DX whose top-left quadrant is brightest: catches transposition."""
    vals = phantom(300, 200, bits=12)
    vals[:60, :40] = 4095
    ds = make_dataset(vals, bits_stored=12)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    path = tmp_path / "img.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, vals


def test_load_chest_imaged_dicom_channel_first_not_transposed(tmp_path: Path) -> None:
    path, vals = _asymmetric_dicom(tmp_path)
    config = IngestConfig(pixels=PixelPolicy(inversion="ignore", orientation="ignore"))
    out = LoadChestImaged(keys="image", config=config)({"image": str(path), "label": 3})
    img = out["image"]
    assert img.shape == (1, 300, 200) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert img[0, :60, :40].mean() > 0.99
    meta = out["image_meta_dict"]
    assert meta["source_shape"] == (300, 200) and meta["decode_factor"] == 1
    assert meta["provenance"]["decode_path"] == "full"
    assert isinstance(meta["display"], DisplayImage)
    assert out["label"] == 3
    expected = (vals.astype(np.float32) - (2048 - 0.5)) / 4095 + 0.5  # PS3.3 LINEAR window
    np.testing.assert_allclose(img[0], np.clip(expected, 0, 1), atol=2e-3)


def test_load_chest_imaged_fast_path_target(tmp_path: Path) -> None:
    ds = compressed(phantom(1100, 1040, bits=12), JPEG2000Lossless, bits_stored=12)
    path = tmp_path / "j2k.dcm"
    ds.save_as(path, enforce_file_format=True)
    fast = LoadChestImaged("image", target_size=256)({"image": path})
    assert fast["image_meta_dict"]["decode_factor"] == 4
    assert fast["image"].shape == (1, 275, 260)
    off = IngestConfig(pixels=PixelPolicy(fast_path=False))
    full = LoadChestImaged("image", config=off, target_size=256)({"image": path})
    assert full["image_meta_dict"]["provenance"]["decode_path"] == "full"
    assert full["image"].shape == (1, 1100, 1040)


def test_load_then_prepare_png_and_equivalence(tmp_path: Path) -> None:
    grey = phantom(320, 300, bits=8).astype(np.uint8)
    png = tmp_path / "a.png"
    Image.fromarray(grey, mode="L").save(png)
    rgba = tmp_path / "b.png"
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), mode="RGBA").save(rgba)
    load = LoadChestImaged(keys=["a", "b"])
    prep = PrepareModelInputd.from_spec(["a", "b"], Preprocessing())
    out = prep(load({"a": png, "b": rgba}))
    assert out["a"].shape == (3, 224, 224)
    np.testing.assert_allclose(out["a"], out["b"], atol=1e-5)
    np.testing.assert_allclose(out["a"], prepare_model_input(grey / np.float32(255.0)), atol=1e-6)


def test_prepare_model_inputd_accepts_tensor_and_tencrop() -> None:
    img = torch.rand(1, 260, 250)
    out = PrepareModelInputd("x", tta="tencrop")({"x": img})
    assert out["x"].shape == (10, 3, 224, 224)
    np.testing.assert_allclose(out["x"], prepare_model_input(img[0].numpy(), tta="tencrop"), atol=1e-6)
    with pytest.raises(ValueError, match="needs a"):
        PrepareModelInputd("x")({"x": np.zeros((2, 8, 8), dtype=np.float32)})
