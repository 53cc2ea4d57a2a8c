"""Decompression bombs: constant images of any size in every syntax the ingest decodes.

Each is a valid frontal chest DX instance whose pixels are all one value, written cheaply
(the RLE stream is built by hand, the deflated file is the zlib of a mostly-zero
dataset), so tests and ``benchmarks/memory.py`` can make 16384 x 16384 inputs in seconds.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from chexnet_dicom.testing.synth import make_dataset

__all__ = ["BOMB_SYNTAXES", "write_bomb"]

#: Syntax name -> transfer syntax UID.
BOMB_SYNTAXES = {
    "rle": RLELossless,
    "j2k": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
    "deflated": DeflatedExplicitVRLittleEndian,
    "native": ExplicitVRLittleEndian,
}


def _rle_zeros(rows: int, cols: int) -> bytes:
    """An RLE Lossless frame of 16-bit zeros: two byte-plane segments of PackBits runs."""
    seg = bytearray()
    for _ in range(rows):
        left = cols
        while left:
            n = min(128, left)
            seg += bytes((257 - n, 0)) if n > 1 else b"\x00\x00"
            left -= n
    if len(seg) % 2:
        seg += b"\x00"
    header = np.zeros(16, dtype="<u4")
    header[0], header[1], header[2] = 2, 64, 64 + len(seg)
    return header.tobytes() + bytes(seg) * 2


def write_bomb(path: str | os.PathLike[str], syntax: str, size: int, *, seed: int = 1) -> Path:
    """Write a ``size x size`` 16-bit (12 stored) constant DX image in ``syntax`` (:data:`BOMB_SYNTAXES`).

    Returns
    -------
    pathlib.Path
        The file.
    """
    out = Path(path)
    small = np.zeros((8, 8), dtype=np.uint16)
    ds: Dataset = make_dataset(
        small,
        seed=seed,
        study_key=f"bomb-{syntax}-{size}-{seed}",
        bits_stored=12,
        window=(2048.0, 4096.0),
        imager_pixel_spacing=0.1,
    )
    ds.Rows = ds.Columns = size
    ts = BOMB_SYNTAXES[syntax]
    if syntax == "rle":
        frame = _rle_zeros(size, size)
    elif syntax in ("j2k", "jpegls"):  # pydicom's encoders (pylibjpeg-openjpeg, pyjpegls)
        ds.compress(ts, np.zeros((size, size), dtype=np.uint16), generate_instance_uid=False)
        frame = b""
    else:
        frame = b""
    if frame:
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
    elif syntax in ("j2k", "jpegls"):
        pass
    else:
        ds.PixelData = bytes(size * size * 2)
        ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = ts
    if syntax == "deflated":
        raw = out.with_suffix(".tmp")
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(raw, enforce_file_format=True)
        data = raw.read_bytes()
        raw.unlink()
        meta_end = _meta_end(data)
        body = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = body.compress(data[meta_end:]) + body.flush()
        ds.file_meta.TransferSyntaxUID = ts
        head = Dataset()
        head.file_meta = ds.file_meta
        meta_ds = Path(out).with_suffix(".meta")
        from pydicom.filewriter import write_file_meta_info

        with open(meta_ds, "wb") as f:
            f.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(f, ds.file_meta, enforce_standard=True)  # type: ignore[arg-type]
        out.write_bytes(meta_ds.read_bytes() + deflated + (b"\x00" if len(deflated) % 2 else b""))
        meta_ds.unlink()
        return out
    ds.save_as(out, enforce_file_format=True)
    return out


def _meta_end(data: bytes) -> int:
    """Offset where the dataset starts after a Part 10 file meta group."""
    import struct

    pos = 132
    while data[pos : pos + 2] == b"\x02\x00":
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
            (length,) = struct.unpack_from("<I", data, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8 + length
    return pos
