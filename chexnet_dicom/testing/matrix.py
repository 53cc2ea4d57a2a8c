"""The conformance matrix: real NIH radiographs written in every encoding the ingest reads.

Each :class:`Case` takes one NIH ChestX-ray14 image (8-bit PNG) and writes it as a frontal
chest CR or DX in one combination of the axes the ingest must handle: transfer syntax
(implicit and explicit VR, big endian, deflated, RLE, JPEG baseline, extended and lossless,
JPEG-LS lossless and near-lossless, JPEG 2000 lossless and lossy), preamble and file meta,
MONOCHROME1/2, BitsStored 8-16 signed and unsigned, Modality LUT by rescale and by sequence,
VOI by window (LINEAR, LINEAR_EXACT, SIGMOID) and by VOI LUT Sequence, and Presentation LUT
Shape.  The stored values are built so that the standard rendering gives back the NIH
picture (up to quantisation and the loss of a lossy codec): a reader that renders a case
right feeds the model the same picture, whatever the encoding.

Not a cross-product: every axis value appears at least once, a few cases combine several.
:data:`CASES` is the whole matrix, :data:`FAST` a subset (one case per family) for quick runs.

JPEG processes 1, 2/4 and 14 are written with dcmtk's ``dcmcjpeg`` (pydicom has no encoder
for them); :func:`write_matrix` leaves those cases out, and says so in its result, when the
tool is absent.  HTJ2K has decoders here (pylibjpeg-openjpeg) but no encoder, so the matrix
holds no HTJ2K case.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom import dcmread
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from chexnet_dicom.testing import synth

__all__ = [
    "CASES",
    "EXPORT_ENCODINGS",
    "FAST",
    "Case",
    "Matrix",
    "MatrixFile",
    "frontal_keys",
    "nih_picture",
    "write_export",
    "write_matrix",
]

#: Transfer syntaxes written by dcmtk's ``dcmcjpeg`` (pydicom has no encoder) and its options.
DCMCJPEG_OPTIONS: dict[str, tuple[str, ...]] = {
    JPEGExtended12Bit: ("+ee", "+q", "95"),
    JPEGLosslessSV1: ("+e1",),
}


@dataclass(frozen=True)
class Case:
    """One cell of the matrix.

    Attributes
    ----------
    name
        File name (and study key) of the case.
    syntax
        Transfer syntax UID.
    image
        Index of the NIH image (in :func:`write_matrix`'s ``keys``) the case is made from.
    modality
        ``"DX"`` or ``"CR"`` (rescale other than 1/0 needs CR to stay conformant).
    photometric, bits, signed
        MONOCHROME1/2, BitsStored, PixelRepresentation 1.
    modality_lut
        ``"rescale"`` (slope 1, intercept 0 unless ``rescale`` says otherwise) or ``"sequence"``.
    rescale
        (slope, intercept) for ``modality_lut="rescale"``.
    voi
        ``"LINEAR"``, ``"LINEAR_EXACT"``, ``"SIGMOID"`` (a window with that VOILUTFunction;
        LINEAR writes no VOILUTFunction) or ``"LUT"`` (a VOI LUT Sequence, no window).
    shape
        PresentationLUTShape: ``"auto"`` (INVERSE for MONOCHROME1, IDENTITY for MONOCHROME2
        on DX, absent on CR), ``"IDENTITY"``, ``"INVERSE"`` or None.
    meta, preamble
        Write the file meta information / the 128-byte preamble.
    """

    name: str
    syntax: str
    image: int = 0
    modality: Literal["DX", "CR"] = "DX"
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME2"
    bits: int = 12
    signed: bool = False
    modality_lut: Literal["rescale", "sequence"] = "rescale"
    rescale: tuple[float, float] = (1.0, 0.0)
    voi: Literal["LINEAR", "LINEAR_EXACT", "SIGMOID", "LUT"] = "LINEAR"
    shape: Literal["auto", "IDENTITY", "INVERSE"] | None = "auto"
    meta: bool = True
    preamble: bool = True

    @property
    def lossy(self) -> bool:
        """Whether the encoding loses information (the picture is then only close)."""
        return self.syntax in (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000)


#: The whole matrix: every axis value at least once, a few combinations.
CASES: tuple[Case, ...] = (
    # transfer syntaxes (12-bit MONOCHROME2 DX unless the codec needs otherwise)
    Case("ts_explicit_le", ExplicitVRLittleEndian, image=0),
    Case("ts_implicit_le", ImplicitVRLittleEndian, image=1),
    Case("ts_big_endian", ExplicitVRBigEndian, image=2, bits=16),
    Case("ts_deflated", DeflatedExplicitVRLittleEndian, image=3),
    Case("ts_rle", RLELossless, image=4, bits=16, signed=True),
    Case("ts_jpeg_baseline", JPEGBaseline8Bit, image=5, bits=8),
    Case("ts_jpeg_extended_12", JPEGExtended12Bit, image=0, bits=12),
    Case("ts_jpeg_lossless_sv1", JPEGLosslessSV1, image=1, bits=16),
    Case("ts_jpegls_lossless", JPEGLSLossless, image=2, bits=14),
    Case("ts_jpegls_near", JPEGLSNearLossless, image=3, bits=12),
    Case("ts_j2k_lossless", JPEG2000Lossless, image=4, bits=16),
    Case("ts_j2k_lossy", JPEG2000, image=5, bits=12, photometric="MONOCHROME1"),
    # preamble and file meta
    Case("meta_no_preamble", ExplicitVRLittleEndian, image=0, preamble=False),
    Case("meta_none_implicit", ImplicitVRLittleEndian, image=1, modality="CR", meta=False, preamble=False),
    Case(
        "meta_none_implicit_voi_lut",
        ImplicitVRLittleEndian,
        image=2,
        modality="CR",
        voi="LUT",
        meta=False,
        preamble=False,
    ),
    Case("meta_none_explicit_be", ExplicitVRBigEndian, image=3, bits=16, meta=False, preamble=False),
    # photometric and bit depths, signed and unsigned
    Case("px_mono1_10", ExplicitVRLittleEndian, image=4, photometric="MONOCHROME1", bits=10, modality="CR"),
    Case("px_8_unsigned", ExplicitVRLittleEndian, image=5, bits=8),
    Case("px_8_signed", ExplicitVRLittleEndian, image=0, bits=8, signed=True),
    Case("px_10_signed", JPEGLSLossless, image=1, bits=10, signed=True),
    Case("px_12_signed_mono1", JPEG2000Lossless, image=2, bits=12, signed=True, photometric="MONOCHROME1"),
    Case("px_14_signed", RLELossless, image=3, bits=14, signed=True),
    Case("px_16_unsigned_mono1", ExplicitVRLittleEndian, image=4, bits=16, photometric="MONOCHROME1"),
    # Modality LUT by rescale and by sequence
    Case("mlut_rescale_cr", ExplicitVRLittleEndian, image=5, modality="CR", rescale=(2.0, -1024.0)),
    Case("mlut_sequence", ExplicitVRLittleEndian, image=0, modality_lut="sequence", bits=12),
    Case("mlut_sequence_implicit", ImplicitVRLittleEndian, image=1, modality_lut="sequence", voi="LUT"),
    # VOI by window function and by LUT
    Case("voi_linear_exact", ExplicitVRLittleEndian, image=2, voi="LINEAR_EXACT"),
    Case("voi_sigmoid", ExplicitVRLittleEndian, image=3, voi="SIGMOID"),
    Case("voi_lut_sequence", JPEGLSLossless, image=4, voi="LUT"),
    Case("voi_lut_big_endian", ExplicitVRBigEndian, image=5, voi="LUT", bits=16),
    # Presentation LUT Shape
    Case("plut_inverse_mono2", ExplicitVRLittleEndian, image=0, shape="INVERSE"),
    Case("plut_identity_mono2", RLELossless, image=1, shape="IDENTITY", bits=12),
)

#: One case per family, for the default (fast) test run.
FAST: tuple[str, ...] = (
    "ts_implicit_le",
    "ts_big_endian",
    "ts_j2k_lossy",
    "ts_jpeg_lossless_sv1",
    "meta_none_implicit_voi_lut",
    "px_14_signed",
    "mlut_sequence",
    "voi_sigmoid",
    "plut_inverse_mono2",
)


@dataclass(frozen=True)
class MatrixFile:
    """One file the matrix wrote.

    Attributes
    ----------
    case
        Its case.
    path
        Where it is.
    key
        The NIH image it holds.
    study_uid, sop_uid
        Its study and instance (each case is a study of its own).
    """

    case: Case
    path: Path
    key: str
    study_uid: str
    sop_uid: str


@dataclass
class Matrix:
    """What :func:`write_matrix` wrote, and the cases it could not write.

    Attributes
    ----------
    root
        The folder holding one file per case.
    files
        Case name -> :class:`MatrixFile`.
    missing
        Case name -> why it was not written (an encoder is not installed).
    """

    root: Path
    files: dict[str, MatrixFile] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


def nih_picture(nih: str | os.PathLike[str], key: str, size: int | None = None) -> np.ndarray:
    """The grey picture of NIH image ``key`` as a float image in [0, 1] (RGBA reduced to grey).

    Parameters
    ----------
    nih
        The ``nih`` folder (``images/*.png``).
    key
        Image name, e.g. ``00000075_000.png``.
    size
        Side to resize to (LANCZOS), or None for the file's own size.
    """
    from PIL import Image

    with Image.open(Path(nih) / "images" / key) as im:
        grey = im.convert("L")
        if size is not None and grey.size != (size, size):
            grey = grey.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(grey, dtype=np.float64) / 255.0


def _sigmoid_stored(picture: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Stored values and a (centre, width) whose SIGMOID rendering (PS3.3 C.11.2.1.3.1) is ``picture``."""
    centre, width = (lo + hi) / 2.0, (hi - lo) / 4.0
    p = np.clip(picture, 0.5 / 255.0, 1.0 - 0.5 / 255.0)
    # y = 1 / (1 + exp(-4 (x - c) / w))  <=>  x = c + (w / 4) * logit(y)
    x = centre + (width / 4.0) * np.log(p / (1.0 - p))
    return np.clip(np.rint(x), lo, hi).astype(np.int64), (centre, width)


def _dataset(
    case: Case, picture: np.ndarray, key: str, row: dict[str, str], index: int, study_key: str
) -> Any:
    lo, hi = synth.stored_range_for(case.bits, int(case.signed))
    kw: dict[str, Any] = {
        "modality": case.modality,
        "photometric": case.photometric,
        "bits_stored": case.bits,
        "pixel_representation": int(case.signed),
        "presentation_lut_shape": case.shape,
        "modality_lut": case.modality_lut == "sequence",
        "voi_lut": case.voi == "LUT",
        "window": None if case.voi == "LUT" else "auto",
        "voi_lut_function": case.voi if case.voi in ("LINEAR_EXACT", "SIGMOID") else None,
    }
    if case.modality_lut == "rescale":
        kw["rescale_slope"], kw["rescale_intercept"] = case.rescale
    pixels: np.ndarray = picture.astype(np.float32)
    if case.voi == "SIGMOID":
        if case.modality_lut != "rescale" or case.rescale != (1.0, 0.0):
            raise ValueError("the SIGMOID case needs the identity rescale")
        inverted = case.photometric == "MONOCHROME1" or case.shape == "INVERSE"
        target = 1.0 - picture if inverted else picture
        pixels, kw["window"] = _sigmoid_stored(target, lo, hi)
    return synth.make_dataset(
        pixels,
        view_position=row.get("View Position", "PA") or "PA",
        patient_id=f"NIH{int(row.get('Patient ID', '0') or 0):08d}",
        patient_name="NIH^Anonymous",
        study_key=study_key,
        seed=index,
        study_description="CHEST (NIH ChestX-ray14 conformance matrix)",
        extra={
            "ImageComments": key,
            "Manufacturer": "NIH ChestX-ray14 (PNG written as DICOM)",
            "PatientSex": row.get("Patient Gender", "O") or "O",
        },
        **kw,
    )


def _dcmcjpeg(ds: Any, syntax: str, tool: str) -> Any:
    """Encode ``ds`` (explicit VR LE) with dcmtk's ``dcmcjpeg``; return the encoded dataset."""
    with tempfile.TemporaryDirectory(prefix="chexdcm-matrix-") as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        synth.write(ds, src)
        proc = subprocess.run(
            [tool, *DCMCJPEG_OPTIONS[syntax], str(src), str(dst)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dcmcjpeg failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
        out = dcmread(dst)
    if out.file_meta.TransferSyntaxUID != syntax:
        raise RuntimeError(f"dcmcjpeg wrote {out.file_meta.TransferSyntaxUID}, not {syntax}")
    return out


def _labels(nih: Path) -> dict[str, dict[str, str]]:
    with (nih / "labels.csv").open(newline="", encoding="utf-8") as fh:
        return {r["Image Index"]: r for r in csv.DictReader(fh)}


def frontal_keys(nih: str | os.PathLike[str], n: int) -> list[str]:
    """The first ``n`` NIH images (sorted by name) whose View Position is PA or AP."""
    labels = _labels(Path(nih))
    keys = [k for k in sorted(labels) if labels[k].get("View Position") in ("PA", "AP")]
    if len(keys) < n:
        raise ValueError(f"only {len(keys)} frontal NIH images, {n} asked")
    return keys[:n]


def write_matrix(
    nih: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    cases: Iterable[Case] | None = None,
    keys: Sequence[str] | None = None,
    size: int | None = 256,
) -> Matrix:
    """Write the matrix's cases as ``root/<case name>.dcm``, one study per case.

    Parameters
    ----------
    nih
        The NIH folder (``images/``, ``labels.csv``).
    root
        Output folder (created).
    cases
        The cases to write (default :data:`CASES`).
    keys
        NIH image names that ``Case.image`` indexes (default: the first six frontal images).
    size
        Side the pictures are resized to (None keeps 512x512).

    Returns
    -------
    Matrix
        The files written and the cases left out (with why).
    """
    nih = Path(nih)
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    chosen = tuple(CASES if cases is None else cases)
    need = max((c.image for c in chosen), default=0) + 1
    names = list(keys) if keys is not None else frontal_keys(nih, max(need, 6))
    labels = _labels(nih)
    pictures: dict[int, np.ndarray] = {}
    tool = shutil.which("dcmcjpeg")
    out = Matrix(base)
    for index, case in enumerate(chosen):
        if case.syntax in DCMCJPEG_OPTIONS and tool is None:
            out.missing[case.name] = (
                "dcmtk's dcmcjpeg is not installed (needed for JPEG processes 2/4 and 14)"
            )
            continue
        key = names[case.image]
        if case.image not in pictures:
            pictures[case.image] = nih_picture(nih, key, size)
        path = base / f"{case.name}.dcm"
        out.files[case.name] = _write_case(
            case, pictures[case.image], key, labels.get(key, {}), index, f"matrix:{case.name}", path, tool
        )
    return out


def _write_case(
    case: Case,
    picture: np.ndarray,
    key: str,
    row: dict[str, str],
    index: int,
    study_key: str,
    path: Path,
    tool: str | None,
) -> MatrixFile:
    ds = _dataset(case, picture, key, row, index, study_key)
    if case.syntax in DCMCJPEG_OPTIONS:
        if tool is None:
            raise RuntimeError("dcmtk's dcmcjpeg is not installed")
        ds = _dcmcjpeg(ds, case.syntax, tool)
    elif case.syntax != ExplicitVRLittleEndian:
        ds = synth.encode(ds, case.syntax, jpeg_quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    synth.write(ds, path, with_meta=case.meta, preamble=case.preamble)
    return MatrixFile(case, path, key, str(ds.StudyInstanceUID), str(ds.SOPInstanceUID))


#: The six encodings of an export of :func:`write_export` (implicit VR without file meta
#: with a VOI LUT Sequence among them, as legacy archives hold).
EXPORT_ENCODINGS: tuple[str, ...] = (
    "meta_none_implicit_voi_lut",
    "ts_explicit_le",
    "ts_deflated",
    "ts_rle",
    "ts_jpegls_lossless",
    "ts_j2k_lossless",
)


def write_export(
    nih: str | os.PathLike[str],
    root: str | os.PathLike[str],
    n: int,
    *,
    encodings: Sequence[str] = EXPORT_ENCODINGS,
    size: int | None = 256,
) -> dict[str, MatrixFile]:
    """Write ``n`` frontal NIH images as an export: one study per image, nested by patient.

    Image ``i`` is written in the matrix case ``encodings[i % len(encodings)]``.  Returns
    relative path -> :class:`MatrixFile`.
    """
    nih = Path(nih)
    base = Path(root)
    by_name = {c.name: c for c in CASES}
    labels = _labels(nih)
    tool = shutil.which("dcmcjpeg")
    out: dict[str, MatrixFile] = {}
    for i, key in enumerate(frontal_keys(nih, n)):
        case = by_name[encodings[i % len(encodings)]]
        row = labels.get(key, {})
        rel = f"p{int(row.get('Patient ID', '0') or 0) % 7}/{row.get('Patient ID', '0')}/{key.removesuffix('.png')}"
        picture = nih_picture(nih, key, size)
        out[rel] = _write_case(case, picture, key, row, i, f"nih-export:{key}", base / rel, tool)
    return out
