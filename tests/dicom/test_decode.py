"""Stored-value decoding: BitsStored masking, sign extension, codecs, typed errors.

The datasets are built in memory by :mod:`tests.helpers.decode`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.uid import (
    UID,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from chexnet_dicom.config import IngestLimits
from chexnet_dicom.dicom.decode import (
    decode_stored,
    mask_stored_bits,
    parse_j2k_header,
    parse_jpeg_header,
    transfer_syntax_of,
)
from chexnet_dicom.errors import CorruptPixelDataError, InputTooLargeError, UnsupportedInputError

JPEGXLLossless = UID("1.2.840.10008.1.2.4.110")

from tests.helpers.decode import compressed, make_dataset, phantom, roundtrip  # noqa: E402
from tests.helpers.shared import CHEST_FILES  # noqa: E402


def test_mask_stored_bits_unsigned_drops_high_bits() -> None:
    arr = np.array([0x0FFF, 0xF123, 0x1000], dtype=np.uint16)
    out = mask_stored_bits(arr, 12, signed=False)
    assert out.dtype == np.uint16
    assert out.tolist() == [0x0FFF, 0x0123, 0]


def test_mask_stored_bits_sign_extends() -> None:
    arr = np.array([0x0800, 0x07FF, 0xFFFF, 0xF801], dtype=np.uint16)
    out = mask_stored_bits(arr, 12, signed=True)
    assert out.dtype == np.int32
    assert out.tolist() == [-2048, 2047, -1, -2047]


def test_native_garbage_high_bits_masked() -> None:
    vals = phantom(32, 40, bits=12)
    raw = vals | (0xA << 12)  # overlay-like bits above BitsStored
    ds = roundtrip(make_dataset(raw, bits_stored=12))
    out = decode_stored(ds)
    assert out.path == "full" and out.factor == 1
    np.testing.assert_array_equal(out.array, vals)


def test_native_signed_12_bit_in_16_sign_extended() -> None:
    vals = phantom(32, 40, bits=12, signed=True)
    raw = (vals & 0xFFF) | 0x5000  # two's complement in 12 bits, junk above
    ds = make_dataset(raw.astype(np.uint16), bits_stored=12, signed=False)
    ds.PixelRepresentation = 1
    out = decode_stored(roundtrip(ds))
    assert out.array.min() < 0
    np.testing.assert_array_equal(out.array, vals)


# --------------------------------------------------------------------------- codecs


@pytest.mark.parametrize(
    ("syntax", "bits", "signed"),
    [
        (JPEG2000Lossless, 12, False),
        (JPEG2000Lossless, 15, False),
        (JPEG2000Lossless, 16, False),
        (JPEG2000Lossless, 12, True),
        (JPEGLSLossless, 12, False),
        (JPEGLSLossless, 12, True),
        (RLELossless, 12, False),
        (RLELossless, 16, True),
    ],
)
def test_lossless_codecs_decode_exactly(syntax: UID, bits: int, signed: bool) -> None:
    vals = phantom(48, 56, bits=bits, signed=signed)
    ds = roundtrip(compressed(vals, syntax, bits_stored=bits, signed=signed))
    out = decode_stored(ds, fast_path=False)
    assert out.transfer_syntax == syntax
    np.testing.assert_array_equal(out.array.astype(np.int64), vals)


def test_implicit_vr_without_file_meta() -> None:
    vals = phantom(20, 24, bits=10)
    ds = make_dataset(vals, bits_stored=10)
    buf = io.BytesIO()
    ds.file_meta = FileMetaDataset()
    ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=False)
    raw = buf.getvalue()
    assert raw[128:132] != b"DICM"
    back = pydicom.dcmread(io.BytesIO(raw), force=True)
    assert transfer_syntax_of(back) == ImplicitVRLittleEndian
    np.testing.assert_array_equal(decode_stored(back).array, vals)


def test_unsupported_codec_is_typed() -> None:
    ds = make_dataset(phantom(16, 16, bits=8), bits_stored=8)
    ds.PixelData = encapsulate([b"\xff\x0a" + b"\x00" * 30])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGXLLossless
    with pytest.raises(UnsupportedInputError, match="cannot be decoded here") as info:
        decode_stored(ds)
    assert info.value.reason == "UNSUPPORTED_CODEC"


def test_truncated_native_pixel_data_is_corrupt() -> None:
    ds = make_dataset(phantom(32, 32, bits=12), bits_stored=12)
    ds.PixelData = ds.PixelData[:-100]
    with pytest.raises(CorruptPixelDataError, match="truncated or its compressed stream is corrupt"):
        decode_stored(ds)


@pytest.mark.parametrize("fast", [True, False])
def test_truncated_j2k_codestream_is_corrupt(fast: bool) -> None:
    ds = compressed(phantom(600, 600, bits=12), JPEG2000Lossless, bits_stored=12)
    frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])
    with pytest.raises(CorruptPixelDataError, match="could not be decoded"):
        decode_stored(ds, target_size=256, fast_path=fast)


def test_codestream_size_must_match_header() -> None:
    ds = compressed(phantom(64, 80, bits=12), JPEG2000Lossless, bits_stored=12)
    ds.Rows = 60
    with pytest.raises(CorruptPixelDataError, match="codestream is 64x80 but the header declares 60x80"):
        decode_stored(ds, fast_path=False)


def test_codestream_above_caps_costs_nothing() -> None:
    ds = compressed(phantom(64, 80, bits=12), JPEG2000Lossless, bits_stored=12)
    ds.Rows, ds.Columns = 16, 16  # header claims a tiny image, the stream is larger
    with pytest.raises(InputTooLargeError, match="codestream declares 64x80"):
        decode_stored(ds, limits=IngestLimits(max_rows=32, max_columns=32))


def test_header_caps_checked_before_decode() -> None:
    ds = make_dataset(phantom(16, 16, bits=12), bits_stored=12)
    ds.Rows = 40000  # the pixel data is far too short: only the caps may answer
    with pytest.raises(InputTooLargeError):
        decode_stored(ds)


def test_missing_pixel_data_is_corrupt() -> None:
    ds = make_dataset(phantom(8, 8, bits=8), bits_stored=8)
    del ds.PixelData
    with pytest.raises(CorruptPixelDataError, match=r"no .*Pixel Data"):
        decode_stored(ds)


def test_colour_is_not_decoded() -> None:
    ds = make_dataset(phantom(8, 8, bits=8), bits_stored=8)
    ds.SamplesPerPixel = 3
    with pytest.raises(UnsupportedInputError) as info:
        decode_stored(ds)
    assert info.value.reason == "COLOR"


def test_header_parsers_read_real_streams() -> None:
    ds = compressed(phantom(50, 70, bits=12), JPEG2000Lossless, bits_stored=12)
    hdr = parse_j2k_header(get_frame(ds.PixelData, 0, number_of_frames=1))
    assert hdr is not None
    assert (hdr.height, hdr.width, hdr.components, hdr.precision, hdr.signed) == (50, 70, 1, 12, False)
    assert hdr.levels >= 1
    jpg = compressed(phantom(50, 70, bits=8), JPEGBaseline8Bit, bits_stored=8)
    jh = parse_jpeg_header(get_frame(jpg.PixelData, 0, number_of_frames=1))
    assert jh is not None and (jh.height, jh.width, jh.components, jh.precision) == (50, 70, 1, 8)
    assert parse_j2k_header(b"\xff\x4f\xff\x51\x00") is None
    assert parse_jpeg_header(b"not a jpeg") is None


# --------------------------------------------------------------------------- real files


@pytest.mark.parametrize("name", CHEST_FILES)
def test_real_chest_full_decode_within_bits_stored(shared_dicom: Path, name: str) -> None:
    ds = pydicom.dcmread(shared_dicom / "chest" / name, force=True)
    out = decode_stored(ds, fast_path=False)
    assert out.array.shape == (int(ds.Rows), int(ds.Columns))
    bits = int(ds.BitsStored)
    assert int(out.array.min()) >= 0 and int(out.array.max()) < (1 << bits)
    assert float(out.array.std()) > 0


def test_real_broken_codestream_is_corrupt(shared_dicom: Path) -> None:
    ds = pydicom.dcmread(shared_dicom / "broken" / "966_broken_codestream.dcm")
    for fast in (True, False):
        with pytest.raises(CorruptPixelDataError, match="JPEG 2000"):
            decode_stored(ds, target_size=256, fast_path=fast)


def test_real_jpeg_xl_is_unsupported_codec(shared_dicom: Path) -> None:
    ds = pydicom.dcmread(shared_dicom / "non_xray" / "NM_jpeg_xl_unsupported.dcm")
    with pytest.raises(UnsupportedInputError) as info:
        decode_stored(ds)
    assert info.value.reason == "UNSUPPORTED_CODEC"
