"""Reduced-resolution decoding (JPEG 2000 levels, JPEG DCT scaling) against the full decode.

The measure is the one that matters: the mean absolute difference of the 224x224 model
input built from the fast and from the full-resolution stored values (same linear map to
[0, 1]), as a fraction of the input's range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000, UID, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from chexnet_dicom.dicom.budget import area_reduce
from chexnet_dicom.dicom.decode import StoredPixels, decode_stored, trim_after_eoc
from tests.helpers.decode import compressed, model_input_mad, phantom, roundtrip, to_unit

TARGET = 256


def _mad(full: StoredPixels, fast: StoredPixels) -> float:
    lo, hi = float(full.array.min()), float(full.array.max())
    return model_input_mad(to_unit(full.array, lo, hi), to_unit(fast.array, lo, hi))


def _both(ds: Dataset) -> tuple[StoredPixels, StoredPixels]:
    full = decode_stored(ds, target_size=TARGET, fast_path=False)
    fast = decode_stored(ds, target_size=TARGET)
    return full, fast


@pytest.mark.parametrize(
    ("syntax", "bits", "signed", "path"),
    [
        (JPEG2000Lossless, 12, False, "j2k-reduce-4"),
        (JPEG2000Lossless, 15, False, "j2k-reduce-4"),
        (JPEG2000Lossless, 16, False, "j2k-reduce-4"),
        (JPEG2000Lossless, 12, True, "j2k-reduce-4"),
        (JPEG2000, 12, False, "j2k-reduce-4"),
        (JPEGBaseline8Bit, 8, False, "jpeg-draft-4"),
    ],
)
def test_fast_matches_full(syntax: UID, bits: int, signed: bool, path: str) -> None:
    vals = phantom(1040, 1100, bits=bits, signed=signed, seed=bits)
    ds = roundtrip(compressed(vals, syntax, bits_stored=bits, signed=signed))
    full, fast = _both(ds)
    assert full.path == "full" and full.factor == 1
    assert fast.path == path and fast.factor == 4
    assert fast.array.shape == (260, 275)
    # values come back in the stored range (Pillow's widening to 8/16 bits undone)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    assert lo <= int(fast.array.min()) and int(fast.array.max()) <= hi
    block = full.array[:1040, :1100].astype(np.float64).reshape(260, 4, 275, 4).mean(axis=(1, 3))
    assert abs(float(fast.array.mean()) - float(block.mean())) < 0.01 * (hi - lo)
    assert _mad(full, fast) < 0.01


def test_openjpeg_rounding_of_odd_sizes() -> None:
    """Pillow rounds reduced sizes half-up, OpenJPEG up: 1029/4 -> 258 rows, not 257."""
    vals = phantom(1029, 1041, bits=12)
    ds = compressed(vals, JPEG2000Lossless, bits_stored=12)
    full, fast = _both(ds)
    assert fast.path == "j2k-reduce-4"
    assert fast.array.shape == (258, 261)
    assert _mad(full, fast) < 0.01


def test_smallest_level_still_at_least_target() -> None:
    ds = compressed(phantom(2048, 1100, bits=12), JPEG2000Lossless, bits_stored=12)
    out = decode_stored(ds, target_size=256)
    assert out.factor == 4  # 1100 / 8 < 256
    assert min(out.array.shape) >= 256
    assert decode_stored(ds, target_size=600).factor == 1
    assert decode_stored(ds, target_size=512).factor == 2


@pytest.mark.parametrize("kwargs", [{"fast_path": False}, {"target_size": None}])
def test_fast_path_switch(kwargs: dict[str, object]) -> None:
    ds = compressed(phantom(600, 600, bits=12), JPEG2000Lossless, bits_stored=12)
    args: dict[str, object] = {"target_size": TARGET, **kwargs}
    out = decode_stored(ds, **args)  # type: ignore[arg-type]
    assert (out.path, out.factor, out.array.shape) == ("full", 1, (600, 600))


@pytest.mark.parametrize("syntax", [JPEGLSLossless, RLELossless])
def test_codecs_without_levels_area_reduce(syntax: UID) -> None:
    """JPEG-LS and RLE decode fully, then reduce in the stored integer type (issue 17.6):
    the model input stays within the 1% the JPEG 2000 fast path accepts."""
    ds = compressed(phantom(600, 520, bits=12), syntax, bits_stored=12)
    full, fast = _both(ds)
    assert (full.path, full.factor) == ("full", 1)
    assert (fast.path, fast.factor, fast.array.shape) == ("full+area-reduce-2", 2, (300, 260))
    assert fast.array.dtype == full.array.dtype
    np.testing.assert_array_equal(fast.array, area_reduce(full.array, 2))
    assert _mad(full, fast) < 0.01


def test_signedness_mismatch_falls_back() -> None:
    """An unsigned codestream in a signed image: averaging two's complement patterns
    would be wrong, so the full decode (with pydicom's sign correction) runs."""
    vals = phantom(600, 600, bits=12)
    ds = compressed(vals, JPEG2000Lossless, bits_stored=12)
    ds.PixelRepresentation = 1
    out = decode_stored(ds, target_size=TARGET)
    assert out.path == "fallback-full:j2k-signedness-differs-from-header+area-reduce-2"
    assert out.factor == 2 and out.array.shape == (300, 300)


def test_wide_codestream_for_narrow_bits_stored() -> None:
    """A 16-bit stream holding 12-bit data (real Kakadu files do this) uses the fast path."""
    vals = phantom(600, 600, bits=12)
    ds = compressed(vals, JPEG2000Lossless, bits_stored=16)
    ds.BitsStored, ds.HighBit = 12, 11
    full, fast = _both(ds)
    assert fast.path == "j2k-reduce-2"
    assert int(fast.array.max()) <= 4095
    assert _mad(full, fast) < 0.01


def test_wide_codestream_with_high_bits_falls_back() -> None:
    vals = phantom(600, 600, bits=12) + 8192  # bit 13 set everywhere: masked by the full path
    ds = compressed(vals, JPEG2000Lossless, bits_stored=16)
    ds.BitsStored, ds.HighBit = 12, 11
    out = decode_stored(ds, target_size=TARGET)
    assert out.path == "fallback-full:j2k-values-above-bits-stored-12+area-reduce-2"
    np.testing.assert_array_equal(out.array, area_reduce((vals - 8192).astype(out.array.dtype), 2))


# --------------------------------------------------------------------------- real files


@pytest.mark.parametrize(
    ("name", "path", "bits"),
    [
        ("966_fixed.dcm", "j2k-reduce-4", 12),  # JPEG 2000 lossless, 12-bit
        ("RG1_J2KI.dcm", "j2k-reduce-4", 15),  # JPEG 2000 lossy, 15-bit
        ("siim_6904.dcm", "jpeg-draft-4", 8),  # JPEG baseline
    ],
)
def test_real_fast_path_close_to_full(shared_dicom: Path, name: str, path: str, bits: int) -> None:
    ds = pydicom.dcmread(shared_dicom / "chest" / name)
    assert int(ds.BitsStored) == bits
    full, fast = _both(ds)
    assert fast.path == path
    assert int(fast.array.max()) < (1 << bits)
    assert _mad(full, fast) < 0.015


def test_real_padding_byte_trimmed(shared_dicom: Path) -> None:
    """This 16-bit DX stream has an odd length, so its frame ends with a padding byte after
    the EOC marker, which Pillow refused at a reduced level (issue 17.4): trimmed, the
    fast path applies and stays close to the full decode."""
    ds = pydicom.dcmread(shared_dicom / "chest" / "DX_J2K_0Padding.dcm")
    full, fast = _both(ds)
    assert fast.path == "j2k-reduce-4"
    assert _mad(full, fast) < 0.015


def test_trim_after_eoc() -> None:
    assert trim_after_eoc(b"\xff\x4f...\xff\xd9\x00") == b"\xff\x4f...\xff\xd9"
    assert trim_after_eoc(b"\xff\x4f...\xff\xd9") == b"\xff\x4f...\xff\xd9"
    assert trim_after_eoc(b"\xff\x4f...\x12\x00") == b"\xff\x4f...\x12\x00"  # no EOC: unchanged


def test_real_wide_kakadu_stream(shared_dicom: Path) -> None:
    ds = pydicom.dcmread(shared_dicom / "other_xray" / "CR_Kakadu_J2K.dcm")
    full, fast = _both(ds)
    assert fast.path == "j2k-reduce-8" and int(fast.array.max()) <= 4095
    assert _mad(full, fast) < 0.015
