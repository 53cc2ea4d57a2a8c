"""A synthetic PACS export with every kind of file a real one holds, and what each should become.

:func:`make_export` writes, under a root folder: nested folders with file names without
extension, ``.dcm`` and upper case; several encodings (explicit and implicit VR,
deflated, JPEG 2000, JPEG-LS, RLE); frontal images, a lateral, a pelvis, a CT, a DX
FOR PROCESSING image beside its processed one; non-DICOM files; a header that does not
parse and pixel data cut short; a byte-identical duplicate; and a DICOMDIR (pydicom
:class:`~pydicom.fileset.FileSet`) whose records reference its own images, one file
outside the root and one file that was deleted.  The returned :class:`Export` says, for
every file, the ``files.csv`` status and reason a batch run must give it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from chexnet_dicom.testing import synth

__all__ = ["Export", "make_export"]


@dataclass
class Export:
    """What :func:`make_export` wrote.

    Attributes
    ----------
    root
        The export root.
    expected
        Relative path -> (status, reason) that ``files.csv`` must show.
    outside
        A DICOM file outside the root that a DICOMDIR references (must never be read).
    studies
        StudyInstanceUID -> expected ``studies.csv`` status.
    """

    root: Path
    expected: dict[str, tuple[str, str]] = field(default_factory=dict)
    outside: Path | None = None
    studies: dict[str, str] = field(default_factory=dict)


def _uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.77.{n}"


def _image(seed: int, study: int, *, size: int, **kw: object) -> Dataset:
    view = "lateral" if kw.get("view_position") in ("LL", "RL") else "frontal"
    pixels = synth.chest_phantom(size, seed=seed, view=view)  # type: ignore[arg-type]
    return synth.make_dataset(
        pixels,
        seed=seed,
        study_uid=_uid(study),
        patient_id=f"PAT{study % 5:03d}",
        extra={
            "Manufacturer": "ACME" if seed % 2 else "Globex",
            "PatientSex": "FM"[seed % 2],
            "PatientAge": f"{30 + seed:03d}Y",
        },
        **kw,
    )


def make_export(root: str | os.PathLike[str], *, size: int = 96, extra_studies: int = 0) -> Export:
    """Write the export under ``root`` (created) and return what each file must become.

    Parameters
    ----------
    root
        The export root; its parent receives the file the DICOMDIR's outside reference names.
    size
        Side of the images (small by default: the tests analyse them).
    extra_studies
        One-image frontal studies to add under ``bulk/`` (a longer run, for the resume tests).
    """
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    exp = Export(base)

    def put(rel: str, ds: Dataset, status: str, reason: str = "", syntax: str | None = None) -> None:
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        synth.write(synth.encode(ds, syntax) if syntax else ds, path)
        exp.expected[rel] = (status, reason)

    # study 1: PA + lateral, names without extension
    put("2019/PAT000/IMG0001", _image(1, 1, size=size), "analysed")
    put(
        "2019/PAT000/IMG0002",
        _image(2, 1, size=size, view_position="LL", series_number=2),
        "skipped",
        "VIEW_NOT_FRONTAL",
    )
    exp.studies[_uid(1)] = "analysed"
    # study 2: JPEG 2000 with a byte-identical copy
    put("2019/PAT001/s1/img1.dcm", _image(3, 2, size=size), "analysed", syntax=JPEG2000Lossless)
    shutil.copyfile(base / "2019/PAT001/s1/img1.dcm", base / "2019/PAT001/s1/zz_copy.DCM")
    exp.expected["2019/PAT001/s1/zz_copy.DCM"] = ("duplicate", "DUPLICATE_INSTANCE")
    exp.studies[_uid(2)] = "analysed"
    # study 3: two frontal images, JPEG-LS (upper-case name) and RLE (implicit VR nowhere near)
    put("2020/A/B/C/X.DCM", _image(4, 3, size=size), "analysed", syntax=JPEGLSLossless)
    put("2020/A/B/C/Y", _image(5, 3, size=size, series_number=2), "analysed", syntax=RLELossless)
    exp.studies[_uid(3)] = "analysed"
    # study 4: implicit VR, and a deflated copy-free second study
    put("2020/implicit.dcm", _image(6, 4, size=size), "analysed", syntax=ImplicitVRLittleEndian)
    exp.studies[_uid(4)] = "analysed"
    put("2020/deflated.dcm", _image(7, 5, size=size), "analysed", syntax=DeflatedExplicitVRLittleEndian)
    exp.studies[_uid(5)] = "analysed"
    # study 6: processed + FOR PROCESSING
    put("2021/proc/presentation", _image(8, 6, size=size), "analysed")
    put(
        "2021/proc/processing",
        _image(9, 6, size=size, presentation_intent="FOR PROCESSING", series_number=2),
        "skipped",
        "FOR_PROCESSING_REDUNDANT",
    )
    exp.studies[_uid(6)] = "analysed"
    # study 7: not a chest; study 8: a CT
    put("2021/other/pelvis.dcm", _image(10, 7, size=size, body_part="PELVIS"), "skipped", "BODY_PART")
    exp.studies[_uid(7)] = "skipped"
    put("2021/other/ct.dcm", _image(11, 8, size=size, modality_value="CT"), "skipped", "MODALITY")
    exp.studies[_uid(8)] = "skipped"
    # study 9: pixel data cut short (the header gate accepts it; decoding fails)
    put("2021/broken/truncated.dcm", _image(12, 9, size=size), "failed", "CORRUPT_PIXELS")
    raw = (base / "2021/broken/truncated.dcm").read_bytes()
    (base / "2021/broken/truncated.dcm").write_bytes(raw[: len(raw) - size * size // 2])
    exp.studies[_uid(9)] = "failed"
    # a header that does not parse (belongs to no study)
    (base / "2021/broken/garbage.dcm").write_bytes(
        b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7fgarbage"
    )
    exp.expected["2021/broken/garbage.dcm"] = ("failed", "CORRUPT_HEADER")
    # non-DICOM files
    for rel, data in (
        ("README.txt", b"export notes\n"),
        ("2019/Thumbs.db", os.urandom(300)),
        ("2020/notes", b"x"),
    ):
        (base / rel).write_bytes(data)
        exp.expected[rel] = ("not_dicom", "NOT_DICOM")
    for i in range(extra_studies):
        put(f"bulk/S{i:04d}/IMG", _image(100 + i, 100 + i, size=size), "analysed")
        exp.studies[_uid(100 + i)] = "analysed"
    _dicomdir(exp, size)
    return exp


def _dicomdir(exp: Export, size: int) -> None:
    """A FileSet folder: two studies' images, an outside reference and a missing file."""
    fs = FileSet()
    images = [_image(20 + i, 20 + i, size=size) for i in range(4)]
    for ds in images:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta = meta
        fs.add(ds)
    folder = exp.root / "cd"
    fs.write(folder)
    ds = dcmread(folder / "DICOMDIR")
    refs = [item for item in ds.DirectoryRecordSequence if "ReferencedFileID" in item]
    by_sop = {str(item.ReferencedSOPInstanceUIDInFile): item for item in refs}
    paths = {str(im.SOPInstanceUID): list(by_sop[str(im.SOPInstanceUID)].ReferencedFileID) for im in images}
    for i, im in enumerate(images[:2]):
        rel = "cd/" + "/".join(paths[str(im.SOPInstanceUID)])
        exp.expected[rel] = ("analysed", "")
        exp.studies[_uid(20 + i)] = "analysed"
    # the third image moves outside the root; its reference keeps its length (record offsets)
    third = by_sop[str(images[2].SOPInstanceUID)]
    old = "\\".join(third.ReferencedFileID)
    ups = 2  # from root/cd: up to root, then out of it
    name = "OUTSIDE".ljust(len(old) - 3 * ups, "X")
    third.ReferencedFileID = [".."] * ups + [name]
    outside = exp.root.parent / name
    (folder / Path(*paths[str(images[2].SOPInstanceUID)])).replace(outside)
    exp.outside = outside
    exp.expected["../" + name] = ("skipped", "OUTSIDE_ROOT")
    # the fourth image's file is deleted
    gone = folder / Path(*paths[str(images[3].SOPInstanceUID)])
    gone.unlink()
    exp.expected["cd/" + "/".join(paths[str(images[3].SOPInstanceUID)])] = ("failed", "MISSING_FILE")
    ds.save_as(folder / "DICOMDIR", enforce_file_format=True)
    exp.expected["cd/DICOMDIR"] = ("index", "")
