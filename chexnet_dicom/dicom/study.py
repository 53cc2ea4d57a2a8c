"""Group DICOM files into studies and series and choose the image(s) to analyse.

:func:`scan` walks files and folders with the one folder walker
(:func:`chexnet_dicom.dicom.walk.iter_files`, whose module documents the walking rule),
reads each header once (:func:`~chexnet_dicom.dicom.read.read_header`), gates it
(:func:`~chexnet_dicom.dicom.gate.gate_header`), groups the instances by
StudyInstanceUID and SeriesInstanceUID and selects the images to analyse.  The header
read here is the only one: skipped files keep it for the SR's "not analysed" list, and
selected images keep it (with where their pixel data starts) for
:func:`~chexnet_dicom.dicom.load.load_image`.

Selection rule
--------------
1. A file that cannot be read, that the gate calls defective (an error reason), or that
   lacks a Study, Series or SOP Instance UID belongs to no study: it is reported in
   :attr:`StudyScan.unassigned` with its reason (the gate's reason when the gate
   skips it anyway, else ``MISSING_UID``).
2. Files sharing a SOP Instance UID (the same instance stored twice, or a modified
   copy) are one instance: the file the gate accepts is kept, else the first in walking
   order; the others are reported with reason ``DUPLICATE_INSTANCE``.
3. Every instance the header gate accepts (frontal CR/DX chest image) is selected,
   except that "FOR PROCESSING" DX images are not selected when the study also has an
   accepted image that is not for processing (reason ``FOR_PROCESSING_REDUNDANT``):
   the processed image is the one radiologists and the model expect.
4. Selected images are ordered by (SeriesNumber, InstanceNumber, SeriesInstanceUID,
   SOPInstanceUID, path), missing numbers last; studies by (StudyDate, StudyTime,
   StudyInstanceUID). The same files always give the same order.
5. Every other instance of a study is listed in :attr:`Study.skipped` with its reason
   code (the gate's, for example ``VIEW_NOT_FRONTAL`` for a lateral).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.attrs import ordering_int, text
from chexnet_dicom.dicom.flags import FLAG_FOR_PROCESSING
from chexnet_dicom.dicom.gate import GateDecision, gate_header
from chexnet_dicom.dicom.read import ScannedHeader, read_header
from chexnet_dicom.dicom.reasons import (
    DUPLICATE_INSTANCE,
    ERROR_REASONS,
    FOR_PROCESSING_REDUNDANT,
    INTERNAL,
    MISSING_UID,
    NOT_DICOM,
    Status,
    status_for,
)
from chexnet_dicom.dicom.walk import iter_files
from chexnet_dicom.errors import InputError
from chexnet_dicom.logs import phi_ref

__all__ = [
    "Instance",
    "Series",
    "Skipped",
    "Study",
    "StudyScan",
    "build_study",
    "duplicate_skipped",
    "instance_from_header",
    "kept_index",
    "read_instance",
    "scan",
    "study_order",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """A file that is not analysed, and why: the one record of every stage and front door.

    Attributes
    ----------
    path
        The file (shown to the user who named it; never logged).
    status
        ``"skipped"`` (out of scope or redundant) or ``"error"`` (defective file).
    reason
        Reason code (:mod:`chexnet_dicom.dicom.reasons`).
    message
        Human readable explanation (no PHI).
    dataset
        The header when it could be read (the SR lists the instance as "not
        analysed"); None for a file without a readable header.
    """

    path: str
    status: Status
    reason: str
    message: str
    dataset: Dataset | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (no header)."""
        return {"path": self.path, "status": self.status, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class Instance:
    """One image file, read from its header only.

    Attributes
    ----------
    path
        The file.
    study_uid, series_uid, sop_uid, sop_class_uid
        Its identifiers.
    modality
        Modality (0008,0060), upper case.
    view
        ViewPosition, upper case (``""`` when absent); the gate's evidence for the
        view is in ``decision.view_evidence``.
    series_number, instance_number
        SeriesNumber and InstanceNumber, None when absent or not an integer.
    decision
        The header gate's decision.
    scanned
        The header as read (the only read of it) and where its pixel data starts.
    """

    path: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str
    view: str
    series_number: int | None
    instance_number: int | None
    decision: GateDecision
    scanned: ScannedHeader = field(repr=False, compare=False)

    @property
    def dataset(self) -> Dataset:
        """The header (no pixel data)."""
        return self.scanned.dataset

    @property
    def accepted(self) -> bool:
        """Whether the header gate accepted the image."""
        return self.decision.accepted

    def sort_key(self) -> tuple[Any, ...]:
        """The deterministic order of the selection rule."""
        return (
            _none_last(self.series_number),
            _none_last(self.instance_number),
            self.series_uid,
            self.sop_uid,
            self.path,
        )


@dataclass(frozen=True)
class Series:
    """The instances of one series (in :meth:`Instance.sort_key` order).

    Attributes
    ----------
    series_uid
        SeriesInstanceUID.
    series_number
        SeriesNumber of its first instance.
    modality
        Modality of its first instance.
    instances
        Its instances (duplicates excluded).
    """

    series_uid: str
    series_number: int | None
    modality: str
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class Study:
    """The instances of one study and the images chosen for analysis.

    Attributes
    ----------
    study_uid
        StudyInstanceUID.
    study_date, study_time
        StudyDate and StudyTime (``""`` when absent).
    series
        Its series, ordered by (SeriesNumber, SeriesInstanceUID).
    selected
        The images to analyse, in the order of the selection rule (may be empty).
    skipped
        Its files that are not analysed, with reasons (in walking order).
    """

    study_uid: str
    study_date: str
    study_time: str
    series: tuple[Series, ...]
    selected: tuple[Instance, ...]
    skipped: tuple[Skipped, ...] = ()

    @property
    def instances(self) -> tuple[Instance, ...]:
        """Every (non-duplicate) instance of the study, series by series."""
        return tuple(i for s in self.series for i in s.instances)


@dataclass(frozen=True)
class StudyScan:
    """Everything :func:`scan` found.

    Attributes
    ----------
    studies
        The studies, ordered by (StudyDate, StudyTime, StudyInstanceUID).
    unassigned
        Files that belong to no study (unreadable, not DICOM, missing UIDs, links
        outside the root).
    """

    studies: tuple[Study, ...]
    unassigned: tuple[Skipped, ...] = field(default=())

    @property
    def skipped(self) -> tuple[Skipped, ...]:
        """Every file not analysed: the unassigned ones, then each study's."""
        return self.unassigned + tuple(s for st in self.studies for s in st.skipped)


def _none_last(value: int | None) -> tuple[int, int]:
    return (1, 0) if value is None else (0, value)


def read_instance(
    path: str, cfg: IngestConfig, *, keep_raw: bool = False
) -> tuple[Instance, tuple[str, str]] | Skipped:
    """Read and gate one header (rule 1): the instance and its (StudyDate, StudyTime), or why not.

    Parameters
    ----------
    path
        The file.
    cfg
        Ingest limits.
    keep_raw
        Keep the header bytes (:attr:`~chexnet_dicom.dicom.read.ScannedHeader.raw`) for an index.
    """
    try:
        scanned = read_header(path, limits=cfg.limits, keep_raw=keep_raw)
    except InputError as exc:
        return Skipped(path, "error", exc.reason, str(exc))
    except OSError as exc:  # a file vanishing or unreadable between walk and read
        return Skipped(path, "error", NOT_DICOM, f"cannot read the file ({type(exc).__name__})")
    return instance_from_header(path, scanned, cfg)


def instance_from_header(
    path: str, scanned: ScannedHeader, cfg: IngestConfig
) -> tuple[Instance, tuple[str, str]] | Skipped:
    """Gate a header already read (rule 1): the instance and its (StudyDate, StudyTime), or why not."""
    ds = scanned.dataset
    study_uid, series_uid, sop_uid = (
        text(ds, k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    )
    decision = gate_header(ds, limits=cfg.limits)
    if not decision.accepted and decision.reason in ERROR_REASONS:
        return Skipped(path, "error", decision.reason or INTERNAL, decision.message, ds)
    named = (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid), ("SOPInstanceUID", sop_uid))
    missing = [k for k, v in named if not v]
    if missing:
        if not decision.accepted:  # out of scope anyway: the gate's reason says more
            return Skipped(path, "skipped", decision.reason or INTERNAL, decision.message, ds)
        return Skipped(
            path,
            "error",
            MISSING_UID,
            f"missing {', '.join(missing)}: the file cannot be placed in a study",
            ds,
        )
    instance = Instance(
        path=path,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class_uid=text(ds, "SOPClassUID"),
        modality=text(ds, "Modality").upper(),
        view=text(ds, "ViewPosition").upper(),
        series_number=ordering_int(ds, "SeriesNumber"),
        instance_number=ordering_int(ds, "InstanceNumber"),
        decision=decision,
        scanned=scanned,
    )
    return instance, (text(ds, "StudyDate"), text(ds, "StudyTime"))


def kept_index(accepted: Sequence[bool]) -> int:
    """Rule 2 for the files sharing one SOP Instance UID, in walking order: the index of the one kept.

    The first file the gate accepts, else the first file.
    """
    return next((i for i, ok in enumerate(accepted) if ok), 0)


def duplicate_skipped(inst: Instance, kept_path: str) -> Skipped:
    """The record of a file that rule 2 does not keep (``DUPLICATE_INSTANCE``)."""
    return Skipped(
        inst.path,
        "skipped",
        DUPLICATE_INSTANCE,
        f"same SOP Instance UID as {phi_ref(kept_path, prefix='file')}, which is used instead",
        inst.dataset,
    )


def study_order(study: Study) -> tuple[str, str, str]:
    """Rule 4's order of studies: (StudyDate, StudyTime, StudyInstanceUID)."""
    return (study.study_date, study.study_time, study.study_uid)


def scan(
    paths: Iterable[str | os.PathLike[str]], *, config: IngestConfig | None = None, keep_raw: bool = False
) -> StudyScan:
    """Read the headers of every file under ``paths`` and group them into studies.

    Parameters
    ----------
    paths
        Files and folders (see the walking rule in the module docstring).
    config
        Ingest limits (header caps); defaults when None.
    keep_raw
        Keep each header's bytes (:attr:`~chexnet_dicom.dicom.read.ScannedHeader.raw`):
        a worker process then parses them instead of reading the header again, and the
        node keeps them for later versions of a study's results.

    Returns
    -------
    StudyScan
        Studies with their series, selected images and skipped files, plus the files
        that belong to no study. Never raises for a bad input file.
    """
    cfg = config or IngestConfig()
    unassigned: list[Skipped] = []
    found: list[tuple[Instance, tuple[str, str]]] = []
    for entry in iter_files(paths):
        if entry.reason is not None:
            unassigned.append(Skipped(entry.path, status_for(entry.reason), entry.reason, entry.message))
            continue
        result = read_instance(entry.path, cfg, keep_raw=keep_raw)
        if isinstance(result, Skipped):
            unassigned.append(result)
            logger.debug("file %s not assigned: %s", phi_ref(entry.path), result.reason)
            continue
        found.append(result)
    # Duplicate SOP Instance UIDs: keep the accepted one, then the first in walking order.
    members: dict[str, list[int]] = {}
    for index, (inst, _) in enumerate(found):
        members.setdefault(inst.sop_uid, []).append(index)
    best = {sop: group[kept_index([found[i][0].accepted for i in group])] for sop, group in members.items()}
    by_study: dict[str, list[Instance]] = {}
    study_skipped: dict[str, list[Skipped]] = {}
    study_when: dict[str, tuple[str, str]] = {}
    for index, (inst, when) in enumerate(found):
        if best[inst.sop_uid] != index:
            kept_path = found[best[inst.sop_uid]][0].path
            study_skipped.setdefault(inst.study_uid, []).append(duplicate_skipped(inst, kept_path))
            logger.info("duplicate instance %s in %s", phi_ref(inst.sop_uid), phi_ref(inst.path))
            continue
        by_study.setdefault(inst.study_uid, []).append(inst)
        study_when.setdefault(inst.study_uid, when)
    studies = [
        build_study(uid, by_study.get(uid, []), study_skipped.get(uid, []), study_when.get(uid, ("", "")))
        for uid in set(by_study) | set(study_skipped)
    ]
    studies.sort(key=study_order)
    logger.info(
        "scanned %d studies, %d selected images, %d files belong to no study",
        len(studies),
        sum(len(s.selected) for s in studies),
        len(unassigned),
    )
    return StudyScan(tuple(studies), tuple(unassigned))


def build_study(
    uid: str, instances: Sequence[Instance], skipped: Sequence[Skipped], when: tuple[str, str]
) -> Study:
    """Rules 3-5 for one study: its series, the images selected and every other file with its reason.

    Parameters
    ----------
    uid
        StudyInstanceUID.
    instances
        Its instances after rule 2 (duplicates excluded), in walking order.
    skipped
        Its files already not analysed (the duplicates), in walking order.
    when
        (StudyDate, StudyTime) of its first instance.
    """
    series_map: dict[str, list[Instance]] = {}
    for inst in instances:
        series_map.setdefault(inst.series_uid, []).append(inst)
    series = []
    for series_uid, members in series_map.items():
        members.sort(key=Instance.sort_key)
        series.append(Series(series_uid, members[0].series_number, members[0].modality, tuple(members)))
    series.sort(key=lambda s: (_none_last(s.series_number), s.series_uid))
    accepted = sorted((i for i in instances if i.accepted), key=Instance.sort_key)
    processed = [i for i in accepted if FLAG_FOR_PROCESSING not in i.decision.flags]
    selected = processed if processed else accepted
    chosen = {i.sop_uid for i in selected}
    not_analysed: list[Skipped] = list(skipped)
    for inst in sorted(instances, key=Instance.sort_key):
        if inst.sop_uid in chosen:
            continue
        if inst.accepted:
            not_analysed.append(
                Skipped(
                    inst.path,
                    "skipped",
                    FOR_PROCESSING_REDUNDANT,
                    "FOR PROCESSING image; the study has a processed (FOR PRESENTATION) image",
                    inst.dataset,
                )
            )
        else:
            reason = inst.decision.reason or INTERNAL
            not_analysed.append(
                Skipped(inst.path, status_for(reason), reason, inst.decision.message, inst.dataset)
            )
    return Study(uid, when[0], when[1], tuple(series), tuple(selected), tuple(not_analysed))
