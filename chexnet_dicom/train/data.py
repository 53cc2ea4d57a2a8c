"""Training datasets: NIH ChestX-ray14, CheXpert-style CSVs and DICOM folders + labels.

Every source is turned into a list of :class:`Record` (one image: a key, the file to
read, the patient it belongs to and a 14-vector of labels in
:data:`~chexnet_dicom.model.labels.LABELS` order).  Splits (:mod:`.splits`) work on
records by patient; the preprocessing cache (:mod:`.cache`) decodes each record once.

Label semantics
---------------
- NIH ``Data_Entry`` CSVs: a finding is positive when its name appears in
  ``Finding Labels`` (``|``-separated); ``No Finding`` means all 14 negative.
- CheXpert-style CSVs: one column per finding, values ``1`` positive, ``0`` negative,
  ``-1`` uncertain, empty = not mentioned (negative).  Uncertain labels follow the
  ``uncertain`` policy: ``"zeros"`` (U-Zeros), ``"ones"`` (U-Ones).  Findings absent
  from the CSV are negative, and listed in :attr:`LabelTable.missing_findings`.
- DICOM + CSV: a CSV with a key column (``SOPInstanceUID`` or ``AccessionNumber``) and
  either a NIH-style ``Finding Labels`` column or one 0/1 column per finding.

Pixel semantics: :func:`read_training_image` returns the [0, 1] display image (bright = dense)
through :func:`chexnet_dicom.transforms.load_chest_image`, the loader inference uses
(six of the 500 NIH PNGs are RGBA with equal colour channels: converted to grey).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from chexnet_dicom.errors import ConfigError, InputError
from chexnet_dicom.logs import phi_ref
from chexnet_dicom.model.labels import LABELS, NUM_CLASSES

__all__ = [
    "LabelTable",
    "Record",
    "dicom_records",
    "read_training_image",
    "nih_labels",
    "nih_records",
    "chexpert_records",
    "parse_finding_labels",
    "positives_per_class",
    "read_csv_rows",
]

log = logging.getLogger(__name__)

UncertainPolicy = Literal["zeros", "ones"]

#: Columns of the official NIH ``Data_Entry_2017*.csv`` this module relies on.
NIH_IMAGE = "Image Index"
NIH_FINDINGS = "Finding Labels"
NIH_PATIENT = "Patient ID"
NO_FINDING = "No Finding"


@dataclass(frozen=True)
class Record:
    """One training image.

    Attributes
    ----------
    key
        Unique image key (NIH ``Image Index``, CheXpert ``Path``, DICOM SOPInstanceUID
        or accession); used in split files and prediction CSVs.
    path
        File to decode (PNG/JPEG or DICOM).
    patient
        Patient identifier; splits never put one patient in two subsets.
    labels
        float32 (14,) in :data:`LABELS` order, 0 or 1.
    meta
        Extra columns kept for subgroup analysis (sex, age, view position).
    """

    key: str
    path: Path
    patient: str
    labels: np.ndarray
    meta: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class LabelTable:
    """Labels read from a CSV before they are joined with image files.

    Attributes
    ----------
    keys, patients
        One entry per row.
    labels
        float32 (rows, 14).
    meta
        Per-row extra columns.
    missing_findings
        Findings the source does not label at all (treated as negative).
    """

    keys: list[str]
    patients: list[str]
    labels: np.ndarray
    meta: list[dict[str, str]]
    missing_findings: tuple[str, ...] = ()


def read_csv_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read a CSV (plain or ``.gz``) into dictionaries, with a clear error when absent.

    Raises
    ------
    ConfigError
        When the file does not exist or has no header.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"labels file not found: {p}; check the [data] section of the recipe")
    raw = p.read_bytes()
    if p.suffix == ".gz":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ConfigError(f"labels file {p} has no header row")
    return list(reader)


def parse_finding_labels(text: str) -> np.ndarray:
    """Parse a NIH ``Finding Labels`` cell into a 14-vector.

    Parameters
    ----------
    text
        For example ``"Atelectasis|Effusion"`` or ``"No Finding"``.

    Returns
    -------
    numpy.ndarray
        float32 (14,) in :data:`LABELS` order.

    Raises
    ------
    ConfigError
        For a finding name that is not one of the 14 (or ``No Finding``).
    """
    vec = np.zeros(NUM_CLASSES, dtype=np.float32)
    for part in text.split("|"):
        name = part.strip()
        if not name or name == NO_FINDING:
            continue
        key = name.replace(" ", "_")
        if key not in LABELS:
            raise ConfigError(f"unknown finding {name!r} in Finding Labels; known: {', '.join(LABELS)}")
        vec[LABELS.index(key)] = 1.0
    return vec


def _require_columns(rows: list[dict[str, str]], columns: Sequence[str], path: object) -> None:
    have = set(rows[0]) if rows else set()
    missing = [c for c in columns if c not in have]
    if missing:
        raise ConfigError(f"labels file {path} lacks column(s) {missing}; found {sorted(have)}")


def nih_labels(path: str | os.PathLike[str]) -> LabelTable:
    """Read a NIH ``Data_Entry`` CSV (the official format; ``.csv`` or ``.csv.gz``).

    Returns
    -------
    LabelTable
        Keys are ``Image Index`` values; patients are ``Patient ID``.
    """
    rows = read_csv_rows(path)
    _require_columns(rows, (NIH_IMAGE, NIH_FINDINGS, NIH_PATIENT), path)
    keys = [r[NIH_IMAGE].strip() for r in rows]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"labels file {path} lists an image more than once")
    labels = (
        np.stack([parse_finding_labels(r[NIH_FINDINGS]) for r in rows])
        if rows
        else np.zeros((0, NUM_CLASSES), np.float32)
    )
    meta = [
        {
            "sex": r.get("Patient Gender", ""),
            "age": r.get("Patient Age", ""),
            "view": r.get("View Position", ""),
        }
        for r in rows
    ]
    return LabelTable(keys, [str(int(r[NIH_PATIENT])) for r in rows], labels, meta)


def nih_records(images: str | os.PathLike[str], labels_csv: str | os.PathLike[str]) -> list[Record]:
    """Join a NIH PNG folder with its ``Data_Entry`` CSV.

    Only rows whose image exists are kept (the folder may hold a subset of the CSV);
    an image without a CSV row is an error, since it would silently be unlabelled.

    Returns
    -------
    list of Record
        Sorted by key.
    """
    table = nih_labels(labels_csv)
    folder = Path(images)
    if not folder.is_dir():
        raise ConfigError(f"image folder not found: {folder}")
    present = {p.name for p in folder.iterdir() if p.suffix.lower() == ".png"}
    index = {k: i for i, k in enumerate(table.keys)}
    unlabelled = sorted(present - set(index))
    if unlabelled:
        raise ConfigError(f"{len(unlabelled)} images in {folder} have no row in {labels_csv}")
    records = [
        Record(k, folder / k, table.patients[index[k]], table.labels[index[k]], table.meta[index[k]])
        for k in sorted(present)
    ]
    if not records:
        raise ConfigError(f"no PNG images found in {folder}")
    return records


def _uncertain_value(cell: str, policy: UncertainPolicy, where: str) -> float:
    cell = cell.strip()
    if cell == "":
        return 0.0
    try:
        v = float(cell)
    except ValueError as exc:
        raise ConfigError(f"label {cell!r} in {where} is not 1, 0, -1 or empty") from exc
    if v == 1.0:
        return 1.0
    if v == 0.0:
        return 0.0
    if v == -1.0:
        return 1.0 if policy == "ones" else 0.0
    raise ConfigError(f"label {cell!r} in {where} is not 1, 0, -1 or empty")


# CheXpert names for the findings the two label sets share.
CHEXPERT_ALIASES: dict[str, tuple[str, ...]] = {
    "Effusion": ("Pleural Effusion",),
    "Pleural_Thickening": ("Pleural Other",),
}


def chexpert_records(
    labels_csv: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    uncertain: UncertainPolicy = "zeros",
    path_column: str = "Path",
    patient_column: str | None = None,
) -> tuple[list[Record], tuple[str, ...]]:
    """Read a CheXpert-style CSV (one column per finding, 1/0/-1/empty).

    Parameters
    ----------
    labels_csv
        The CSV.
    root
        Folder the ``Path`` column is relative to.
    uncertain
        ``"zeros"`` (U-Zeros) or ``"ones"`` (U-Ones) for ``-1`` labels.
    path_column
        Column with the image path.
    patient_column
        Column with the patient; when None the patient is taken from a
        ``patientNNNNN`` path component (CheXpert layout).

    Returns
    -------
    (list of Record, tuple of str)
        Records, and the findings the CSV does not label (negative for every image).
    """
    if uncertain not in ("zeros", "ones"):
        raise ConfigError(f"uncertain policy must be 'zeros' or 'ones', not {uncertain!r}")
    rows = read_csv_rows(labels_csv)
    _require_columns(rows, (path_column,), labels_csv)
    header = set(rows[0]) if rows else set()
    columns: dict[str, str | None] = {}
    for name in LABELS:
        candidates = (name, name.replace("_", " "), *CHEXPERT_ALIASES.get(name, ()))
        columns[name] = next((c for c in candidates if c in header), None)
    missing = tuple(n for n, c in columns.items() if c is None)
    base = Path(root)
    records = []
    for i, r in enumerate(rows):
        rel = r[path_column].strip()
        vec = np.zeros(NUM_CLASSES, np.float32)
        for j, name in enumerate(LABELS):
            col = columns[name]
            if col is not None:
                vec[j] = _uncertain_value(r[col], uncertain, f"row {i + 2} column {col!r}")
        if patient_column is not None:
            patient = r[patient_column].strip()
        else:
            parts = [p for p in Path(rel).parts if p.startswith("patient")]
            if not parts:
                raise ConfigError(
                    f"row {i + 2}: cannot find the patient in the path; set patient_column in the recipe"
                )
            patient = parts[0]
        meta = {"sex": r.get("Sex", ""), "age": r.get("Age", ""), "view": r.get("AP/PA", "")}
        records.append(Record(rel, base / rel, patient, vec, meta))
    if len({r.key for r in records}) != len(records):
        raise ConfigError(f"labels file {labels_csv} lists an image more than once")
    return records, missing


def _labels_from_row(row: dict[str, str], where: str) -> np.ndarray:
    if NIH_FINDINGS in row:
        return parse_finding_labels(row[NIH_FINDINGS])
    vec = np.zeros(NUM_CLASSES, np.float32)
    for j, name in enumerate(LABELS):
        for col in (name, name.replace("_", " ")):
            if col in row:
                vec[j] = _uncertain_value(row[col], "zeros", f"{where} column {col!r}")
                break
        else:
            raise ConfigError(f"{where}: labels CSV needs 'Finding Labels' or a column per finding ({name})")
    return vec


def dicom_records(
    folder: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str],
    *,
    key: Literal["SOPInstanceUID", "AccessionNumber"] = "SOPInstanceUID",
    patient_column: str = "PatientID",
) -> list[Record]:
    """Join a folder of DICOM files with a labels CSV keyed by SOP Instance UID or accession.

    Headers are read without pixel data (:func:`chexnet_dicom.dicom.read.read_dataset`
    when available, else pydicom with ``stop_before_pixels``).  A CSV row without a
    file is an error; a file without a row is skipped and counted in the log.  With
    ``key="AccessionNumber"`` a study with several images gives one record per image.

    Parameters
    ----------
    folder
        Searched recursively for files.
    labels_csv
        Columns: the key (``SOPInstanceUID`` or ``AccessionNumber``), optionally the
        patient column, and ``Finding Labels`` or one 0/1 column per finding.
    key, patient_column
        CSV columns to use.  When the patient column is absent, the DICOM PatientID is used.

    Returns
    -------
    list of Record
        Keys are SOPInstanceUIDs (unique per image), sorted.
    """
    if key not in ("SOPInstanceUID", "AccessionNumber"):
        raise ConfigError(f"key must be SOPInstanceUID or AccessionNumber, not {key!r}")
    rows = read_csv_rows(labels_csv)
    _require_columns(rows, (key,), labels_csv)
    by_key: dict[str, dict[str, str]] = {}
    for i, r in enumerate(rows):
        k = r[key].strip()
        if k in by_key:
            raise ConfigError(f"labels CSV row {i + 2}: {key} {phi_ref(k)} is listed twice")
        by_key[k] = r
    headers = _scan_dicom_headers(Path(folder))
    records = []
    used: set[str] = set()
    skipped = 0
    for path, sop, accession, patient in headers:
        k = sop if key == "SOPInstanceUID" else accession
        row = by_key.get(k)
        if row is None:
            skipped += 1
            continue
        used.add(k)
        vec = _labels_from_row(row, f"labels for {phi_ref(k)}")
        pat = row.get(patient_column, "").strip() or patient
        if not pat:
            raise ConfigError(f"no patient for image {phi_ref(sop)}: add a {patient_column} column")
        meta = {"sex": row.get("PatientSex", ""), "age": row.get("PatientAge", ""), "view": ""}
        records.append(Record(sop, path, pat, vec, meta))
    unmatched = set(by_key) - used
    if unmatched:
        raise ConfigError(
            f"{len(unmatched)} rows of {labels_csv} match no DICOM file in {folder} "
            f"(e.g. {phi_ref(sorted(unmatched)[0])}); check the folder and the key column"
        )
    if skipped:
        log.info("%d DICOM files in the folder have no labels row and are not used", skipped)
    if len({r.key for r in records}) != len(records):
        raise ConfigError("two DICOM files share a SOPInstanceUID; remove the duplicate")
    return sorted(records, key=lambda r: r.key)


def _scan_dicom_headers(folder: Path) -> list[tuple[Path, str, str, str]]:
    """(path, SOPInstanceUID, AccessionNumber, PatientID) of every readable DICOM file."""
    from chexnet_dicom.dicom.read import read_dataset

    if not folder.is_dir():
        raise ConfigError(f"DICOM folder not found: {folder}")
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = read_dataset(path, stop_before_pixels=True)
        except (InputError, OSError):
            log.debug("not a readable DICOM file: %s", phi_ref(path))
            continue
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if not sop:
            continue
        out.append((path, sop, str(ds.get("AccessionNumber", "") or ""), str(ds.get("PatientID", "") or "")))
    return out


def read_training_image(path: str | os.PathLike[str], *, target_size: int | None = None) -> np.ndarray:
    """Return the [0, 1] display image (bright = dense) of a PNG/JPEG/TIFF or DICOM file.

    Delegates to :func:`chexnet_dicom.transforms.load_chest_image`, the loader inference
    uses (DICOM through VOI, MONOCHROME1 and orientation handling; RGB(A) PNGs converted
    to grey), so training sees exactly what inference sees.

    Parameters
    ----------
    path
        Image file.
    target_size
        Smallest side needed; lets the DICOM decoder take a reduced-resolution path.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1].
    """
    from chexnet_dicom.transforms import load_chest_image

    return np.asarray(load_chest_image(path, target_size=target_size).image, dtype=np.float32)


def positives_per_class(records: Iterable[Record]) -> dict[str, int]:
    """Count positive images per finding (in :data:`LABELS` order)."""
    recs = list(records)
    if not recs:
        return dict.fromkeys(LABELS, 0)
    counts = np.stack([r.labels for r in recs]).sum(axis=0)
    return {name: int(c) for name, c in zip(LABELS, counts, strict=True)}
