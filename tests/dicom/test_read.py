"""Safe reading: encodings, caps before pixel decode, bombs, typed errors."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from chexnet_dicom.config import IngestLimits
from chexnet_dicom.dicom.read import (
    check_header_caps,
    codec_supported,
    decodable_transfer_syntaxes,
    decoded_nbytes,
    read_dataset,
)
from chexnet_dicom.errors import (
    CorruptHeaderError,
    CorruptPixelDataError,
    InputError,
    InputTooLargeError,
    NotDicomError,
)
from chexnet_dicom.testing import synth

MiB = 1024 * 1024


def _chest(rows: int = 64, cols: int = 48, **kw: object) -> Dataset:
    return synth.make_dataset(synth.chest_phantom((rows, cols), seed=1), **kw)  # type: ignore[arg-type]


def _bytes(ds: Dataset, tmp_path: Path, name: str = "x.dcm", **kw: bool) -> bytes:
    path = tmp_path / name
    synth.write(ds, path, **kw)
    return path.read_bytes()


# --------------------------------------------------------------------------------------
# Encodings: the same pixels whatever the file layout
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "with_meta", "preamble"),
    [
        (ExplicitVRLittleEndian, True, True),
        (ExplicitVRLittleEndian, True, False),
        (ImplicitVRLittleEndian, True, True),
        (ImplicitVRLittleEndian, False, False),
        (ExplicitVRLittleEndian, False, False),
        (ExplicitVRBigEndian, True, True),
        (ExplicitVRBigEndian, False, False),
        (DeflatedExplicitVRLittleEndian, True, True),
        (RLELossless, True, True),
        (JPEG2000Lossless, True, True),
    ],
)
def test_layouts_read_back_identically(tmp_path: Path, ts: str, with_meta: bool, preamble: bool) -> None:
    base = _chest()
    ds = synth.encode(base, ts)
    data = _bytes(ds, tmp_path, with_meta=with_meta, preamble=preamble)
    out = read_dataset(data)
    assert out.file_meta.TransferSyntaxUID == ts
    assert out.Rows == base.Rows and out.PatientName == base.PatientName
    assert out.ViewPosition == "PA"
    np.testing.assert_array_equal(out.pixel_array, base.pixel_array)
    header = read_dataset(data, stop_before_pixels=True)
    assert "PixelData" not in header and header.Columns == base.Columns


def test_sources_path_bytes_and_streams(tmp_path: Path) -> None:
    base = _chest()
    data = _bytes(base, tmp_path)
    path = tmp_path / "x.dcm"

    class OneWay(io.RawIOBase):
        def __init__(self, b: bytes) -> None:
            self._b = io.BytesIO(b)

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self._b.read(n)

    for src in (path, str(path), data, bytearray(data), io.BytesIO(data), OneWay(data)):
        ds = read_dataset(src)  # type: ignore[arg-type]
        assert ds.SOPInstanceUID == base.SOPInstanceUID
    # a stream is read from its current position
    stream = io.BytesIO(b"junk" + data)
    stream.seek(4)
    assert read_dataset(stream).Rows == base.Rows


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_files_match_pydicom(shared_dicom: Path) -> None:
    """Every readable corpus file gives the same header as pydicom's own reader."""
    checked = 0
    for path in sorted(shared_dicom.glob("*/*.dcm")):
        if path.parent.name == "broken":
            continue
        ours = read_dataset(path, stop_before_pixels=True)
        ref = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        assert [e.tag for e in ours] == [e.tag for e in ref], path.name
        for tag in (0x00080016, 0x00080060, 0x00280010, 0x00280011, 0x00280004):
            if tag in ref:
                assert ours[tag].value == ref[tag].value, (path.name, hex(tag))
        checked += 1
    assert checked >= 25


def test_real_no_meta_implicit_file_decodes(shared_dicom: Path) -> None:
    ds = read_dataset(shared_dicom / "chest" / "CR-MONO1-10-chest.dcm")
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert ds.pixel_array.shape == (440, 440)


