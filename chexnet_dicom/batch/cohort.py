"""The scores of a finished run, keyed by a DICOM attribute, for a cohort report.

``chexdcm batch --labels CSV --label-key ATTRIBUTE`` joins the run's predictions with a
label table on the value of ``ATTRIBUTE`` in each analysed image's header (read from
the header index: the key never has to be in the tables, and a pseudonymised run
still joins on the real values, inside this process only).  The evaluation itself is
composed in the command line (``batch`` does not import ``evaluate``).

Level
-----
``--label-level auto`` scores per study when the key is a study attribute
(``AccessionNumber``, ``StudyInstanceUID``, ``StudyID``): the study's score for a
finding is the maximum over its analysed images (the study-level summary of
``infer``); any other key is scored per image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chexnet_dicom.batch.index import HeaderIndex
from chexnet_dicom.batch.ledger import RunLedger
from chexnet_dicom.batch.runner import state_paths
from chexnet_dicom.dicom.attrs import text
from chexnet_dicom.dicom.read import PixelLocation, header_from_raw
from chexnet_dicom.errors import ConfigError
from chexnet_dicom.model.labels import LABELS

__all__ = ["STUDY_KEYS", "CohortRows", "cohort_rows", "label_level"]

#: Keys that name a study: labels keyed by them are scored per study.
STUDY_KEYS = frozenset({"AccessionNumber", "StudyInstanceUID", "StudyID"})

_COLUMNS = {"SOPInstanceUID": "sop_uid", "StudyInstanceUID": "study_uid", "AccessionNumber": "accession"}


@dataclass(frozen=True)
class CohortRows:
    """Scores and subgroup attributes per scored unit (an image or a study).

    Attributes
    ----------
    level
        ``"image"`` or ``"study"``.
    keys
        (n,) the label key's values.
    scores
        (n, 14) probabilities (study: the maximum over its images).
    patients, sex, view, manufacturer
        (n,) from the headers (``""`` when absent).
    age
        (n,) years, NaN when absent.
    """

    level: str
    keys: np.ndarray
    scores: np.ndarray
    patients: np.ndarray
    sex: np.ndarray
    age: np.ndarray
    view: np.ndarray
    manufacturer: np.ndarray


def label_level(key: str, level: str = "auto") -> str:
    """``"study"`` or ``"image"`` for a label key (see the module docstring)."""
    if level not in ("auto", "image", "study"):
        raise ConfigError(f"--label-level must be auto, image or study, not {level!r}")
    if level != "auto":
        return level
    return "study" if key in STUDY_KEYS else "image"


def _key_values(index: HeaderIndex, root: str, key: str) -> dict[str, str]:
    """SOP Instance UID -> the key attribute's value, from the stored headers."""
    out: dict[str, str] = {}
    for record in index.kept_records_with_headers():
        full = os.path.join(root, record.path)
        loc = PixelLocation(
            full, record.px_offset, record.size, record.mtime_ns, bool(record.implicit), bool(record.little)
        )
        out[record.sop_uid] = text(header_from_raw(record.header or b"", loc).dataset, key)
    return out


def cohort_rows(out: str | os.PathLike[str], key: str, level: str = "auto") -> CohortRows:
    """The scored units of the finished run in ``out`` (see the module docstring).

    Raises
    ------
    ConfigError
        When ``out`` holds no run or the key is not a DICOM keyword.
    """
    from pydicom.datadict import tag_for_keyword

    if tag_for_keyword(key) is None:
        raise ConfigError(
            f"--label-key must be a DICOM attribute keyword such as SOPInstanceUID, not {key!r}"
        )
    index_path, ledger_path = state_paths(Path(out))
    if not ledger_path.is_file() or not index_path.is_file():
        raise ConfigError("no batch run in the output folder")
    chosen = label_level(key, level)
    index, ledger = HeaderIndex(index_path), RunLedger(ledger_path)
    try:
        root = index.get_meta("root") or ""
        rows = list(ledger.predictions())
        values = None if key in _COLUMNS else _key_values(index, root, key)
    finally:
        index.close()
        ledger.close()

    def keyed(row: dict[str, object]) -> str:
        return str(row[_COLUMNS[key]]) if values is None else values.get(str(row["sop_uid"]), "")

    units: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        unit = str(row["study_uid"]) if chosen == "study" else str(row["sop_uid"])
        units.setdefault(unit, []).append(row)
    keys, scores, patients, sex, age, view, maker = [], [], [], [], [], [], []
    for members in units.values():
        first = members[0]
        value = keyed(first)
        if not value:
            continue
        keys.append(value)
        probs = np.array([[float(m[f"prob_{name}"]) for name in LABELS] for m in members])  # type: ignore[arg-type]
        scores.append(probs.max(axis=0))
        patients.append(str(first["patient_id"]) or value)
        sex.append(str(first["patient_sex"] or ""))
        age.append(float(first["patient_age"]) if first["patient_age"] is not None else float("nan"))  # type: ignore[arg-type]
        view.append(str(first["view"] or ""))
        maker.append(str(first["manufacturer"] or ""))
    obj = np.asarray
    return CohortRows(
        level=chosen,
        keys=obj(keys, dtype=object),
        scores=obj(scores, dtype=np.float64).reshape(-1, len(LABELS)),
        patients=obj(patients, dtype=object),
        sex=obj(sex, dtype=object),
        age=obj(age, dtype=np.float64),
        view=obj(view, dtype=object),
        manufacturer=obj(maker, dtype=object),
    )
