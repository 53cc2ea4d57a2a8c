"""A study's result as table rows: predictions, the study, its files' outcomes and errors.

One function, :func:`study_rows`, used by every engine, so the local and Ray engines
write the same tables.  Values are raw here (real UIDs, paths relative to the export
root); ``--pseudonymize`` is applied when the tables are written
(:mod:`chexnet_dicom.batch.tables`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from chexnet_dicom.batch.schema import FileStatus, StudyStatus
from chexnet_dicom.dicom.attrs import text
from chexnet_dicom.dicom.decode import transfer_syntax_of
from chexnet_dicom.dicom.reasons import DUPLICATE_INSTANCE
from chexnet_dicom.dicom.study import Study
from chexnet_dicom.drift import metadata_of
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.results import StudyResult

__all__ = ["StudyRows", "age_years", "file_outcome", "study_rows"]

#: ``files.csv`` message of a duplicate (its ``duplicate_of`` column names the file used).
DUPLICATE_MESSAGE = "same SOP Instance UID as the file in duplicate_of, which is used instead"


@dataclass
class StudyRows:
    """What one study adds to the tables.

    Attributes
    ----------
    study
        Its ``studies`` row.
    predictions
        One ``predictions`` row per analysed image.
    outcomes
        ``(path, status, reason, message)`` of each of its files.
    errors
        Its ``errors`` rows.
    observations
        One per ``predictions`` row, in the same order: the image's binned drift
        metadata (:func:`chexnet_dicom.drift.metadata_of`, no PHI) and its pooled
        features as float32 bytes (None when the weights give none), for the export's
        cohort shift (:mod:`chexnet_dicom.batch.shift`).
    """

    study: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[tuple[str, str, str, str]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    observations: list[tuple[dict[str, str], bytes | None]] = field(default_factory=list)


def age_years(ds: Dataset) -> float | None:
    """PatientAge in years (``058Y``, ``006M``, ``010W``, ``003D``, or a bare number), else from
    PatientBirthDate and StudyDate; None when neither is usable."""
    raw = text(ds, "PatientAge").upper()
    units = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
    if raw:
        unit = raw[-1] if raw[-1] in units else "Y"
        digits = raw[:-1] if raw[-1] in units else raw
        if digits.isdigit():
            return round(int(digits) * units[unit], 3)
    try:
        born = dt.datetime.strptime(text(ds, "PatientBirthDate")[:8], "%Y%m%d").date()
        seen = dt.datetime.strptime(text(ds, "StudyDate")[:8], "%Y%m%d").date()
    except ValueError:
        return None
    years = (seen - born).days / 365.25
    return round(years, 3) if years >= 0 else None


def file_outcome(status: str, reason: str) -> str:
    """The ``files.csv`` status of a file the analysis did not use (``Skipped.status``, reason)."""
    if reason == DUPLICATE_INSTANCE:
        return FileStatus.DUPLICATE
    return FileStatus.FAILED if status == "error" else FileStatus.SKIPPED


def _drift_metadata(ds: Dataset) -> dict[str, str]:
    """The image's binned drift metadata, with the transfer syntax it was stored in."""
    try:
        syntax: str | None = str(transfer_syntax_of(ds))
    except (AttributeError, TypeError, ValueError):
        syntax = None
    return metadata_of(ds, syntax)


def _patient(ds: Dataset | None) -> dict[str, Any]:
    if ds is None:
        return {k: "" for k in ("study_uid", "accession", "patient_id", "study_date", "patient_sex")} | {
            "patient_age": None
        }
    return {
        "study_uid": text(ds, "StudyInstanceUID"),
        "accession": text(ds, "AccessionNumber"),
        "patient_id": text(ds, "PatientID"),
        "study_date": text(ds, "StudyDate"),
        "patient_sex": text(ds, "PatientSex").upper(),
        "patient_age": age_years(ds),
    }