def test_real_big_endian_and_deflated(shared_dicom: Path) -> None:
    be = read_dataset(shared_dicom / "non_xray" / "ExplVR_BigEnd.dcm")
    assert be.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    ref = pydicom.dcmread(shared_dicom / "non_xray" / "ExplVR_BigEnd.dcm")
    np.testing.assert_array_equal(be.pixel_array, ref.pixel_array)
    dfl = read_dataset(shared_dicom / "non_xray" / "image_dfl.dcm")
    ref = pydicom.dcmread(shared_dicom / "non_xray" / "image_dfl.dcm")
    np.testing.assert_array_equal(dfl.pixel_array, ref.pixel_array)


# --------------------------------------------------------------------------------------
# Caps and bombs
# --------------------------------------------------------------------------------------


def _bomb_header(rows: int = 60000, cols: int = 60000, frames: int | None = None) -> Dataset:
    ds = _chest()
    ds.Rows, ds.Columns = rows, cols
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.PixelData = b"\x00" * 64  # the header lies: almost nothing follows
    return ds


def test_decompression_bomb_header_costs_nothing(tmp_path: Path) -> None:
    base = synth.encode(_chest(), JPEG2000Lossless)
    base.Rows, base.Columns = 60000, 60000  # a tiny codestream declaring 3.6 Gpixel
    data = _bytes(base, tmp_path)
    for sbp in (True, False):
        with pytest.raises(InputTooLargeError, match="Rows 60000 exceeds the cap of 16384"):
            read_dataset(data, stop_before_pixels=sbp)
    tracemalloc.start()
    with pytest.raises(InputTooLargeError):
        read_dataset(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * len(data) + 4 * MiB


def test_decoded_bytes_cap() -> None:
    ds = _bomb_header(rows=16000, cols=16000, frames=40)
    assert decoded_nbytes(ds) == 16000 * 16000 * 40 * 2
    with pytest.raises(InputTooLargeError, match="decoded pixel bytes"):
        check_header_caps(ds)


@pytest.mark.parametrize(
    ("keyword", "value", "limit", "fragment"),
    [
        ("Rows", 513, IngestLimits(max_rows=512), "Rows 513 exceeds the cap of 512"),
        ("Columns", 600, IngestLimits(max_columns=512), "Columns 600 exceeds the cap of 512"),
        ("NumberOfFrames", 9, IngestLimits(max_frames=8), "NumberOfFrames 9 exceeds the cap of 8"),
        ("BitsAllocated", 64, IngestLimits(), "BitsAllocated 64 exceeds the cap of 32"),
    ],
)
def test_each_cap(keyword: str, value: int, limit: IngestLimits, fragment: str) -> None:
    ds = _chest()
    setattr(ds, keyword, value)
    with pytest.raises(InputTooLargeError, match=fragment):
        check_header_caps(ds, limit)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_caps_reject_non_integers_and_allow_non_images() -> None:
    ds = _chest()
    ds[0x00280008] = RawDataElement(BaseTag(0x00280008), "IS", 2, b"1A", 0, False, True)
    with pytest.raises(CorruptHeaderError, match=r"NumberOfFrames is not an integer \('1A'\)"):
        check_header_caps(ds)
    sr = Dataset()
    sr.Modality = "SR"
    check_header_caps(sr)  # nothing to check
    assert decoded_nbytes(sr) is None


def test_file_size_cap_before_reading(tmp_path: Path) -> None:
    data = _bytes(_chest(), tmp_path)
    small = IngestLimits(max_file_bytes=1000)
    for src in (tmp_path / "x.dcm", data, io.BytesIO(data)):
        with pytest.raises(InputTooLargeError, match="max_file_bytes"):
            read_dataset(src, limits=small)  # type: ignore[arg-type]


def _deflated(payload: bytes) -> bytes:
    """A deflated file whose dataset holds one OB element of ``payload``."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "2.25.1"
    body = struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, len(payload)) + payload
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = comp.compress(body) + comp.flush()
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(pydicom.filebase.DicomFileLike(buf), meta)
    return buf.getvalue() + deflated


def test_deflate_bomb_is_capped() -> None:
    bomb = _deflated(b"\x00" * (64 * MiB))
    assert len(bomb) < 200_000
    limits = IngestLimits(max_inflated_bytes=4 * MiB)
    tracemalloc.start()
    with pytest.raises(InputTooLargeError, match="deflate bomb"):
        read_dataset(bomb, limits=limits)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * MiB
    ok = read_dataset(_deflated(b"\x01" * 1000), limits=limits)
    assert ok[0x00091010].value == b"\x01" * 1000


def test_truncated_deflate_stream() -> None:
    data = _deflated(bytes(range(256)) * 100)
    with pytest.raises(CorruptHeaderError, match="truncated"):
        read_dataset(data[:-200])


def test_huge_declared_length_costs_nothing(tmp_path: Path) -> None:
    data = bytearray(_bytes(_chest(), tmp_path))
    # Patient Name's 2-byte length is small; corrupt Pixel Data's 4-byte length instead.
    pos = data.rfind(b"\xe0\x7f\x10\x00OB\x00\x00")
    if pos < 0:
        pos = data.rfind(b"\xe0\x7f\x10\x00OW\x00\x00")
    data[pos + 8 : pos + 12] = struct.pack("<I", 0xFFFFFFF0)
    tracemalloc.start()
    with pytest.raises(CorruptPixelDataError, match="Pixel Data is truncated"):
        read_dataset(bytes(data))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * len(data) + 4 * MiB
    assert read_dataset(bytes(data), stop_before_pixels=True).Rows == 64


# --------------------------------------------------------------------------------------
# Typed errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "not DICOM"),
        (b"hello, this is a text file that is not a DICOM file at all\n" * 4, "not DICOM"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 300, "not DICOM"),
    ],
)
def test_not_dicom(data: bytes, fragment: str) -> None:
    with pytest.raises(NotDicomError, match=fragment):
        read_dataset(data)


def test_missing_path_and_folder(tmp_path: Path) -> None:
    with pytest.raises(NotDicomError, match="cannot read the file"):
        read_dataset(tmp_path / "nope.dcm")
    with pytest.raises(NotDicomError, match="not a regular file"):
        read_dataset(tmp_path)


def test_truncated_header_element(tmp_path: Path) -> None:
    data = _bytes(_chest(), tmp_path)
    pos = data.find(b"Synthetic^Patient")
    with pytest.raises(CorruptHeaderError, match="truncated") as info:
        read_dataset(data[: pos + 3])
    assert "Synthetic" not in str(info.value)


def test_messages_quote_no_phi(tmp_path: Path) -> None:
    ds = _chest(patient_name="Secret^Person")
    data = bytearray(_bytes(ds, tmp_path))
    pos = data.find(b"Secret^Person")
    # make the element before the name claim a length running past the name
    data[pos - 2 : pos] = struct.pack("<H", 0xFFF0)
    with pytest.raises(InputError) as info:
        read_dataset(bytes(data))
    assert "Secret" not in str(info.value) and "Person" not in str(info.value)


def test_codec_support() -> None:
    supported = decodable_transfer_syntaxes()
    for ts in (
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.5",  # RLE
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
        "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS
        "1.2.840.10008.1.2.4.90",  # JPEG 2000
        "1.2.840.10008.1.2.4.201",  # HTJ2K
    ):
        assert codec_supported(ts) and ts in supported
    for ts in ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.100", "9.9.9", "not a uid"):
        assert not codec_supported(ts)


def test_stray_item_delimiter_is_not_a_silently_short_header(tmp_path: Path) -> None:
    data = _bytes(_chest(), tmp_path)
    pos = data.find(b"\x10\x00\x10\x00PN")  # Patient Name, explicit VR LE
    cut = data[:pos] + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + data[pos:]
    for sbp in (True, False):
        with pytest.raises(CorruptHeaderError, match="stops early"):
            read_dataset(cut, stop_before_pixels=sbp)
