"""The real chest corpus gives sane display images; the lying headers are caught.

Measured on every file of ``../shared/data/dicom/chest``: lung fields darker than the
mediastinum, head up, and for the two files whose headers lie, the flags and the
corrected result.  The content-inversion check is validated both ways on the 500 NIH
ChestX-ray14 PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexnet_dicom.config import IngestConfig, PixelPolicy
from chexnet_dicom.dicom.decode import StoredPixels
from chexnet_dicom.dicom.flags import (
    FLAG_CONTENT_INVERTED,
    FLAG_ORIENTATION_CORRECTED,
    FLAG_ORIENTATION_SWAPPED,
    FLAG_WINDOW_OUTSIDE_DATA,
)
from chexnet_dicom.dicom.load import load_image
from chexnet_dicom.dicom.pixels import DisplayImage, render
from chexnet_dicom.dicom.polarity import INVERSION_MARGIN, chest_content_features, inversion_score
from chexnet_dicom.testing import synth
from tests.helpers.shared import shared_path

CHEST = [
    "RG1_J2KI.dcm",
    "966_fixed.dcm",
    "DX_J2K_0Padding.dcm",
    "CR-MONO1-10-chest.dcm",
    "siim_6904.dcm",
    "siim_6904_fake_monochrome1.dcm",
    "nih_gcloud_no_finding.dcm",
]

_CACHE: dict[tuple[str, int | None], DisplayImage] = {}


def shown(name: str, target_size: int | None = None) -> DisplayImage:
    key = (name, target_size)
    if key not in _CACHE:
        _CACHE[key] = load_image(shared_path("dicom", "chest", name), target_size=target_size).display
    return _CACHE[key]


def _thumb(img: np.ndarray, side: int = 128) -> np.ndarray:
    im = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F")
    return np.asarray(im.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float64)


def anatomy(img: np.ndarray) -> dict[str, float]:
    """Independent measurements (not the library's) on a 128x128 thumbnail."""
    t = _thumb(img)
    lateral = np.concatenate([t[:, 20:44], t[:, 84:108]], axis=1)  # lung columns
    central = t[:, 56:72]  # mediastinum / spine
    upper = slice(32, 58)  # upper lung fields
    return {
        # upper lung fields darker than the mediastinum at the same height
        "upper_lungs_vs_mediastinum": float(central[upper].mean() - lateral[upper].mean()),
        # head up: the lateral bands are denser (brighter) at the bottom (abdomen)
        # than at the top (apices, shoulders and air above them)
        "bottom_vs_top": float(lateral[102:122].mean() - lateral[6:26].mean()),
        # the bright strip is central: its column lies in the middle third
        "bright_column": float(
            np.argmax(np.convolve(t[32:90].mean(axis=0), np.ones(9) / 9, "same")[10:-10]) + 10
        )
        / 128,
    }


@pytest.mark.parametrize("name", CHEST)
def test_every_chest_file_is_sane(name: str) -> None:
    d = shown(name)
    img = d.image
    assert img.dtype == np.float32 and img.ndim == 2
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert float(img.std()) > 0.1  # not a blank or saturated image
    m = anatomy(img)
    assert m["upper_lungs_vs_mediastinum"] > 0.08, (name, m)
    assert m["bottom_vs_top"] > 0.05, (name, m)
    assert 1 / 3 < m["bright_column"] < 2 / 3, (name, m)
    med, base = chest_content_features(img)
    assert med > 0.1 and base > 0.05, (name, med, base)
    assert {"steps", "flags", "decode_path", "voi"} <= set(d.provenance)


@pytest.mark.parametrize(
    "name", [n for n in CHEST if n not in ("DX_J2K_0Padding.dcm", "siim_6904_fake_monochrome1.dcm")]
)
def test_honest_files_raise_no_flag(name: str) -> None:
    assert shown(name).flags == []


def test_dx_j2k_window_polarity_and_orientation_lies_are_caught() -> None:
    d = shown("DX_J2K_0Padding.dcm")
    assert set(d.flags) == {
        FLAG_WINDOW_OUTSIDE_DATA,
        FLAG_ORIENTATION_SWAPPED,
        FLAG_ORIENTATION_CORRECTED,
        FLAG_CONTENT_INVERTED,
    }
    assert "percentile window" in d.provenance["voi"]
    # H\L read in swapped order (L\H) is a vertical flip: no 90 degree turn
    assert d.orientation_ops == ("flipud",)
    assert d.image.shape == d.source_shape
    # the literal header: window gives a white image, H\L would turn the chest sideways
    literal = load_image(
        shared_path("dicom", "chest", "DX_J2K_0Padding.dcm"),
        config=IngestConfig(
            pixels=PixelPolicy(window_fallback=False, inversion="ignore", orientation="ignore")
        ),
    ).display
    assert float(literal.image.mean()) > 0.99
    # measured: lung fields darker than the central strip after the corrections
    m = anatomy(d.image)
    assert m["upper_lungs_vs_mediastinum"] > 0.2


def test_fake_monochrome1_is_flagged_and_corrected_to_the_original() -> None:
    fake = shown("siim_6904_fake_monochrome1.dcm")
    real = shown("siim_6904.dcm")
    assert fake.flags == [FLAG_CONTENT_INVERTED]
    assert fake.provenance["inversion_score"] < -INVERSION_MARGIN
    np.testing.assert_allclose(fake.image, real.image, atol=1e-6)
    flag_only = load_image(
        shared_path("dicom", "chest", "siim_6904_fake_monochrome1.dcm"),
        config=IngestConfig(pixels=PixelPolicy(inversion="flag")),
    ).display
    assert flag_only.flags == [FLAG_CONTENT_INVERTED]
    np.testing.assert_allclose(flag_only.image, 1.0 - real.image, atol=1e-6)


@pytest.mark.parametrize("name", CHEST)
def test_fast_path_keeps_flags_and_image(name: str) -> None:
    full = shown(name)
    fast = shown(name, target_size=256)
    assert fast.flags == full.flags
    assert fast.orientation_ops == full.orientation_ops
    assert min(fast.image.shape) >= 256 or fast.decode_factor == 1
    a, b = _thumb(full.image, 256), _thumb(fast.image, 256)
    assert float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) > 0.99
    assert float(np.abs(a - b).mean()) < 0.015
    back = fast.to_source_grid(fast.image)
    assert back.shape == full.source_shape


