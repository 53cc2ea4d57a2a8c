"""Tests for the synthetic phantom, dataset builders and encoders (chexnet_dicom.testing.synth)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSNearLossless,
)

from chexnet_dicom.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from chexnet_dicom.testing import synth
from tests.helpers.shared import require_tool

SIZE = 192


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return synth.chest_phantom(SIZE, seed=7)


# --------------------------------------------------------------------------- phantom


def test_phantom_deterministic_and_seed_dependent() -> None:
    a = synth.chest_phantom(96, seed=1)
    b = synth.chest_phantom(96, seed=1)
    c = synth.chest_phantom(96, seed=2)
    assert a.dtype == np.float32 and a.shape == (96, 96)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_phantom_anatomy(phantom: np.ndarray) -> None:
    r, c = phantom.shape
    lung_right = phantom[int(0.35 * r) : int(0.5 * r), int(0.22 * c) : int(0.38 * c)].mean()
    lung_left = phantom[int(0.35 * r) : int(0.5 * r), int(0.64 * c) : int(0.78 * c)].mean()
    mediastinum = phantom[int(0.2 * r) : int(0.6 * r), int(0.47 * c) : int(0.53 * c)].mean()
    abdomen = phantom[int(0.85 * r) : int(0.95 * r), int(0.2 * c) : int(0.4 * c)].mean()
    outside = phantom[int(0.9 * r) :, :3].mean()
    assert lung_right < mediastinum - 0.2 and lung_left < mediastinum - 0.2
    assert abdomen > lung_right + 0.15
    assert outside < 0.15
    # Heart towards the patient's left (image right): the lower left-lung field is brighter.
    lower_r = phantom[int(0.55 * r) : int(0.65 * r), int(0.38 * c) : int(0.46 * c)].mean()
    lower_l = phantom[int(0.55 * r) : int(0.65 * r), int(0.54 * c) : int(0.62 * c)].mean()
    assert lower_l > lower_r + 0.05


def test_phantom_ribs_make_periodic_structure(phantom: np.ndarray) -> None:
    clean = synth.chest_phantom(SIZE, seed=7, noise=0.0)
    col = clean[int(0.2 * SIZE) : int(0.55 * SIZE), int(0.25 * SIZE)]
    peaks = np.sum((col[1:-1] > col[:-2]) & (col[1:-1] > col[2:]))
    assert 4 <= peaks <= 10


def test_phantom_any_shape_and_lateral() -> None:
    img = synth.chest_phantom((120, 90), seed=0, view="lateral")
    assert img.shape == (120, 90)
    # Lateral: spine posterior (image right) brighter than the lung field.
    assert img[30:70, 70:74].mean() > img[40:60, 40:50].mean() + 0.2
    with pytest.raises(ValueError):
        synth.chest_phantom(4)
    with pytest.raises(ValueError):
        synth.chest_phantom(32, view="oblique")  # type: ignore[arg-type]


def test_phantom_lesion() -> None:
    lesion = synth.Lesion(cy=0.4, cx=0.3, radius=0.04, amplitude=0.3)
    base = synth.chest_phantom(128, seed=4, noise=0.0)
    with_lesion = synth.chest_phantom(128, seed=4, noise=0.0, lesion=lesion)
    diff = with_lesion - base
    peak = np.unravel_index(np.argmax(diff), diff.shape)
    assert abs(peak[0] - 0.4 * 128) <= 2 and abs(peak[1] - 0.3 * 128) <= 2
    assert diff.max() > 0.2
    assert diff[100:, 100:].max() < 0.01


# --------------------------------------------------------------------------- datasets


def _modality_values(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    if "ModalityLUTSequence" in ds:
        item = ds.ModalityLUTSequence[0]
        n, first, _ = item.LUTDescriptor
        lut = np.frombuffer(item.LUTData, dtype="<u2").astype(np.float64)
        return lut[np.clip(stored - first, 0, (n or 65536) - 1)]
    return stored * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


def _reference_render(ds: pydicom.Dataset) -> np.ndarray:
    """A minimal independent PS3.3 grey-scale pipeline for one window (test oracle)."""
    stored = ds.pixel_array.astype(np.float64)
    x = _modality_values(ds, stored.astype(np.int64))
    if "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        n, first, _ = item.LUTDescriptor
        lut = np.frombuffer(item.LUTData, dtype="<u2").astype(np.float64) / 65535.0
        y = lut[np.clip(np.rint(x).astype(np.int64) - first, 0, n - 1)]
    else:
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        fn = ds.get("VOILUTFunction", "LINEAR")
        if fn == "LINEAR_EXACT":
            y = np.clip((x - c) / w + 0.5, 0, 1)
        elif fn == "SIGMOID":
            y = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
        else:
            y = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    if ds.PhotometricInterpretation == "MONOCHROME1" or ds.get("PresentationLUTShape") == "INVERSE":
        y = 1.0 - y
    return y


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"photometric": "MONOCHROME1"},
        {"modality": "CR", "photometric": "MONOCHROME1", "bits_stored": 10},
        {"bits_stored": 16, "rescale_slope": 0.5, "rescale_intercept": -1024},
        {"pixel_representation": 1, "bits_stored": 12},
        {"voi_lut_function": "LINEAR_EXACT"},
        {"voi_lut": True, "window": None},
        {"modality": "CR", "modality_lut": True},
        {"modality": "SC", "bits_stored": 8},
        {"photometric": "MONOCHROME2", "presentation_lut_shape": "INVERSE"},
    ],
)
def test_float_image_renders_back(phantom: np.ndarray, kwargs: dict, tmp_path: Path) -> None:
    ds = synth.make_dataset(phantom, **kwargs)
    path = tmp_path / "a.dcm"
    synth.write(ds, path)
    back = pydicom.dcmread(path)
    rendered = _reference_render(back)
    bits = int(back.BitsStored)
    assert np.abs(rendered - phantom).max() <= 1.0 / (2**bits - 1) + 1e-6


def test_sigmoid_window_is_monotonic(phantom: np.ndarray) -> None:
    ds = synth.make_dataset(phantom, voi_lut_function="SIGMOID")
    rendered = _reference_render(ds)
    corr = np.corrcoef(rendered.ravel(), phantom.ravel())[0, 1]
    assert corr > 0.97


def test_dataset_identity_is_deterministic(phantom: np.ndarray) -> None:
    a = synth.make_dataset(phantom, seed=5, series_number=2)
    b = synth.make_dataset(phantom, seed=5, series_number=2)
    lateral = synth.make_dataset(phantom, seed=5, series_number=3, view_position="LL")
    other = synth.make_dataset(phantom, seed=6)
    assert a.SOPInstanceUID == b.SOPInstanceUID and a == b
    assert lateral.StudyInstanceUID == a.StudyInstanceUID
    assert lateral.SeriesInstanceUID != a.SeriesInstanceUID
    assert other.StudyInstanceUID != a.StudyInstanceUID
    assert list(lateral.PatientOrientation) == ["A", "F"]
    assert list(a.PatientOrientation) == ["L", "F"]
    for uid in (a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID):
        assert pydicom.uid.UID(uid).is_valid


def test_several_windows_and_explanations(phantom: np.ndarray) -> None:
    ds = synth.make_dataset(phantom, window=[(2000, 4000), (1500, 800)])
    assert [float(v) for v in ds.WindowCenter] == [2000, 1500]
    assert [float(v) for v in ds.WindowWidth] == [4000, 800]
    assert len(ds.WindowCenterWidthExplanation) == 2
    single = synth.make_dataset(phantom, window=(100.5, 300))
    assert float(single.WindowCenter) == 100.5 and float(single.WindowWidth) == 300
    with pytest.raises(ValueError):
        synth.make_dataset(phantom, window=(100, 0))


@pytest.mark.parametrize(
    ("name", "charset"),
    [("Müller^Jürgen", "ISO_IR 100"), ("山田^太郎", "ISO_IR 192"), ("Σωκράτης^Ελένη", None)],
)
def test_non_ascii_names_round_trip(
    phantom: np.ndarray, tmp_path: Path, name: str, charset: str | None
) -> None:
    kwargs: dict[str, Any] = {"specific_character_set": charset} if charset else {}
    ds = synth.make_dataset(phantom, patient_name=name, **kwargs)
    expected_charset = charset or "ISO_IR 192"
    assert ds.SpecificCharacterSet == expected_charset
    path = tmp_path / "n.dcm"
    synth.write(ds, path)
    raw = path.read_bytes()
    assert name.encode("latin-1" if expected_charset == "ISO_IR 100" else "utf-8") in raw
    assert str(pydicom.dcmread(path).PatientName) == name


def test_stored_values_and_junk_high_bits(tmp_path: Path) -> None:
    stored = np.arange(64 * 64, dtype=np.int64).reshape(64, 64) % 4096
    ds = synth.make_dataset(stored, bits_stored=12, junk_high_bits=True)
    raw = np.frombuffer(ds.PixelData, dtype="<u2").reshape(64, 64)
    assert np.all(raw >> 12 == 0xF)
    assert np.array_equal(raw & 0xFFF, stored)
    synth.write(ds, tmp_path / "j.dcm")
    assert np.array_equal(pydicom.dcmread(tmp_path / "j.dcm").pixel_array, stored)
    signed = synth.make_dataset(stored - 2048, bits_stored=12, pixel_representation=1)
    assert np.array_equal(signed.pixel_array, stored - 2048)
    with pytest.raises(ValueError):
        synth.make_dataset(stored + 10, bits_stored=12)


def test_padding_multiframe_and_rgb() -> None:
    frames = np.zeros((3, 16, 16), dtype=np.uint16)
    ds = synth.make_dataset(frames, pixel_padding_value=0)
    assert int(ds.NumberOfFrames) == 3 and ds.pixel_array.shape == (3, 16, 16)
    assert ds.PixelPaddingValue == 0
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    cds = synth.make_dataset(rgb, photometric="RGB", modality="SC")
    assert cds.SamplesPerPixel == 3 and np.array_equal(cds.pixel_array, rgb)
    assert "WindowCenter" not in cds


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("ts", synth.ENCODABLE_TRANSFER_SYNTAXES, ids=lambda u: u.name)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits_stored": 12},
        {"bits_stored": 16, "photometric": "MONOCHROME1"},
        {"bits_stored": 12, "pixel_representation": 1},
        {"bits_stored": 8},
    ],
    ids=["u12", "u16-mono1", "s12", "u8"],
)
def test_encode_round_trip(phantom: np.ndarray, ts: pydicom.uid.UID, kwargs: dict, tmp_path: Path) -> None:
    ds = synth.make_dataset(phantom, **kwargs)
    expected = ds.pixel_array.astype(np.int64)
    if ts == JPEGBaseline8Bit and (kwargs["bits_stored"] != 8):
        with pytest.raises(ValueError, match="8-bit"):
            synth.encode(ds, ts)
        return
    enc = synth.encode(ds, ts)
    assert enc.SOPInstanceUID == ds.SOPInstanceUID
    path = tmp_path / "e.dcm"
    synth.write(enc, path)
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == ts
    assert back.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert back.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    arr = back.pixel_array.astype(np.int64)
    assert arr.shape == expected.shape
    err = np.abs(arr - expected)
    full = 2 ** int(ds.BitsStored) - 1
    if ts in synth.LOSSLESS_TRANSFER_SYNTAXES:
        assert err.max() == 0
        assert back.LossyImageCompression == "00"
    else:
        assert back.LossyImageCompression == "01"
        assert float(back.LossyImageCompressionRatio) > 1
        assert back.LossyImageCompressionMethod
        if ts == JPEGLSNearLossless:
            assert err.max() <= 2
        assert err.mean() < 0.01 * full
        assert err.max() > 0 or ts != JPEG2000


def test_encode_rejects_bad_input(phantom: np.ndarray) -> None:
    ds = synth.make_dataset(phantom)
    with pytest.raises(ValueError):
        synth.encode(ds, "1.2.840.10008.1.2.4.110")  # JPEG XL: no encoder here
    j2k = synth.encode(ds, JPEG2000)
    with pytest.raises(ValueError):
        synth.encode(j2k, ExplicitVRLittleEndian)


def test_big_endian_bytes_are_swapped(tmp_path: Path) -> None:
    stored = np.full((8, 8), 0x0102, dtype=np.int64)
    ds = synth.make_dataset(stored, voi_lut=True, window=None)
    be = synth.encode(ds, ExplicitVRBigEndian)
    assert be.PixelData[:2] == b"\x01\x02"
    synth.write(be, tmp_path / "be.dcm")
    back = pydicom.dcmread(tmp_path / "be.dcm")
    assert np.array_equal(back.pixel_array, stored)
    assert ds.PixelData[:2] == b"\x02\x01"  # the source dataset is untouched


@pytest.mark.parametrize(
    ("with_meta", "preamble", "ts"),
    [
        (True, True, ExplicitVRLittleEndian),
        (True, False, ExplicitVRLittleEndian),
        (False, False, ImplicitVRLittleEndian),
        (False, False, ExplicitVRLittleEndian),
        (True, True, DeflatedExplicitVRLittleEndian),
    ],
)
def test_write_variants(
    phantom: np.ndarray, tmp_path: Path, with_meta: bool, preamble: bool, ts: str
) -> None:
    ds = synth.encode(synth.make_dataset(phantom), ts)
    path = tmp_path / "w.dcm"
    synth.write(ds, path, with_meta=with_meta, preamble=preamble)
    raw = path.read_bytes()
    assert (raw[128:132] == b"DICM") is (with_meta and preamble)
    if with_meta and not preamble:
        assert raw[:2] == b"\x02\x00"  # starts with the (0002,xxxx) group
    if not with_meta:
        assert raw[:2] == b"\x08\x00"  # starts with the (0008,xxxx) group
        assert b"\x02\x00\x10\x00" not in raw[:200]
    back = pydicom.dcmread(path, force=not with_meta or not preamble)
    if not with_meta:
        back.file_meta = pydicom.dataset.FileMetaDataset()
        back.file_meta.TransferSyntaxUID = pydicom.uid.UID(ts)
    assert np.array_equal(back.pixel_array, ds.pixel_array)


def test_write_refuses_compressed_without_meta(phantom: np.ndarray, tmp_path: Path) -> None:
    ds = synth.encode(synth.make_dataset(phantom), JPEG2000)
    with pytest.raises(ValueError, match="without file meta"):
        synth.write(ds, tmp_path / "x.dcm", with_meta=False)


# --------------------------------------------------------------------------- IOD validity (dicom3tools)


def _dciodvfy_errors(path: Path) -> list[str]:
    tool = require_tool("dciodvfy")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False)
    out = proc.stdout + proc.stderr
    return [line for line in out.splitlines() if line.startswith("Error")]


@pytest.mark.parametrize(
    ("kwargs", "ts"),
    [
        ({}, ExplicitVRLittleEndian),
        (
            {"photometric": "MONOCHROME1", "bits_stored": 16, "window": [(30000, 60000), (20000, 20000)]},
            JPEG2000,
        ),
        ({"view_position": "LL", "voi_lut": True, "window": None}, ExplicitVRLittleEndian),
        ({"presentation_intent": "FOR PROCESSING", "window": None}, ExplicitVRLittleEndian),
        ({"modality": "CR", "photometric": "MONOCHROME1", "modality_lut": True}, ExplicitVRLittleEndian),
        (
            {"modality": "CR", "patient_name": "Ærø^Jürgen", "specific_character_set": "ISO_IR 100"},
            JPEGLSNearLossless,
        ),
        ({"modality": "SC", "bits_stored": 8, "patient_name": "山田^太郎"}, JPEGBaseline8Bit),
    ],
    ids=["dx", "dx-mono1-j2k", "dx-lateral-voilut", "dx-processing", "cr-mlut", "cr-latin1-jls", "sc-jpeg"],
)
def test_generated_files_pass_dciodvfy(phantom: np.ndarray, tmp_path: Path, kwargs: dict, ts: str) -> None:
    path = tmp_path / "v.dcm"
    synth.write(synth.encode(synth.make_dataset(phantom, **kwargs), ts), path)
    errors = _dciodvfy_errors(path)
    assert errors == []


# --------------------------------------------------------------------------- sample_data


REPO = Path(__file__).resolve().parents[2]


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_sample_data_generator_is_deterministic_and_committed(tmp_path: Path) -> None:
    out = tmp_path / "samples"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_sample_data.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    fresh = _digests(out)
    committed = _digests(REPO / "sample_data")
    assert fresh == committed, "sample_data/ is stale: run scripts/make_sample_data.py --clean"
    assert sum((REPO / "sample_data" / name).stat().st_size for name in committed) < 4 * 1024 * 1024


def test_sample_data_contents() -> None:
    root = REPO / "sample_data"
    seen = {}
    for path in sorted(root.rglob("*.dcm")):
        ds = pydicom.dcmread(path, force=True)
        seen[path.relative_to(root).as_posix()] = ds
    assert "README.md" in {p.name for p in root.iterdir()}
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "synthetic" in readme.lower()
    for name in seen:
        assert f"`{name}`" in readme
    pa, lat = seen["study1_pa_lateral/pa.dcm"], seen["study1_pa_lateral/lateral.dcm"]
    assert pa.StudyInstanceUID == lat.StudyInstanceUID and pa.SeriesInstanceUID != lat.SeriesInstanceUID
    assert (pa.ViewPosition, lat.ViewPosition) == ("PA", "LL")
    cr = seen["study2_cr_mono1_j2k/cr_pa_mono1.dcm"]
    assert (cr.Modality, cr.PhotometricInterpretation, cr.BitsStored) == ("CR", "MONOCHROME1", 12)
    assert cr.file_meta.TransferSyntaxUID in (JPEG2000, pydicom.uid.JPEG2000Lossless)
    dx16 = seen["study3_dx16_window/dx_ap_16bit.dcm"]
    assert (dx16.Modality, dx16.BitsStored) == ("DX", 16) and "WindowCenter" in dx16
    tsyntaxes = {
        ds.file_meta.TransferSyntaxUID for ds in seen.values() if "TransferSyntaxUID" in ds.file_meta
    }
    assert {pydicom.uid.JPEGLSLossless, pydicom.uid.RLELossless, JPEGBaseline8Bit} <= tsyntaxes
    utf8 = seen["study6_utf8_name/dx_pa_jpeg.dcm"]
    assert utf8.SpecificCharacterSet == "ISO_IR 192" and not str(utf8.PatientName).isascii()
    legacy = root / "study7_legacy_implicit" / "cr_pa_no_meta.dcm"
    assert legacy.read_bytes()[:2] == b"\x08\x00"
    broken = seen["broken/truncated_pixel_data.dcm"]
    with pytest.raises(ValueError, match="less than expected"):
        _ = broken.pixel_array
    # All studies distinct except the PA + lateral pair.
    assert len({ds.StudyInstanceUID for ds in seen.values()}) == len(seen) - 1


@pytest.mark.parametrize(
    "name",
    sorted(
        p.relative_to(REPO / "sample_data").as_posix()
        for p in (REPO / "sample_data").rglob("*.dcm")
        if "broken" not in p.parts
    ),
)
def test_sample_files_pass_dciodvfy(name: str) -> None:
    assert _dciodvfy_errors(REPO / "sample_data" / name) == []


# --------------------------------------------------------------------------- argument checks and options


@pytest.mark.parametrize(
    "kwargs",
    [
        {"photometric": "YBR_FULL"},
        {"modality": "CT"},
        {"bits_stored": 12, "bits_allocated": 8},
        {"bits_allocated": 32},
        {"pixel_representation": 2},
        {"stored_range": (100, 50)},
        {"stored_range": (0, 5000), "bits_stored": 12},
        {"window": "narrow"},
    ],
)
def test_make_dataset_rejects_inconsistent_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        synth.make_dataset(synth.chest_phantom(16, seed=0), **kwargs)


def test_make_dataset_rejects_bad_pixels() -> None:
    with pytest.raises(ValueError):
        synth.make_dataset(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError):
        synth.make_dataset(np.zeros((4, 4), dtype=np.complex64))
    with pytest.raises(ValueError):
        synth.make_dataset(np.zeros((4, 4, 2), dtype=np.uint8), photometric="RGB")


def test_stored_range_helpers() -> None:
    assert synth.stored_range_for(12) == (0, 4095)
    assert synth.stored_range_for(12, 1) == (-2048, 2047)
    assert synth.stored_range_for(16, 1) == (-32768, 32767)
    with pytest.raises(ValueError):
        synth.stored_range_for(17)
    img = np.array([[0.0, 0.5, 1.0, 2.0]])
    assert synth.to_stored(img, bits_stored=8).tolist() == [[0, 128, 255, 255]]
    assert synth.to_stored(img, bits_stored=8, invert=True).tolist() == [[255, 128, 0, 0]]
    assert synth.to_stored(img, bits_stored=12, stored_range=(100, 200)).tolist() == [[100, 150, 200, 200]]


def test_header_options(phantom: np.ndarray) -> None:
    ds = synth.make_dataset(
        phantom,
        view_position="AP",
        patient_orientation=("R", "H"),
        laterality="B",
        body_part=None,
        imager_pixel_spacing=0.5,
        patient_id="ABC",
        series_description="custom",
        extra={"StudyDescription": "override", "AcquisitionDeviceProcessingDescription": "CHEST"},
    )
    assert ds.ViewPosition == "AP"
    assert ds.ViewCodeSequence[0].CodeMeaning == "antero-posterior"
    assert list(ds.PatientOrientation) == ["R", "H"]
    assert ds.ImageLaterality == "B"
    assert "BodyPartExamined" not in ds
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.5, 0.5]
    assert ds.PatientID == "ABC" and ds.SeriesDescription == "custom"
    assert ds.StudyDescription == "override"
    bare = synth.make_dataset(
        phantom, view_position=None, view_code=False, patient_orientation=None, laterality=None
    )
    assert bare.ViewPosition == "" and "ViewCodeSequence" not in bare
    assert bare.PatientOrientation == "" and "ImageLaterality" not in bare
    cr = synth.make_dataset(phantom, modality="CR")
    assert "PresentationLUTShape" not in cr and "ViewCodeSequence" not in cr
    sc = synth.make_dataset(phantom, modality="SC", modality_value="CR", rescale_slope=2.0)
    assert sc.Modality == "CR" and sc.ConversionType == "SYN" and float(sc.RescaleSlope) == 2.0
    assert synth.make_dataset(phantom, modality="SC").Modality == "OT"
    assert "RescaleSlope" not in synth.make_dataset(phantom, modality="SC")


def test_several_lesions_and_float_rgb() -> None:
    lesions = [synth.Lesion(cy=0.3, cx=0.3), synth.Lesion(cy=0.6, cx=0.7)]
    base = synth.chest_phantom(64, seed=1, noise=0.0)
    two = synth.chest_phantom(64, seed=1, noise=0.0, lesion=lesions)
    diff = two - base
    assert diff[19, 19] > 0.1 and diff[38, 45] > 0.1
    rgb = synth.make_dataset(np.full((8, 8, 3), 0.5), photometric="RGB", modality="SC")
    assert rgb.pixel_array.max() == 128 and rgb.BitsStored == 8
