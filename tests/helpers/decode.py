"""Small DICOM datasets built in memory, encoded with pydicom's own encoders.

Shared by the decode, fast-path, invariance and transform tests.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from chexnet_dicom.dicom.uids import derive_uid
from chexnet_dicom.transforms import prepare_model_input

__all__ = ["compressed", "make_dataset", "model_input_mad", "phantom", "roundtrip", "to_unit"]


def phantom(rows: int, cols: int, *, bits: int = 12, signed: bool = False, seed: int = 0) -> np.ndarray:
    """Smooth chest-like test image spanning most of the ``bits`` range (int64)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    y /= rows
    x /= cols
    body = np.exp(-(((x - 0.5) / 0.42) ** 8 + ((y - 0.55) / 0.48) ** 8))
    lungs = sum(np.exp(-(((x - cx) / 0.14) ** 2 + ((y - 0.5) / 0.26) ** 2)) for cx in (0.3, 0.7))
    ribs = 0.08 * (np.sin(y * 60.0) > 0.6) * body
    img = 0.1 + 0.75 * body - 0.45 * lungs + ribs + 0.01 * rng.standard_normal((rows, cols))
    img = np.clip(img, 0.0, 1.0)
    top = (1 << bits) - 1
    vals = np.round(img * top).astype(np.int64)
    if signed:
        vals -= 1 << (bits - 1)
    return vals


def make_dataset(
    arr: np.ndarray,
    *,
    bits_stored: int,
    signed: bool = False,
    bits_allocated: int | None = None,
    photometric: str = "MONOCHROME2",
) -> Dataset:
    """Explicit VR Little Endian single-frame greyscale dataset holding ``arr``."""
    ba = bits_allocated or (8 if bits_stored <= 8 else 16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = derive_uid("tests.dicom.test_decode", str(arr.shape), str(bits_stored), str(signed))
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ba
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    dtype = {8: ("u1", "i1"), 16: ("<u2", "<i2"), 32: ("<u4", "<i4")}[ba][int(signed)]
    ds.PixelData = arr.astype(dtype).tobytes()
    return ds


def compressed(arr: np.ndarray, syntax: UID, *, bits_stored: int, signed: bool = False, **kw: Any) -> Dataset:
    """Dataset with ``arr`` encoded in ``syntax`` (pydicom encoders; JPEG baseline via Pillow)."""
    ds = make_dataset(arr, bits_stored=bits_stored, signed=signed)
    if syntax == JPEGBaseline8Bit:
        buf = io.BytesIO()
        Image.fromarray(arr.astype(np.uint8), mode="L").save(
            buf, format="JPEG", quality=int(kw.get("quality", 95))
        )
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        return ds
    if syntax == JPEG2000 and not kw:
        kw = {"j2k_psnr": [80]}
    ds.compress(syntax, encoding_plugin="pylibjpeg" if "2.4.9" in syntax else "", **kw)
    return ds


def roundtrip(ds: Dataset) -> Dataset:
    """Write and read back, as a file on disk would be."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return pydicom.dcmread(buf)


def to_unit(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map of stored values onto [0, 1]."""
    return np.clip((arr.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


_STD = np.asarray((0.229, 0.224, 0.225), dtype=np.float32).reshape(3, 1, 1)


def model_input_mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two [0, 1] images' 224x224 model inputs, as a
    fraction of the input's value range (so 0.01 = 1 %)."""
    xa = prepare_model_input(a)
    xb = prepare_model_input(b)
    return float(np.mean(np.abs(xa - xb) * _STD))


# --------------------------------------------------------------------------- masking
