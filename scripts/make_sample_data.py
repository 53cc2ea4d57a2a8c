#!/usr/bin/env python
"""Generate ``sample_data/``: small synthetic DICOM chest studies (no patient data).

Usage::

    .venv/bin/python scripts/make_sample_data.py [--out sample_data]

Every file comes from :mod:`chexnet_dicom.testing.synth` with fixed seeds, so running
the script again produces byte-identical files (a test checks it). The script also
writes ``README.md`` in the output folder describing every file.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from chexnet_dicom.testing import synth

REPO = Path(__file__).resolve().parents[1]
NOISE = 0.004  # less noise than the default keeps the committed files small


@dataclass(frozen=True)
class Case:
    """One sample file: where it goes, what it is, and how to build it."""

    path: str
    description: str
    build: Callable[[], Dataset]
    transfer_syntax: str
    with_meta: bool = True
    truncate_to: float | None = None  # keep this fraction of the file (broken files)


def _phantom(
    size: int | tuple[int, int],
    seed: int,
    view: Literal["frontal", "lateral"] = "frontal",
    lesion: synth.Lesion | None = None,
) -> np.ndarray:
    return synth.chest_phantom(size, seed=seed, view=view, noise=NOISE, lesion=lesion)


def _pa() -> Dataset:
    return synth.make_dataset(
        _phantom(512, 101),
        seed=1,
        study_key="study1",
        series_number=1,
        instance_number=1,
        view_position="PA",
        bits_stored=12,
        series_description="PA chest (synthetic)",
    )


def _lateral() -> Dataset:
    return synth.make_dataset(
        _phantom((512, 448), 102, view="lateral"),
        seed=1,
        study_key="study1",
        series_number=2,
        instance_number=1,
        view_position="LL",
        bits_stored=12,
        series_description="Lateral chest (synthetic)",
    )


def _cr_mono1_j2k() -> Dataset:
    return synth.make_dataset(
        _phantom(1024, 201, lesion=synth.Lesion(cy=0.40, cx=0.68, radius=0.025, amplitude=0.2)),
        modality="CR",
        photometric="MONOCHROME1",
        bits_stored=12,
        study_key="study2",
        view_position="PA",
        study_description="CHEST PA (SYNTHETIC)",
        series_description="CR PA MONOCHROME1 J2K (synthetic)",
    )


def _dx16_window() -> Dataset:
    # Data in 2000..62000 (DX requires rescale 1/0); the first window shows lungs and
    # mediastinum, the second is a narrow one: renderers must pick the first by default.
    return synth.make_dataset(
        _phantom(512, 301),
        bits_stored=16,
        stored_range=(2000, 62000),
        window=[(32000.0, 52000.0), (40000.0, 12000.0)],
        voi_lut_function="LINEAR",
        study_key="study3",
        view_position="AP",
        study_description="CHEST AP PORTABLE (SYNTHETIC)",
        series_description="DX AP 16-bit windowed (synthetic)",
    )


def _jpegls() -> Dataset:
    return synth.make_dataset(
        _phantom(640, 401),
        bits_stored=12,
        study_key="study4",
        view_position="PA",
        series_description="DX PA JPEG-LS (synthetic)",
    )


def _rle() -> Dataset:
    return synth.make_dataset(
        _phantom((600, 500), 501),
        modality="CR",
        bits_stored=10,
        rescale_slope=2.0,
        rescale_intercept=-1024.0,
        study_key="study5",
        view_position="PA",
        series_description="CR PA RLE (synthetic)",
    )


def _utf8_name() -> Dataset:
    return synth.make_dataset(
        np.rint(_phantom(512, 601) * 255).astype(np.uint8),
        bits_stored=8,
        window=(127.5, 256.0),
        patient_name="Παπαδοπούλου^Ελένη",
        specific_character_set="ISO_IR 192",
        study_key="study6",
        view_position="PA",
        series_description="DX PA JPEG baseline, UTF-8 name (synthetic)",
    )


def _legacy_implicit() -> Dataset:
    return synth.make_dataset(
        _phantom(512, 701),
        modality="CR",
        photometric="MONOCHROME1",
        bits_stored=10,
        window=None,
        study_key="study7",
        view_position="PA",
        series_description="CR PA implicit VR, no file meta (synthetic)",
    )


def _broken() -> Dataset:
    return synth.make_dataset(
        _phantom(256, 801),
        bits_stored=12,
        study_key="broken",
        view_position="PA",
        series_description="truncated pixel data (synthetic)",
    )


CASES: tuple[Case, ...] = (
    Case(
        "study1_pa_lateral/pa.dcm",
        "DX for presentation, PA, 12-bit MONOCHROME2, 512x512, Explicit VR Little Endian; "
        "series 1 of a PA + lateral study (same StudyInstanceUID).",
        _pa,
        ExplicitVRLittleEndian,
    ),
    Case(
        "study1_pa_lateral/lateral.dcm",
        "DX for presentation, left lateral (ViewPosition LL, PatientOrientation A\\F), 12-bit, "
        "512x448, JPEG-LS lossless; series 2 of the same study: skipped as not frontal.",
        _lateral,
        JPEGLSLossless,
    ),
    Case(
        "study2_cr_mono1_j2k/cr_pa_mono1.dcm",
        "CR PA, MONOCHROME1 (bright = low values), 12-bit, 1024x1024, JPEG 2000 lossy (ratio 10, "
        "LossyImageCompression 01), a small round opacity in the left upper zone.",
        _cr_mono1_j2k,
        JPEG2000,
    ),
    Case(
        "study3_dx16_window/dx_ap_16bit.dcm",
        "DX AP, 16-bit MONOCHROME2, stored values 2000..62000, two windows (32000/52000 chest, "
        "40000/12000 narrow: use the first), VOILUTFunction LINEAR, 512x512, JPEG 2000 lossless.",
        _dx16_window,
        JPEG2000Lossless,
    ),
    Case(
        "study4_jpegls/dx_pa_jpegls.dcm",
        "DX PA, 12-bit MONOCHROME2, 640x640, JPEG-LS lossless.",
        _jpegls,
        JPEGLSLossless,
    ),
    Case(
        "study5_rle/cr_pa_rle.dcm",
        "CR PA, 10-bit MONOCHROME2, RescaleSlope 2 / RescaleIntercept -1024 with a window in rescaled "
        "units, 600x500 (not square), RLE Lossless.",
        _rle,
        RLELossless,
    ),
    Case(
        "study6_utf8_name/dx_pa_jpeg.dcm",
        "DX PA, 8-bit, 512x512, JPEG baseline (lossy); PatientName in Greek, "
        "SpecificCharacterSet ISO_IR 192 (UTF-8).",
        _utf8_name,
        JPEGBaseline8Bit,
    ),
    Case(
        "study7_legacy_implicit/cr_pa_no_meta.dcm",
        "CR PA, MONOCHROME1, 10-bit, 512x512, Implicit VR Little Endian with no preamble and no "
        "file meta information (as old archives write), no window: renderers use the data range.",
        _legacy_implicit,
        ImplicitVRLittleEndian,
        with_meta=False,
    ),
    Case(
        "broken/truncated_pixel_data.dcm",
        "DX PA 12-bit 256x256 whose file is cut in the middle of Pixel Data: must give a typed "
        "corrupt-pixel error, never a crash.",
        _broken,
        ExplicitVRLittleEndian,
        truncate_to=0.6,
    ),
)

README_HEAD = """# sample_data: synthetic DICOM chest studies

