"""Encoders and the writer of synthetic datasets: any transfer syntax, with or without file meta.

:func:`encode` re-encodes a dataset of :func:`~chexnet_dicom.testing.dataset.make_dataset`
in any transfer syntax we can write (uncompressed, deflated, big endian, RLE, JPEG-LS,
JPEG 2000, JPEG baseline); :func:`write` writes it with or without preamble and file
meta information.
"""

from __future__ import annotations

import copy
import io
import os
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from chexnet_dicom.testing.dataset import ds_number

__all__ = ["ENCODABLE_TRANSFER_SYNTAXES", "LOSSLESS_TRANSFER_SYNTAXES", "encode", "write"]

#: Transfer syntaxes that :func:`encode` writes without loss.
LOSSLESS_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
)
#: Every transfer syntax :func:`encode` accepts (lossy ones last).
ENCODABLE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    *LOSSLESS_TRANSFER_SYNTAXES,
    JPEGLSNearLossless,
    JPEG2000,
    JPEGBaseline8Bit,
)

_UNCOMPRESSED = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)


def _pixel_values(ds: Dataset) -> np.ndarray:
    """The stored pixel values of an uncompressed dataset, masked to BitsStored and sign-extended."""
    ba, bs, pr = int(ds.BitsAllocated), int(ds.BitsStored), int(ds.PixelRepresentation)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.SamplesPerPixel)
    count = int(ds.Rows) * int(ds.Columns) * frames * spp
    dtype = np.dtype("<u2") if ba == 16 else np.dtype(np.uint8)
    raw = np.frombuffer(ds.PixelData, dtype=dtype, count=count).astype(np.int64)
    raw &= (1 << bs) - 1
    if pr == 1:
        raw = np.where(raw >= (1 << (bs - 1)), raw - (1 << bs), raw)
    shape: tuple[int, ...] = (int(ds.Rows), int(ds.Columns))
    if frames > 1:
        shape = (frames, *shape)
    if spp > 1:
        shape = (*shape, spp)
    return raw.reshape(shape)


