"""The columns of the result tables of ``chexdcm batch`` (documented in the README).

Each table is a tuple of :class:`Column` (name, Arrow type, role).  The role says what
``--pseudonymize`` does with it: ``"id"`` columns (UIDs, accession, patient ID) and
``"path"`` columns become keyed hashes, ``"date"`` columns are shifted by the patient's
offset; every other column is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.vocab import Vocabulary

__all__ = [
    "ERRORS",
    "FILES",
    "FILE_STATUSES",
    "PREDICTIONS",
    "STUDIES",
    "STUDY_STATUSES",
    "TABLES",
    "Column",
    "FileStatus",
    "StudyStatus",
]


@dataclass(frozen=True)
class Column:
    """One column: its name, type (``str``, ``int``, ``float``, ``bool``) and pseudonymisation role."""

    name: str
    type: str = "str"
    role: str = ""


class FileStatus(Vocabulary):
    """``files.csv`` status: every file found has exactly one."""

    ANALYSED = "analysed"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"
    #: A DICOMDIR.
    INDEX = "index"
    FAILED = "failed"
    NOT_DICOM = "not_dicom"
    #: A file of a study the ledger has not recorded as finished (the run was stopped
    #: before it, or its analysis could not be recorded): the next run analyses it.
    PENDING = "pending"


class StudyStatus(Vocabulary):
    """``studies.csv`` status."""

    ANALYSED = "analysed"
    SKIPPED = "skipped"
    FAILED = "failed"


#: ``files.csv`` status values.
FILE_STATUSES: tuple[str, ...] = FileStatus.values()
#: ``studies.csv`` status values.
STUDY_STATUSES: tuple[str, ...] = StudyStatus.values()

_PROBS = tuple(Column(f"prob_{name}", "float") for name in LABELS)
_PRESENT = tuple(Column(f"present_{name}", "bool") for name in LABELS)
_PATIENT = (
    Column("patient_id", role="id"),
    Column("study_date", role="date"),
    Column("patient_sex"),
    Column("patient_age", "float"),
)

PREDICTIONS: tuple[Column, ...] = (
    Column("path", role="path"),
    Column("study_uid", role="id"),
    Column("series_uid", role="id"),
    Column("sop_uid", role="id"),
    Column("accession", role="id"),
    *_PATIENT,
    Column("image_index", "int"),
    Column("view"),
    Column("modality"),
    Column("body_part"),
    Column("manufacturer"),
    *_PROBS,
    *_PRESENT,
    Column("model_name"),
    Column("model_version"),
    Column("weights_sha256"),
    Column("backend"),
    Column("precision"),
    Column("decode_path"),
    Column("flags"),
    Column("ood_score", "float"),
    Column("ood_threshold", "float"),
    Column("ood_method"),
    Column("out_of_distribution", "bool"),
)

STUDIES: tuple[Column, ...] = (
    Column("study_uid", role="id"),
    Column("accession", role="id"),
    *_PATIENT,
    Column("status"),
    Column("reason"),
    Column("message"),
    Column("n_files", "int"),
    Column("n_selected", "int"),
    Column("n_analysed", "int"),
    Column("n_skipped", "int"),
    Column("n_failed", "int"),
    *(Column(f"study_prob_{name}", "float") for name in LABELS),
    *(Column(f"study_present_{name}", "bool") for name in LABELS),
)

FILES: tuple[Column, ...] = (
    Column("path", role="path"),
    Column("size", "int"),
    Column("status"),
    Column("reason"),
    Column("message"),
    Column("found_by"),
    Column("study_uid", role="id"),
    Column("sop_uid", role="id"),
    Column("duplicate_of", role="path"),
    Column("modality"),
    Column("view"),
    Column("body_part"),
    Column("transfer_syntax"),
)

ERRORS: tuple[Column, ...] = (
    Column("path", role="path"),
    Column("study_uid", role="id"),
    Column("stage"),
    Column("reason"),
    Column("message"),
)

#: table name -> columns, in the order they are written.
TABLES: dict[str, tuple[Column, ...]] = {
    "predictions": PREDICTIONS,
    "studies": STUDIES,
    "files": FILES,
    "errors": ERRORS,
}