**Everything here is synthetic**: the images are drawn by
`chexnet_dicom.testing.synth.chest_phantom` (a geometric phantom, not a radiograph of
anyone) and the names, IDs, dates and UIDs are made up (UIDs are `2.25.` UIDs derived
from fixed seeds). There is no patient data in this folder.

Regenerate (byte-identical) with:

    .venv/bin/python scripts/make_sample_data.py --out sample_data

Every file has its own study folder (the two files of `study1_pa_lateral` share one study).

| file | what it is | bytes | sha256 (first 16) |
|---|---|---|---|
"""


def generate(out: Path) -> list[Path]:
    """Write every sample file and the README under ``out``; return the written paths."""
    written: list[Path] = []
    rows: list[str] = []
    for case in CASES:
        path = out / case.path
        path.parent.mkdir(parents=True, exist_ok=True)
        ds = synth.encode(case.build(), case.transfer_syntax)
        synth.write(ds, path, with_meta=case.with_meta, preamble=case.with_meta)
        if case.truncate_to is not None:
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * case.truncate_to)])
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:16]
        rows.append(f"| `{case.path}` | {case.description} | {len(data)} | `{digest}` |")
        written.append(path)
    readme = out / "README.md"
    readme.write_text(README_HEAD + "\n".join(rows) + "\n", encoding="utf-8")
    written.append(readme)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO / "sample_data", help="output folder")
    parser.add_argument("--clean", action="store_true", help="remove the output folder first")
    args = parser.parse_args(argv)
    if args.clean and args.out.exists():
        shutil.rmtree(args.out)
    paths = generate(args.out)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files, {total} bytes, under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