def _nih_images(nih: Path) -> list[Path]:
    files = sorted((nih / "images").glob("*.png"))
    if not files:
        pytest.skip("no NIH PNGs in ../shared/data/nih/images")
    return files


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def test_inversion_check_on_nih_both_ways(nih_dir: Path) -> None:
    files = _nih_images(nih_dir)
    normal = np.array([inversion_score(_grey(f)) for f in files])
    inverted = np.array([inversion_score(1.0 - _grey(f)) for f in files])
    flagged_normal = [f.name for f, s in zip(files, normal, strict=True) if s < -INVERSION_MARGIN]
    assert flagged_normal == []  # no published image is called inverted
    detected = float(np.mean(inverted < -INVERSION_MARGIN))
    assert detected > 0.85, detected  # 91 % measured on the 500 test images


def test_nih_pngs_behind_lying_and_honest_headers(nih_dir: Path) -> None:
    files = _nih_images(nih_dir)[::25]
    caught = 0
    for f in files:
        grey = np.round(_grey(f) * 255).astype(np.uint8)
        truth = grey.astype(np.float32) / 255.0
        for photometric, lies in (("MONOCHROME2", False), ("MONOCHROME1", True)):
            ds = synth.make_dataset(
                grey, bits_stored=8, photometric=photometric, window=None, presentation_lut_shape=None
            )
            d = render(ds, StoredPixels(array=grey))
            flagged = FLAG_CONTENT_INVERTED in d.flags
            if not lies:
                assert not flagged, (f.name, d.provenance["inversion_score"])
            caught += flagged
            # corrected when caught; the header's (inverted) reading otherwise
            expected = truth if flagged or not lies else 1.0 - truth
            np.testing.assert_allclose(d.image, expected, atol=1e-5)
    assert caught >= 0.85 * len(files), (caught, len(files))