def encode(
    ds: Dataset,
    transfer_syntax: str,
    *,
    jls_error: int = 2,
    j2k_ratio: float = 10.0,
    jpeg_quality: int = 90,
) -> Dataset:
    """Return a copy of an uncompressed dataset re-encoded in ``transfer_syntax``.

    Parameters
    ----------
    ds
        A dataset from :func:`make_dataset` (native pixel data).
    transfer_syntax
        One of :data:`ENCODABLE_TRANSFER_SYNTAXES`: Explicit/Implicit VR Little
        Endian, Deflated, Explicit VR Big Endian (pixel and LUT data byte-swapped),
        RLE Lossless, JPEG-LS lossless and near-lossless (pyjpegls), JPEG 2000
        lossless and lossy (pylibjpeg-openjpeg), JPEG baseline (Pillow, 8-bit
        monochrome only).
    jls_error
        NEAR parameter of JPEG-LS near-lossless.
    j2k_ratio
        Compression ratio of lossy JPEG 2000.
    jpeg_quality
        Pillow quality of baseline JPEG.

    Returns
    -------
    pydicom.dataset.Dataset
        A new dataset; lossy encodings set LossyImageCompression "01", the ratio
        and the method. The SOP Instance UID is kept (callers that need a new
        instance pass a new ``sop_uid`` to :func:`make_dataset`).

    Raises
    ------
    ValueError
        For an unknown transfer syntax, already compressed input or baseline
        JPEG of data that is not 8-bit monochrome.
    """
    tsyntax = UID(transfer_syntax)
    if tsyntax not in ENCODABLE_TRANSFER_SYNTAXES:
        raise ValueError(f"cannot encode transfer syntax {tsyntax} ({tsyntax.name})")
    current = ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)
    if UID(current).is_compressed or current == ExplicitVRBigEndian:
        raise ValueError(
            "encode() needs little-endian uncompressed pixel data; build the dataset again with make_dataset"
        )
    out = copy.deepcopy(ds)
    values = _pixel_values(ds)
    uncompressed_bytes = values.size * (int(ds.BitsAllocated) // 8)
    if tsyntax in _UNCOMPRESSED:
        out.file_meta.TransferSyntaxUID = tsyntax
        if tsyntax == ExplicitVRBigEndian:
            _swap_words(out)
        return out
    if tsyntax == JPEGBaseline8Bit:
        _encode_jpeg_baseline(out, values, jpeg_quality)
    else:
        kwargs: dict[str, Any] = {"generate_instance_uid": False}
        arr = values
        if int(ds.PixelRepresentation) == 0:
            arr = values.astype(np.uint16 if int(ds.BitsAllocated) == 16 else np.uint8)
        else:
            arr = values.astype(np.int16 if int(ds.BitsAllocated) == 16 else np.int8)
        if tsyntax == JPEGLSNearLossless:
            kwargs["jls_error"] = jls_error
        if tsyntax == JPEG2000:
            kwargs["j2k_cr"] = [j2k_ratio]
        out.compress(tsyntax, arr, **kwargs)
    if not tsyntax.is_compressed or tsyntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        return out
    compressed_bytes = len(out.PixelData)
    out.LossyImageCompression = "01"
    out.LossyImageCompressionRatio = ds_number(round(uncompressed_bytes / max(compressed_bytes, 1), 2))
    out.LossyImageCompressionMethod = {
        JPEGLSNearLossless: "ISO_14495_1",
        JPEG2000: "ISO_15444_1",
        JPEGBaseline8Bit: "ISO_10918_1",
    }[tsyntax]
    return out


def _encode_jpeg_baseline(out: Dataset, values: np.ndarray, quality: int) -> None:
    from PIL import Image

    if (
        int(out.BitsAllocated) != 8
        or int(out.SamplesPerPixel) != 1
        or int(out.get("NumberOfFrames", 1) or 1) != 1
    ):
        raise ValueError(
            "baseline JPEG needs single-frame 8-bit monochrome data (make_dataset(bits_stored=8))"
        )
    if int(out.PixelRepresentation) != 0:
        raise ValueError("baseline JPEG needs unsigned data")
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint8), mode="L").save(
        buf, format="JPEG", quality=quality, optimize=False
    )
    out.PixelData = encapsulate([buf.getvalue()])
    out["PixelData"].VR = "OB"
    out["PixelData"].is_undefined_length = True
    out.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def _swap_words(ds: Dataset) -> None:
    """Byte-swap 16-bit PixelData and OW LUT data (little <-> big endian)."""
    if int(ds.BitsAllocated) == 16 and "PixelData" in ds:
        ds.PixelData = np.frombuffer(ds.PixelData, dtype="<u2").byteswap().tobytes()
    for keyword in ("ModalityLUTSequence", "VOILUTSequence"):
        for item in ds.get(keyword, []):
            if "LUTData" in item and item["LUTData"].VR == "OW":
                item.LUTData = np.frombuffer(item.LUTData, dtype="<u2").byteswap().tobytes()


def write(
    ds: Dataset,
    path: str | os.PathLike[str],
    *,
    with_meta: bool = True,
    preamble: bool = True,
) -> None:
    """Write a dataset to ``path``.

    Parameters
    ----------
    ds
        A dataset from :func:`make_dataset` or :func:`encode`.
    path
        Destination file (overwritten).
    with_meta
        Write the File Meta Information (Implementation Class UID and Version
        Name of this package). Without it the dataset is written bare, in the
        (uncompressed) encoding of its transfer syntax, as old systems do.
    preamble
        Write the 128-byte preamble and ``DICM`` (only with ``with_meta``;
        ``preamble=False`` gives meta information without a preamble, which
        some systems produce).

    Raises
    ------
    ValueError
        When a compressed dataset is to be written without file meta.
    """
    out = copy.copy(ds)
    meta = FileMetaDataset()
    if "file_meta" in ds.__dict__ or hasattr(ds, "file_meta"):
        meta = copy.deepcopy(ds.file_meta)
    tsyntax = UID(meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
    if with_meta:
        meta.TransferSyntaxUID = tsyntax
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        out.file_meta = meta
        if preamble:
            out.preamble = b"\x00" * 128
            atomic_write(path, lambda tmp: dcmwrite(tmp, out, enforce_file_format=True))
        else:
            out.preamble = None
            atomic_write(path, lambda tmp: dcmwrite(tmp, out, enforce_file_format=False))
        return
    if tsyntax.is_compressed or tsyntax == DeflatedExplicitVRLittleEndian:
        raise ValueError(f"a {tsyntax.name} dataset cannot be written without file meta information")
    out.file_meta = FileMetaDataset()
    out.preamble = None
    atomic_write(
        path,
        lambda tmp: dcmwrite(
            tmp,
            out,
            implicit_vr=tsyntax == ImplicitVRLittleEndian,
            little_endian=tsyntax != ExplicitVRBigEndian,
        ),
    )
