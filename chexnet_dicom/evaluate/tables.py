"""Reading prediction and label tables for evaluation.

Predictions: a CSV with an identifier column (``Image Index``, ``image``, ``id``,
``SOPInstanceUID`` or the first column) and one probability column per finding, named
``prob_<Finding>`` or ``<Finding>``.

Labels, either format:

* NIH ``Data_Entry`` style: ``Image Index``, ``Finding Labels`` (``|``-separated names,
  ``No Finding``), optionally ``Patient ID``, ``Patient Gender``, ``Patient Age``,
  ``View Position``; plain or gzip-compressed. A finding is positive when its name is one
  of the ``|``-separated names.
* Wide: an identifier column plus one 0/1 column per finding, optionally ``patient_id``,
  ``sex``, ``age``, ``view``.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chexnet_dicom.errors import ConfigError, InputError
from chexnet_dicom.model.labels import LABELS

__all__ = ["EvalData", "join_tables", "read_labels", "read_predictions"]

_ID_COLUMNS = ("Image Index", "image", "image_id", "id", "SOPInstanceUID", "path")


@dataclass(frozen=True)
class EvalData:
    """Aligned arrays for evaluation.

    Attributes
    ----------
    ids
        (n,) image identifiers.
    y
        (n, 14) int8 labels in :data:`LABELS` order.
    scores
        (n, 14) float64 probabilities.
    patients
        (n,) patient identifiers (the image id when unknown).
    sex, age, view
        (n,) subgroup attributes ("" when unknown; age NaN when unknown).
    manufacturer
        (n,) the equipment manufacturer (DICOM Manufacturer) when known, else None.
    """

    ids: np.ndarray
    y: np.ndarray
    scores: np.ndarray
    patients: np.ndarray
    sex: np.ndarray
    age: np.ndarray
    view: np.ndarray
    manufacturer: np.ndarray | None = None


def _open_text(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise ConfigError(f"table not found: {path}")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise InputError(f"{path.name} is empty", reason="BAD_TABLE")
        rows = list(reader)
        return list(reader.fieldnames), rows


def _id_column(fields: list[str]) -> str:
    for name in _ID_COLUMNS:
        if name in fields:
            return name
    return fields[0]


def read_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a predictions CSV.

    Returns
    -------
    (ids, scores)
        (n,) identifiers and (n, 14) float64 scores in :data:`LABELS` order.

    Raises
    ------
    InputError
        When a finding column is missing or a value is not a probability.
    """
    p = Path(path)
    fields, rows = _rows(p)
    id_col = _id_column(fields)
    cols = []
    for label in LABELS:
        for cand in (f"prob_{label}", label, label.replace("_", " ")):
            if cand in fields:
                cols.append(cand)
                break
        else:
            raise InputError(
                f"{p.name} has no column for {label} (expected prob_{label} or {label})", reason="BAD_TABLE"
            )
    ids = np.array([r[id_col] for r in rows], dtype=object)
    try:
        scores = np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{p.name}: a probability is not a number ({exc})", reason="BAD_TABLE") from exc
    if scores.size and (not np.isfinite(scores).all() or scores.min() < 0 or scores.max() > 1):
        raise InputError(f"{p.name}: probabilities must be finite and within [0, 1]", reason="BAD_TABLE")
    if len(set(ids)) != len(ids):
        raise InputError(f"{p.name}: duplicate identifiers", reason="BAD_TABLE")
    return ids, scores


def read_labels(path: str | Path, id_column: str | None = None) -> dict[str, dict[str, object]]:
    """Read a label table (NIH ``Data_Entry`` or wide format).

    Parameters
    ----------
    path
        The CSV (or ``.csv.gz``).
    id_column
        The column that names the image or study (default: the first of ``Image Index``,
        ``image``, ``image_id``, ``id``, ``SOPInstanceUID``, ``path``, else the first column).

    Returns
    -------
    dict
        id -> {"y": (14,) int8, "patient": str, "sex": str, "age": float, "view": str}.
    """
    p = Path(path)
    fields, rows = _rows(p)
    id_col = id_column or _id_column(fields)
    if id_col not in fields:
        raise InputError(f"{p.name} has no column {id_col!r}", reason="BAD_TABLE")
    nih = "Finding Labels" in fields
    if not nih:
        missing = [lab for lab in LABELS if lab not in fields]
        if missing:
            raise InputError(
                f"{p.name}: no 'Finding Labels' column and no columns for {missing[:3]}...",
                reason="BAD_TABLE",
            )
    out: dict[str, dict[str, object]] = {}
    for r in rows:
        if nih:
            names = set(r["Finding Labels"].split("|"))
            y = np.array([lab in names for lab in LABELS], dtype=np.int8)
        else:
            try:
                y = np.array([int(float(r[lab])) for lab in LABELS], dtype=np.int8)
            except ValueError as exc:
                raise InputError(
                    f"{p.name}: label values must be 0 or 1 ({exc})", reason="BAD_TABLE"
                ) from exc
            if not np.isin(y, (0, 1)).all():
                raise InputError(f"{p.name}: label values must be 0 or 1", reason="BAD_TABLE")
        age_raw = r.get("Patient Age", r.get("age", "")) or ""
        try:
            age = float(age_raw.rstrip("YMDW")) if age_raw else float("nan")
        except ValueError:
            age = float("nan")
        out[r[id_col]] = {
            "y": y,
            "patient": r.get("Patient ID", r.get("patient_id", "")) or r[id_col],
            "sex": r.get("Patient Gender", r.get("sex", "")) or "",
            "age": age,
            "view": r.get("View Position", r.get("view", "")) or "",
        }
    return out


def join_tables(pred_ids: np.ndarray, scores: np.ndarray, labels: dict[str, dict[str, object]]) -> EvalData:
    """Align predictions with labels on the identifier; every prediction needs a label.

    Raises
    ------
    InputError
        When predictions have no label row.
    """
    missing = [i for i in pred_ids if i not in labels]
    if missing:
        raise InputError(
            f"{len(missing)} predicted images have no label row (e.g. {missing[0]!r})", reason="BAD_TABLE"
        )
    rows = [labels[i] for i in pred_ids]
    return EvalData(
        ids=np.asarray(pred_ids, dtype=object),
        y=np.stack([np.asarray(r["y"]) for r in rows]).astype(np.int8)
        if rows
        else np.zeros((0, len(LABELS)), np.int8),
        scores=scores,
        patients=np.array([str(r["patient"]) for r in rows], dtype=object),
        sex=np.array([str(r["sex"]) for r in rows], dtype=object),
        age=np.array([float(r["age"]) for r in rows], dtype=np.float64),  # type: ignore[arg-type]
        view=np.array([str(r["view"]) for r in rows], dtype=object),
    )
