"""Golden values for every grey-scale path of :mod:`chexnet_dicom.dicom.pixels`.

Small synthetic arrays with hand-computed expected outputs (PS3.3 C.11 formulas), plus
geometry (PatientOrientation) derived independently from the standard's definition and
content checks on a synthetic chest phantom.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage

from chexnet_dicom.config import IngestConfig, PixelPolicy
from chexnet_dicom.dicom.decode import StoredPixels
from chexnet_dicom.dicom.flags import (
    FLAG_CONTENT_INVERTED,
    FLAG_ORIENTATION_CORRECTED,
    FLAG_ORIENTATION_NOT_APPLIED,
    FLAG_ORIENTATION_UNUSABLE,
    FLAG_PRESENTATION_LUT_CONFLICT,
    FLAG_VOI_FUNCTION_UNKNOWN,
    FLAG_WINDOW_INDEX_OUT_OF_RANGE,
    FLAG_WINDOW_INVALID,
    FLAG_WINDOW_OUTSIDE_DATA,
)
from chexnet_dicom.dicom.flags import PIXEL_FLAGS as ALL_FLAGS
from chexnet_dicom.dicom.load import load_image
from chexnet_dicom.dicom.orientation import orientation_ops_for
from chexnet_dicom.dicom.pixels import DisplayImage, render
from chexnet_dicom.dicom.polarity import chest_content_features
from chexnet_dicom.errors import CorruptHeaderError, CorruptPixelDataError, UnsupportedInputError

NO_CONTENT = PixelPolicy(inversion="ignore")


def make_ds(arr: np.ndarray, *, bits_stored: int = 16, signed: bool = False, **attrs: object) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def show(arr: np.ndarray, ds: Dataset, policy: PixelPolicy = NO_CONTENT) -> DisplayImage:
    return render(ds, StoredPixels(array=arr), policy=policy)


ROW = np.array([[70, 75, 100, 125, 130]], dtype=np.uint16)


# --------------------------------------------------------------------------- VOI


def test_linear_window_golden() -> None:
    # C.11.2.1.2.1: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped; c=100, w=51.
    out = show(ROW, make_ds(ROW, WindowCenter=100, WindowWidth=51))
    np.testing.assert_allclose(out.image[0], [0.0, 0.01, 0.51, 1.0, 1.0], atol=1e-6)
    assert out.provenance["voi"] == "window[0] LINEAR c=100 w=51"
    assert out.image.dtype == np.float32


def test_linear_window_width_one_is_a_threshold() -> None:
    out = show(ROW, make_ds(ROW, WindowCenter=100, WindowWidth=1))
    np.testing.assert_array_equal(out.image[0], [0, 0, 1, 1, 1])


def test_linear_exact_golden() -> None:
    ds = make_ds(ROW, WindowCenter=100, WindowWidth=50, VOILUTFunction="LINEAR_EXACT")
    np.testing.assert_allclose(show(ROW, ds).image[0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_sigmoid_golden() -> None:
    ds = make_ds(ROW, WindowCenter=100, WindowWidth=50, VOILUTFunction="SIGMOID")
    expected = 1.0 / (1.0 + np.exp(-4.0 * (ROW[0].astype(float) - 100.0) / 50.0))
    np.testing.assert_allclose(show(ROW, ds).image[0], expected, atol=1e-6)
    assert abs(float(show(ROW, ds).image[0, 3]) - 0.8807971) < 1e-6


def test_window_index_chooses_and_out_of_range_flags() -> None:
    ds = make_ds(ROW, WindowCenter=[100, 80], WindowWidth=[51, 21])
    second = show(ROW, ds, PixelPolicy(inversion="ignore", window_index=1))
    # c=80, w=21: x=70 -> (70 - 79.5)/20 + 0.5 = 0.025, x=75 -> 0.275
    np.testing.assert_allclose(second.image[0], [0.025, 0.275, 1.0, 1.0, 1.0], atol=1e-6)
    assert "window[1]" in second.provenance["voi"]
    far = show(ROW, ds, PixelPolicy(inversion="ignore", window_index=5))
    assert FLAG_WINDOW_INDEX_OUT_OF_RANGE in far.flags
    np.testing.assert_allclose(far.image[0], [0.0, 0.01, 0.51, 1.0, 1.0], atol=1e-6)


def test_unknown_voi_function_flags_and_uses_linear() -> None:
    ds = make_ds(ROW, WindowCenter=100, WindowWidth=51, VOILUTFunction="CUBIC")
    out = show(ROW, ds)
    assert FLAG_VOI_FUNCTION_UNKNOWN in out.flags
    np.testing.assert_allclose(out.image[0], [0.0, 0.01, 0.51, 1.0, 1.0], atol=1e-6)


def test_invalid_width_falls_back_to_min_max() -> None:
    out = show(ROW, make_ds(ROW, WindowCenter=100, WindowWidth=0))
    assert FLAG_WINDOW_INVALID in out.flags
    np.testing.assert_allclose(out.image[0], [0.0, 5 / 60, 30 / 60, 55 / 60, 1.0], atol=1e-6)


def test_no_voi_uses_min_max_of_the_data() -> None:
    out = show(ROW, make_ds(ROW))
    np.testing.assert_allclose(out.image[0], [0.0, 5 / 60, 30 / 60, 55 / 60, 1.0], atol=1e-6)
    assert out.provenance["voi"].startswith("min-max 70..130")


def test_no_voi_spans_the_nominal_range_when_the_data_fill_it() -> None:
    arr = np.array([[10, 100, 200, 250]], dtype=np.uint8)
    out = show(arr, make_ds(arr, bits_stored=8))
    np.testing.assert_allclose(out.image[0], arr[0] / 255.0, atol=1e-6)
    assert out.provenance["voi"] == "none (identity over the nominal range 0..255)"
    # signed 12-bit with rescale: nominal range (-2048..2047) * 2 + 10
    arr2 = np.array([[-2000, 0, 2000]], dtype=np.int16)
    out2 = show(arr2, make_ds(arr2, bits_stored=12, signed=True, RescaleSlope=2, RescaleIntercept=10))
    np.testing.assert_allclose(out2.image[0], (arr2[0] + 2048) / 4095.0, atol=1e-6)


def test_window_outside_the_data_falls_back_to_percentiles() -> None:
    arr = np.arange(1000, 2001, dtype=np.uint16).reshape(7, 143)
    out = show(arr, make_ds(arr, WindowCenter=50, WindowWidth=20))
    assert FLAG_WINDOW_OUTSIDE_DATA in out.flags
    assert "percentile window" in out.provenance["voi"]
    # p0.5..p99.5 of a 1000..2000 ramp is about 1005..1995.
    lo = float(out.image.ravel()[5])
    assert out.image.min() == 0.0 and out.image.max() == 1.0
    assert lo <= 0.002
    assert np.all(np.diff(out.image.ravel()) >= 0)
    literal = show(
        arr,
        make_ds(arr, WindowCenter=50, WindowWidth=20),
        PixelPolicy(inversion="ignore", window_fallback=False),
    )
    assert FLAG_WINDOW_OUTSIDE_DATA not in literal.flags
    assert literal.image.min() == 1.0  # the literal window gives a white image


def test_voi_lut_sequence_golden_and_preferred_over_window() -> None:
    item = Dataset()
    item.LUTDescriptor = [3, 71, 8]
    item.LUTData = [0, 128, 255]
    arr = np.array([[70, 71, 72, 73, 90]], dtype=np.uint16)
    ds = make_ds(arr, VOILUTSequence=Sequence([item]), WindowCenter=0, WindowWidth=1)
    out = show(arr, ds)
    np.testing.assert_allclose(out.image[0], [0.0, 0.0, 128 / 255, 1.0, 1.0], atol=1e-6)
    assert out.provenance["voi"] == "VOI LUT[0]"


def test_voi_lut_packed_8_bit_ow_and_16_bit_entries() -> None:
    packed = Dataset()
    packed.LUTDescriptor = [4, 0, 8]
    packed.add_new(0x00283006, "OW", bytes([0, 85, 170, 255]))
    wide = Dataset()
    wide.LUTDescriptor = [2, 0, 16]
    wide.LUTData = [0, 65535]
    arr = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    ds = make_ds(arr, VOILUTSequence=Sequence([packed, wide]))
    np.testing.assert_allclose(show(arr, ds).image[0], [0, 1 / 3, 2 / 3, 1], atol=1e-6)
    second = show(arr, ds, PixelPolicy(inversion="ignore", window_index=1))
    np.testing.assert_allclose(second.image[0], [0, 1, 1, 1], atol=1e-6)


# --------------------------------------------------------------------------- Modality LUT


def test_rescale_slope_intercept_then_window() -> None:
    arr = np.array([[0, 10, 20, 30]], dtype=np.uint16)
    # modality values: 2*x - 20 -> -20, 0, 20, 40 ; LINEAR_EXACT c=10 w=40 -> (v-10)/40+0.5
    ds = make_ds(
        arr,
        RescaleSlope=2,
        RescaleIntercept=-20,
        WindowCenter=10,
        WindowWidth=40,
        VOILUTFunction="LINEAR_EXACT",
    )
    out = show(arr, ds)
    np.testing.assert_allclose(out.image[0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    assert any("rescale slope 2 intercept -20" in s for s in out.provenance["steps"])


def test_modality_lut_sequence_golden() -> None:
    item = Dataset()
    item.LUTDescriptor = [4, 10, 16]
    item.LUTData = [100, 200, 300, 400]
    arr = np.array([[9, 10, 11, 12, 13, 20]], dtype=np.uint16)
    ds = make_ds(
        arr,
        ModalityLUTSequence=Sequence([item]),
        RescaleSlope=5,  # ignored: the LUT Sequence takes precedence
        WindowCenter=250,
        WindowWidth=300,
        VOILUTFunction="LINEAR_EXACT",
    )
    # values below the first mapped value take the first entry, above the last the last.
    np.testing.assert_allclose(show(arr, ds).image[0], [0, 0, 1 / 3, 2 / 3, 1, 1], atol=1e-6)


def test_signed_first_mapped_value_in_lut_descriptor() -> None:
    item = Dataset()
    item.LUTDescriptor = [4, 0xFFFE, 16]  # -2 written as US
    item.LUTData = [0, 10, 20, 30]
    arr = np.array([[-3, -2, -1, 0, 1, 5]], dtype=np.int16)
    ds = make_ds(arr, signed=True, ModalityLUTSequence=Sequence([item]))
    np.testing.assert_allclose(show(arr, ds).image[0], [0, 0, 1 / 3, 2 / 3, 1, 1], atol=1e-6)


# --------------------------------------------------------------------------- stored values


def test_signed_data_sign_extended_from_bits_stored() -> None:
    # 12-bit two's complement as raw 16-bit words: 0xFFF = -1, 0x800 = -2048, 0x7FF = 2047
    raw = np.array([[0x800, 0xFFF, 0x000, 0x7FF]], dtype=np.uint16)
    ds = make_ds(raw, bits_stored=12, signed=True, WindowCenter=0.5, WindowWidth=4096)
    out = show(raw, ds)
    expected = np.clip((np.array([-2048, -1, 0, 2047]) - 0.0) / 4095 + 0.5, 0, 1)
    np.testing.assert_allclose(out.image[0], expected, atol=1e-6)


def test_garbage_high_bits_are_masked() -> None:
    clean = np.array([[0, 1000, 2000, 4095]], dtype=np.uint16)
    dirty = clean | np.array([[0xF000, 0x5000, 0xA000, 0x1000]], dtype=np.uint16)
    ds = make_ds(dirty, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    np.testing.assert_array_equal(
        show(dirty, ds).image,
        show(clean, make_ds(clean, bits_stored=12, WindowCenter=2048, WindowWidth=4096)).image,
    )


def _file_bytes(ds: Dataset, arr: np.ndarray, ts: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.1"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "2.25.1"
    ds.PixelData = arr.astype("<u2" if ds.BitsAllocated == 16 else "u1").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=ts == ImplicitVRLittleEndian, little_endian=True)
    return buf.getvalue()


def test_garbage_high_bits_through_a_real_file() -> None:
    rng = np.random.default_rng(3)
    clean = rng.integers(0, 4096, size=(32, 48), dtype=np.uint16)
    dirty = clean | (rng.integers(0, 16, size=clean.shape, dtype=np.uint16) << 12)
    ds = make_ds(dirty, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    out = load_image(_file_bytes(ds, dirty), config=IngestConfig(pixels=NO_CONTENT)).display
    expected = np.clip((clean - 2047.5) / 4095 + 0.5, 0, 1)
    np.testing.assert_allclose(out.image, expected, atol=1e-6)
    assert out.source_shape == (32, 48)
    assert out.provenance["decode_path"] == "full"


def test_padding_value_and_range_excluded_and_shown_as_background() -> None:
    arr = np.array([[0, 100, 200], [300, 0, 400]], dtype=np.uint16)
    out = show(arr, make_ds(arr, PixelPaddingValue=0))
    np.testing.assert_allclose(out.image, [[0, 0, 1 / 3], [2 / 3, 0, 1]], atol=1e-6)
    arr2 = np.array([[30, 100, 200], [300, 0, 400]], dtype=np.uint16)
    out2 = show(
        arr2,
        make_ds(
            arr2, PixelPaddingValue=0, PixelPaddingRangeLimit=50, PhotometricInterpretation="MONOCHROME1"
        ),
    )
    # MONOCHROME1: valid values inverted, padding still background (0)
    np.testing.assert_allclose(out2.image, [[0, 1, 2 / 3], [1 / 3, 0, 0]], atol=1e-6)


# --------------------------------------------------------------------------- presentation


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted", "flag"),
    [
        ("MONOCHROME2", None, False, None),
        ("MONOCHROME1", None, True, None),
        ("MONOCHROME2", "IDENTITY", False, None),
        ("MONOCHROME1", "INVERSE", True, None),  # one inversion, never two
        ("MONOCHROME2", "INVERSE", True, None),
        ("MONOCHROME1", "IDENTITY", True, FLAG_PRESENTATION_LUT_CONFLICT),
    ],
)
def test_presentation(photometric: str, shape: str | None, inverted: bool, flag: str | None) -> None:
    attrs: dict[str, object] = {
        "PhotometricInterpretation": photometric,
        "WindowCenter": 100,
        "WindowWidth": 51,
    }
    if shape:
        attrs["PresentationLUTShape"] = shape
    out = show(ROW, make_ds(ROW, **attrs))
    base = np.array([0.0, 0.01, 0.51, 1.0, 1.0])
    np.testing.assert_allclose(out.image[0], 1 - base if inverted else base, atol=1e-6)
    if flag:
        assert flag in out.flags
    else:
        assert out.flags == []


def test_colour_and_bad_input_raise_typed_errors() -> None:
    with pytest.raises(UnsupportedInputError):
        show(ROW, make_ds(ROW, PhotometricInterpretation="RGB"))
    with pytest.raises(CorruptPixelDataError):
        render(make_ds(ROW), StoredPixels(array=np.zeros((2, 2, 2), np.uint16)))
    with pytest.raises(CorruptHeaderError):
        show(ROW, make_ds(ROW, RescaleSlope=0))
    with pytest.raises(CorruptPixelDataError):
        render(make_ds(ROW), StoredPixels(array=np.array([[np.nan, 1.0]])))


def test_float_stored_values() -> None:
    arr = np.array([[0.0, 0.5, 1.0, 2.0]])
    out = show(arr, make_ds(arr.astype(np.uint16)))
    np.testing.assert_allclose(out.image[0], [0, 0.25, 0.5, 1.0], atol=1e-6)


# --------------------------------------------------------------------------- geometry

CODES_LR = ("L", "R")
CODES_HF = ("H", "F")


def stored_for(std: np.ndarray, row_code: str, col_code: str) -> np.ndarray:
    """The stored image of standard-orientation ``std`` under PatientOrientation row\\col.

    Straight from PS3.3 C.7.6.1.1.1: ``row_code`` is the patient direction of
    increasing column index, ``col_code`` that of increasing row index.
    """
    n_f, n_l = std.shape
    lr_axis_is_cols = row_code in CODES_LR
    n_rows, n_cols = (n_f, n_l) if lr_axis_is_cols else (n_l, n_f)
    out = np.empty((n_rows, n_cols), dtype=std.dtype)
    for i in range(n_rows):
        for j in range(n_cols):
            along_row, along_col = j, i  # +j goes toward row_code, +i toward col_code
            if lr_axis_is_cols:
                lpos, lcode, fpos, fcode = along_row, row_code, along_col, col_code
            else:
                lpos, lcode, fpos, fcode = along_col, col_code, along_row, row_code
            l_idx = lpos if lcode == "L" else n_l - 1 - lpos
            f_idx = fpos if fcode == "F" else n_f - 1 - fpos
            out[i, j] = std[f_idx, l_idx]
    return out


ALL_ORIENTATIONS = [
    (r, c) for r, c in itertools.product("LRHF", repeat=2) if (r in CODES_LR) != (c in CODES_LR)
]


@pytest.mark.parametrize(("row_code", "col_code"), ALL_ORIENTATIONS)
def test_patient_orientation_reaches_standard(row_code: str, col_code: str) -> None:
    std = np.arange(5 * 7, dtype=np.uint16).reshape(5, 7)
    stored = stored_for(std, row_code, col_code)
    ds = make_ds(stored, PatientOrientation=[row_code, col_code])
    out = show(stored, ds)
    expected = show(std, make_ds(std)).image
    np.testing.assert_array_equal(out.image, expected)
    assert out.source_shape == stored.shape
    if (row_code, col_code) == ("L", "F"):
        assert out.orientation_ops == () and FLAG_ORIENTATION_CORRECTED not in out.flags
    else:
        assert FLAG_ORIENTATION_CORRECTED in out.flags and out.orientation_ops
    # to_source_grid undoes it exactly at the same resolution
    np.testing.assert_array_equal(out.to_source_grid(out.image), show(stored, make_ds(stored)).image)


def test_orientation_policy_and_unusable_codes() -> None:
    stored = np.arange(12, dtype=np.uint16).reshape(3, 4)
    flagged = show(
        stored,
        make_ds(stored, PatientOrientation=["R", "F"]),
        PixelPolicy(inversion="ignore", orientation="flag"),
    )
    assert FLAG_ORIENTATION_NOT_APPLIED in flagged.flags and flagged.orientation_ops == ()
    lateral = show(stored, make_ds(stored, PatientOrientation=["A", "F"]))
    assert FLAG_ORIENTATION_UNUSABLE in lateral.flags and lateral.orientation_ops == ()
    assert orientation_ops_for("LF", "FR") == ()  # oblique: dominant letters
    assert orientation_ops_for("P", "F") is None


def test_to_source_grid_resizes_from_a_reduced_decode_and_heatmaps() -> None:
    stored = np.tile(np.arange(8, dtype=np.uint16), (6, 1))
    ds = make_ds(stored, Rows=12, Columns=16, PatientOrientation=["H", "L"])
    out = render(ds, StoredPixels(array=stored, factor=2, path="j2k-reduce-2"), policy=NO_CONTENT)
    assert out.decode_factor == 2 and out.image.shape == (8, 6)
    assert out.provenance["decode_path"] == "j2k-reduce-2"
    back = out.to_source_grid(out.image)
    assert back.shape == (12, 16)
    # the value increases along the stored columns again
    assert np.all(np.diff(back.mean(axis=0)) >= 0) and back[:, -1].mean() > back[:, 0].mean()
    heat = np.zeros((2, 4, 3), np.float32)
    heat[:, 0, :] = 1.0  # top row of the display = patient's head
    mapped = out.to_source_grid(heat)
    assert mapped.shape == (2, 12, 16)
    # H\L: the head is toward increasing column index in the stored image
    assert mapped[0, :, -1].mean() > mapped[0, :, 0].mean()


# --------------------------------------------------------------------------- content


def phantom(size: int = 128) -> np.ndarray:
    """A crude frontal chest: dark lungs, bright mediastinum, bright abdomen below."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size), 0.6)
    for cx in (0.27, 0.73):
        lung = ((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1
        img[lung] = 0.2
    img[y > 0.8] = 0.85
    img[(np.abs(x - 0.5) < 0.08) & (y < 0.8)] = 0.9
    return img


def _phantom_stored(invert: bool) -> np.ndarray:
    p = phantom()
    return np.round((1 - p if invert else p) * 4095).astype(np.uint16)


def _phantom_ds(stored: np.ndarray, **attrs: object) -> Dataset:
    # LINEAR_EXACT c=2048 w=4096 maps x to x / 4096: the display equals the phantom.
    return make_ds(
        stored, bits_stored=12, WindowCenter=2048, WindowWidth=4096, VOILUTFunction="LINEAR_EXACT", **attrs
    )


def test_phantom_features_have_the_expected_signs() -> None:
    med, base = chest_content_features(phantom())
    assert med > 0.3 and base > 0.3
    med_i, base_i = chest_content_features(1 - phantom())
    assert med_i < -0.3 and base_i < -0.3


@pytest.mark.parametrize("policy", ["correct", "flag", "ignore"])
def test_content_inversion_policy(policy: str) -> None:
    stored = _phantom_stored(invert=True)  # a MONOCHROME2 header over inverted content
    out = render(_phantom_ds(stored), StoredPixels(array=stored), policy=PixelPolicy(inversion=policy))  # type: ignore[arg-type]
    truth = phantom()
    if policy == "correct":
        assert out.flags == [FLAG_CONTENT_INVERTED]
        np.testing.assert_allclose(out.image, truth, atol=1e-3)
    elif policy == "flag":
        assert out.flags == [FLAG_CONTENT_INVERTED]
        np.testing.assert_allclose(out.image, 1 - truth, atol=1e-3)
    else:
        assert out.flags == []
    assert out.provenance["inversion_score"] < 0


def test_correct_polarity_is_not_flagged_and_mono1_is_inverted() -> None:
    stored = _phantom_stored(invert=True)
    out = render(_phantom_ds(stored, PhotometricInterpretation="MONOCHROME1"), StoredPixels(array=stored))
    assert out.flags == []
    np.testing.assert_allclose(out.image, phantom(), atol=1e-3)


def test_flags_are_public_and_distinct() -> None:
    assert len(set(ALL_FLAGS)) == len(ALL_FLAGS)
    assert all(isinstance(f, str) and f == f.lower() for f in ALL_FLAGS)


def test_every_step_is_recorded() -> None:
    out = show(ROW, make_ds(ROW, WindowCenter=100, WindowWidth=51, PhotometricInterpretation="MONOCHROME1"))
    kinds = [s.split(":")[0] for s in out.provenance["steps"]]
    assert kinds[:4] == ["stored", "modality", "voi", "presentation"]
    assert set(out.provenance) >= {"steps", "flags", "decode_path", "voi"}