def study_rows(study: Study, result: StudyResult, root: str) -> StudyRows:
    """The rows of one analysed (or failed, or skipped) study.

    Parameters
    ----------
    study
        The study as fed to the analysis.
    result
        Its result.
    root
        The export root (paths in the rows are relative to it, ``/``-separated).
    """

    def rel(path: str) -> str:
        return os.path.relpath(path, root).replace(os.sep, "/")

    first = (
        study.instances[0].dataset
        if study.instances
        else next((s.dataset for s in study.skipped if s.dataset), None)
    )
    patient = _patient(first)
    patient["study_uid"] = study.study_uid
    out = StudyRows(study={})
    scanned_paths = {s.path for s in study.skipped}
    for k, im in enumerate(result.images, 1):
        pred = im.prediction
        ds = im.dataset
        row: dict[str, Any] = {
            "path": rel(im.path),
            **_patient(ds),
            "series_uid": text(ds, "SeriesInstanceUID"),
            "sop_uid": text(ds, "SOPInstanceUID"),
            "image_index": k,
            "view": text(ds, "ViewPosition").upper(),
            "modality": text(ds, "Modality").upper(),
            "body_part": text(ds, "BodyPartExamined").upper(),
            "manufacturer": text(ds, "Manufacturer"),
        }
        row["study_uid"] = study.study_uid
        for name, p, present in zip(LABELS, pred.probabilities, pred.present, strict=True):
            row[f"prob_{name}"] = float(p)
            row[f"present_{name}"] = bool(present)
        row.update(
            model_name=pred.model_name,
            model_version=pred.model_version,
            weights_sha256=pred.weights_sha256,
            backend=pred.backend,
            precision=pred.precision,
            decode_path=str(im.display.provenance.get("decode_path", "")),
            flags=";".join(im.flags),
            ood_score=pred.ood_score,
            ood_threshold=pred.ood_threshold,
            ood_method=pred.ood_method,
            out_of_distribution=pred.out_of_distribution,  # None (empty) when no score
        )
        out.predictions.append(row)
        feats = None if pred.features is None else np.asarray(pred.features, dtype="<f4").tobytes()
        out.observations.append((_drift_metadata(ds), feats))
        out.outcomes.append((rel(im.path), FileStatus.ANALYSED, "", ""))
    for s in result.skipped:
        status = file_outcome(s.status, s.reason)
        # the scan's message names the kept file by a per-process log reference: not for a table
        message = DUPLICATE_MESSAGE if s.reason == DUPLICATE_INSTANCE else s.message
        out.outcomes.append((rel(s.path), status, s.reason, message))
        if status == FileStatus.FAILED:
            stage = "scan" if s.path in scanned_paths else "decode"
            out.errors.append(
                {
                    "path": rel(s.path),
                    "study_uid": study.study_uid,
                    "stage": stage,
                    "reason": s.reason,
                    "message": s.message,
                }
            )
    done = {o[0] for o in out.outcomes}
    failure = result.failure
    if failure is not None:
        for inst in study.selected:
            if rel(inst.path) not in done:
                out.outcomes.append((rel(inst.path), FileStatus.FAILED, failure.reason, failure.message))
                out.errors.append(
                    {"path": rel(inst.path), "study_uid": study.study_uid, "stage": failure.stage,
                     "reason": failure.reason, "message": failure.message}
                )  # fmt: skip
    counts = Counter(o[1] for o in out.outcomes)
    status, reason, message = _study_status(study, result, out.outcomes)
    summary = result.summary
    out.study = {
        **patient,
        "status": status,
        "reason": reason,
        "message": message,
        "n_files": len(out.outcomes),
        "n_selected": len(study.selected),
        "n_analysed": counts[FileStatus.ANALYSED],
        "n_skipped": counts[FileStatus.SKIPPED] + counts[FileStatus.DUPLICATE],
        "n_failed": counts[FileStatus.FAILED],
    }
    for name in LABELS:
        entry = summary.get(name)
        out.study[f"study_prob_{name}"] = entry.probability if entry else None
        out.study[f"study_present_{name}"] = entry.present if entry else None
    return out


def _study_status(
    study: Study, result: StudyResult, outcomes: list[tuple[str, str, str, str]]
) -> tuple[str, str, str]:
    if result.failure is not None:
        return StudyStatus.FAILED, result.failure.reason, result.failure.message
    if result.images:
        return StudyStatus.ANALYSED, "", ""
    failed = [o for o in outcomes if o[1] == FileStatus.FAILED]
    if study.selected and failed:
        return StudyStatus.FAILED, failed[0][2], f"no selected image could be analysed ({failed[0][3]})"
    reasons = Counter(o[2] for o in outcomes if o[2])
    if not reasons:
        return StudyStatus.SKIPPED, "", "no file of the study could be analysed"
    listed = ", ".join(f"{n} {code}" for code, n in reasons.most_common())
    return StudyStatus.SKIPPED, reasons.most_common(1)[0][0], f"no frontal chest image to analyse: {listed}"
