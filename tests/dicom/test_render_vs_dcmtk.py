"""Rendering agrees with an external renderer: dcmtk ``dcmj2pnm``.

dcmtk 3.6.7 has no JPEG 2000 decoder, so every compressed file is first decompressed
with ``gdcmconv --raw``.  dcmj2pnm renders with the same VOI choice (``+Wi 1`` for the
first window, ``+Wl 1`` for the first VOI LUT, ``+Wm`` for min/max when the header has
no VOI); both images are compared at 256x256.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

from chexnet_dicom.config import IngestConfig, PixelPolicy
from chexnet_dicom.dicom.load import load_image
from chexnet_dicom.dicom.read import read_dataset
from chexnet_dicom.testing import synth
from tests.helpers.shared import require_tool, shared_path

SIDE = 256

#: chest files whose header does not lie
HONEST = [
    "RG1_J2KI.dcm",
    "966_fixed.dcm",
    "CR-MONO1-10-chest.dcm",
    "siim_6904.dcm",
    "nih_gcloud_no_finding.dcm",
]


def _small(a: np.ndarray) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F")
    return np.asarray(img.resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.float64)


def dcmtk_render(src: Path, tmp: Path, voi: list[str]) -> np.ndarray:
    gdcmconv = require_tool("gdcmconv")
    dcmj2pnm = require_tool("dcmj2pnm")
    raw = tmp / (src.stem + ".raw.dcm")
    subprocess.run([gdcmconv, "--raw", str(src), str(raw)], check=True, capture_output=True, timeout=120)
    out = tmp / (src.stem + ".pgm")
    subprocess.run(
        [dcmj2pnm, "--quiet", *voi, "--write-16-bit-pnm", str(raw), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Image.open(out) as im:
        arr = np.asarray(im, dtype=np.float64)
    return arr / 65535.0


def _voi_args(path: Path, voi: str) -> list[str]:
    """dcmj2pnm options selecting the VOI that ``voi`` (our provenance) says was used."""
    ds = read_dataset(path, stop_before_pixels=True)
    if voi.startswith("VOI LUT[0]"):
        assert "VOILUTSequence" in ds
        return ["+Wl", "1"]
    if voi.startswith("window[0]"):
        assert "WindowCenter" in ds and "WindowWidth" in ds
        return ["+Wi", "1"]
    if voi.startswith("none"):
        return ["-W"]  # no VOI transformation
    assert voi.startswith("min-max"), voi
    return ["+Wm"]


def _compare(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    a, b = _small(ours), _small(theirs)
    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return corr, float(np.abs(a - b).mean())


@pytest.mark.parametrize("name", HONEST)
def test_real_chest_file_matches_dcmtk(name: str, tmp_path: Path) -> None:
    path = shared_path("dicom", "chest", name)
    shown = load_image(path).display
    # an honest header: no sanity check fires, no geometric change
    assert shown.flags == [], shown.provenance["steps"]
    assert shown.orientation_ops == ()
    assert shown.image.shape == shown.source_shape
    theirs = dcmtk_render(path, tmp_path, _voi_args(path, shown.provenance["voi"]))
    assert theirs.shape == shown.image.shape
    corr, mad = _compare(shown.image, theirs)
    assert corr > 0.99, (name, corr)
    assert mad < 0.01, (name, mad)


SYNTH_CASES: dict[str, dict[str, object]] = {
    "mono1-12bit-window": {"photometric": "MONOCHROME1", "bits_stored": 12},
    "mono1-inverse-shape": {
        "photometric": "MONOCHROME1",
        "bits_stored": 12,
        "presentation_lut_shape": "INVERSE",
    },
    "mono2-rescale-signed": {
        "modality": "CR",
        "bits_stored": 14,
        "pixel_representation": 1,
        "rescale_slope": 2.0,
        "rescale_intercept": -100.0,
    },
    "sigmoid": {"bits_stored": 12, "voi_lut_function": "SIGMOID"},
    "voi-lut-sequence": {"bits_stored": 12, "voi_lut": True},
    "modality-lut-sequence": {"modality": "CR", "bits_stored": 12, "modality_lut": True},
    "narrow-window": {"bits_stored": 12, "window": (1800.0, 900.0)},
    "no-voi-12bit": {"bits_stored": 12, "window": None},
}


@pytest.mark.parametrize("case", sorted(SYNTH_CASES))
def test_synthetic_lut_paths_match_dcmtk(case: str, tmp_path: Path) -> None:
    phantom = synth.chest_phantom((300, 280), seed=7)
    ds = synth.make_dataset(phantom, **SYNTH_CASES[case])  # type: ignore[arg-type]
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    path = tmp_path / f"{case}.dcm"
    synth.write(ds, path)
    shown = load_image(path, config=IngestConfig(pixels=PixelPolicy(inversion="flag"))).display
    assert shown.flags == [], shown.provenance["steps"]
    theirs = dcmtk_render(path, tmp_path, _voi_args(path, shown.provenance["voi"]))
    corr, mad = _compare(shown.image, theirs)
    assert corr > 0.999, (case, corr)
    assert mad < 0.001, (case, mad)
