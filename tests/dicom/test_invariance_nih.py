"""Invariance on real pixels: an NIH PNG written as DICOM in many ways gives the same model input.

Each NIH ChestX-ray14 PNG (``../shared/data/nih/images``) is written as DICOM with
:mod:`chexnet_dicom.testing.synth` in ways that exercise every step of the grey-scale
pipeline and every codec (MONOCHROME1 12-bit with a window, 16-bit with rescale
slope/intercept, VOI LUT Sequence, signed data, JPEG 2000, JPEG-LS, RLE, implicit VR
without file meta, a 2048x2048 upsampled JPEG 2000, and the reduced-resolution fast
path).  The 224x224 model input of every variant must match the PNG's: mean absolute
difference <= 0.5 % of the input range for lossless same-size variants, <= 1.5 % for
the upsampled and fast-path ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from chexnet_dicom.config import IngestConfig, PixelPolicy
from chexnet_dicom.testing import synth
from chexnet_dicom.transforms import load_chest_image, resize_image
from tests.helpers.decode import model_input_mad
from tests.helpers.invariance import (
    Builder,
    encoded,
    jpeg_baseline_8bit,
    mono1_window,
    rescale16,
    signed12,
    voi_lut,
)

LOSSLESS = 0.005
APPROX = 0.015

#: How many NIH images (the first by name; they include 00000100_000.png, one of the six
#: RGBA files of the published dataset).
N_IMAGES = 8

#: name -> (builder, tolerance, target_size for the fast path or None, write with file meta)
VARIANTS: dict[str, tuple[Builder, float, int | None, bool]] = {
    "mono1-12bit-window": (mono1_window, LOSSLESS, None, True),
    "rescale-16bit": (rescale16, LOSSLESS, None, True),
    "voi-lut-sequence": (voi_lut, LOSSLESS, None, True),
    "signed-12bit": (signed12, LOSSLESS, None, True),
    "j2k-lossless-mono1": (encoded(JPEG2000Lossless, mono1_window), LOSSLESS, None, True),
    "jpeg-ls-lossless": (encoded(JPEGLSLossless, rescale16), LOSSLESS, None, True),
    "rle-voi-lut": (encoded(RLELossless, voi_lut), LOSSLESS, None, True),
    "implicit-vr-no-meta": (encoded(ImplicitVRLittleEndian, mono1_window), LOSSLESS, None, False),
    "j2k-lossless-fast": (encoded(JPEG2000Lossless), APPROX, 256, True),
    "j2k-lossy-fast": (encoded(JPEG2000, j2k_ratio=10.0), APPROX, 256, True),
    "jpeg-baseline-fast": (jpeg_baseline_8bit, APPROX, 256, True),
}


@pytest.fixture(scope="module")
def nih_images(nih_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    paths = sorted((nih_dir / "images").glob("*.png"))[:N_IMAGES]
    assert len(paths) == N_IMAGES
    for path in paths:
        name = path.name
        disp = load_chest_image(path)
        assert disp.image.shape == (512, 512)
        out[name] = disp.image
    return out


def _dicom_input(
    tmp_path: Path, ds: Dataset, *, meta: bool, target: int | None, fast: bool
) -> tuple[np.ndarray, dict]:
    path = tmp_path / "v.dcm"
    synth.write(ds, path, with_meta=meta, preamble=meta)
    config = IngestConfig(pixels=PixelPolicy(fast_path=fast))
    disp = load_chest_image(path, config=config, target_size=target)
    return disp.image, disp.provenance


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_model_input_matches_png(
    tmp_path: Path, nih_images: dict[str, np.ndarray], variant: str
) -> None:
    build, tol, target, meta = VARIANTS[variant]
    worst = 0.0
    for seed, (name, png) in enumerate(nih_images.items()):
        ds = build(png, seed)
        img, prov = _dicom_input(tmp_path, ds, meta=meta, target=target, fast=True)
        assert not prov.get("flags"), f"{variant} {name}: unexpected flags {prov.get('flags')}"
        if target is not None:
            assert prov["decode_path"] != "full", f"{variant}: fast path not taken"
            assert not prov["decode_path"].startswith("fallback"), prov["decode_path"]
        mad = model_input_mad(png, img)
        worst = max(worst, mad)
        assert mad <= tol, f"{variant} {name}: model input differs by {100 * mad:.3f} % (limit {100 * tol} %)"
    assert worst > 0.0 or target is None  # a lossy/fast variant that matched exactly would be suspicious


def test_upsampled_2048_fast_and_full(tmp_path: Path, nih_images: dict[str, np.ndarray]) -> None:
    """2048x2048 12-bit JPEG 2000 (the size of a real DX): full decode and the fast path
    (resolution level 8 -> 256x256) both match the 512x512 PNG."""
    for seed, (name, png) in enumerate(list(nih_images.items())[:4]):
        big = np.clip(resize_image(png, 2048), 0.0, 1.0)
        ds = synth.encode(synth.make_dataset(big, bits_stored=12, seed=seed), JPEG2000Lossless)
        for fast in (True, False):
            img, prov = _dicom_input(tmp_path, ds, meta=True, target=256, fast=fast)
            assert prov["decode_path"] == ("j2k-reduce-8" if fast else "full")
            mad = model_input_mad(png, img)
            assert mad <= APPROX, f"{name} fast={fast}: model input differs by {100 * mad:.3f} %"
