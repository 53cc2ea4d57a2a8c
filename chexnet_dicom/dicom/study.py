"""Group DICOM files into studies and series and choose the image(s) to analyse.

:func:`scan` walks files and folders, reads only the headers
(:func:`~chexnet_dicom.dicom.read.read_dataset` with ``stop_before_pixels=True``),
gates each one (:func:`~chexnet_dicom.dicom.gate.gate_header`), groups the instances by
StudyInstanceUID and SeriesInstanceUID and selects the images to analyse.
:func:`scan_studies` returns just the studies.

Walking rule
------------
Paths are taken in the order given; a folder is walked depth-first with entries sorted
by name (byte order of the names, so the result does not depend on the file system),
hidden entries (names starting with ``.``) ignored. Symbolic links are never followed
into folders; a symbolic link to a file is used only when its target lies inside the
folder being walked (else the file is reported with reason ``OUTSIDE_ROOT``). A file
named directly on the command line is always read.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom.dataset import Dataset

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.gate import ERROR_REASONS, FLAG_FOR_PROCESSING, GateDecision, gate_header
from chexnet_dicom.dicom.read import read_dataset
from chexnet_dicom.errors import InputError
from chexnet_dicom.logs import phi_ref

__all__ = [
    "DUPLICATE_INSTANCE",
    "FOR_PROCESSING_REDUNDANT",
    "MISSING_UID",
    "OUTSIDE_ROOT",
    "Instance",
    "Series",
    "Skipped",
    "Study",
    "StudyScan",
    "iter_study_files",
    "scan",
    "scan_studies",
]

logger = logging.getLogger(__name__)

#: The SOP Instance UID was already seen in an earlier file.
DUPLICATE_INSTANCE = "DUPLICATE_INSTANCE"
#: A DX "FOR PROCESSING" image in a study that has a processed image of its own.
FOR_PROCESSING_REDUNDANT = "FOR_PROCESSING_REDUNDANT"
#: StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID is missing or empty.
MISSING_UID = "MISSING_UID"
#: A symbolic link inside a walked folder points outside it.
OUTSIDE_ROOT = "OUTSIDE_ROOT"

_SKIP_REASONS_THAT_ARE_ERRORS = ERROR_REASONS | {MISSING_UID}


@dataclass(frozen=True)
class Skipped:
    """A file that is not analysed.

    Attributes
    ----------
    path
        The file.
    status
        ``"skipped"`` (out of scope or redundant) or ``"error"`` (defective file).
    reason
        Reason code: a gate code (:mod:`chexnet_dicom.dicom.gate`) or one of
        :data:`DUPLICATE_INSTANCE`, :data:`FOR_PROCESSING_REDUNDANT`,
        :data:`MISSING_UID`, :data:`OUTSIDE_ROOT`.
    message
        Human readable explanation (no PHI).
    """

    path: str
    status: Literal["skipped", "error"]
    reason: str
    message: str


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

    @property
    def primary(self) -> Instance | None:
        """The first selected image, None when nothing can be analysed."""
        return self.selected[0] if self.selected else None


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


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword, "")
    except Exception:  # a malformed value must not stop the scan
        return ""
    return str(value or "").strip()


def _int_or_none(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword, None)
        return None if value is None or value == "" else int(value)
    except Exception:  # invalid IS values must not stop the scan
        return None


def _inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    real_root = os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def iter_study_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[str, Skipped | None]]:
    """Yield the files to read under ``paths`` in walking order (see the module docstring).

    Parameters
    ----------
    paths
        Files and folders.

    Yields
    ------
    tuple of (str, Skipped or None)
        The path, and a :class:`Skipped` when it must not be read (a link outside the
        root).
    """
    for item in paths:
        root = os.fspath(item)
        if not os.path.isdir(root):
            yield root, None
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for d in dirnames:
                full = os.path.join(dirpath, d)
                if os.path.islink(full) and not _inside(full, root):
                    yield (
                        full,
                        Skipped(
                            full,
                            "skipped",
                            OUTSIDE_ROOT,
                            "symbolic link to a folder outside the scanned folder; not followed",
                        ),
                    )
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                full = os.path.join(dirpath, name)
                if os.path.islink(full) and not _inside(full, root):
                    yield (
                        full,
                        Skipped(
                            full,
                            "skipped",
                            OUTSIDE_ROOT,
                            "symbolic link to a file outside the scanned folder; not read",
                        ),
                    )
                    continue
                yield full, None


def _read_instance(path: str, cfg: IngestConfig) -> tuple[Instance, tuple[str, str]] | Skipped:
    """Read and gate one header; return the instance and its (StudyDate, StudyTime)."""
    try:
        ds = read_dataset(path, limits=cfg.limits, stop_before_pixels=True)
    except InputError as exc:
        return Skipped(path, "error", exc.reason, str(exc))
    except OSError as exc:  # a file vanishing or unreadable between walk and read
        return Skipped(path, "error", "NOT_DICOM", f"cannot read the file ({type(exc).__name__})")
    study_uid, series_uid, sop_uid = (
        _text(ds, k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    )
    decision = gate_header(ds, limits=cfg.limits)
    if not decision.accepted and decision.reason in ERROR_REASONS:
        return Skipped(path, "error", decision.reason or "INTERNAL", decision.message)
    named = (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid), ("SOPInstanceUID", sop_uid))
    missing = [k for k, v in named if not v]
    if missing:
        if not decision.accepted:  # out of scope anyway: the gate's reason says more
            return Skipped(path, "skipped", decision.reason or "INTERNAL", decision.message)
        return Skipped(
            path, "error", MISSING_UID, f"missing {', '.join(missing)}: the file cannot be placed in a study"
        )
    instance = Instance(
        path=path,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class_uid=_text(ds, "SOPClassUID"),
        modality=_text(ds, "Modality").upper(),
        view=_text(ds, "ViewPosition").upper(),
        series_number=_int_or_none(ds, "SeriesNumber"),
        instance_number=_int_or_none(ds, "InstanceNumber"),
        decision=decision,
    )
    return instance, (_text(ds, "StudyDate"), _text(ds, "StudyTime"))


def scan(paths: Iterable[str | os.PathLike[str]], *, config: IngestConfig | None = None) -> StudyScan:
    """Read the headers of every file under ``paths`` and group them into studies.

    Parameters
    ----------
    paths
        Files and folders (see the walking rule in the module docstring).
    config
        Ingest limits (header caps); defaults when None.

    Returns
    -------
    StudyScan
        Studies with their series, selected images and skipped files, plus the files
        that belong to no study. Never raises for a bad input file.
    """
    cfg = config or IngestConfig()
    unassigned: list[Skipped] = []
    found: list[tuple[Instance, tuple[str, str]]] = []
    for path, pre in iter_study_files(paths):
        if pre is not None:
            unassigned.append(pre)
            continue
        result = _read_instance(path, cfg)
        if isinstance(result, Skipped):
            unassigned.append(result)
            logger.debug("file %s not assigned: %s", phi_ref(path), result.reason)
            continue
        found.append(result)
    # Duplicate SOP Instance UIDs: keep the accepted one, then the first in walking order.
    best: dict[str, int] = {}
    for index, (inst, _) in enumerate(found):
        kept = best.get(inst.sop_uid)
        if kept is None or (inst.accepted and not found[kept][0].accepted):
            best[inst.sop_uid] = index
    by_study: dict[str, list[Instance]] = {}
    study_skipped: dict[str, list[Skipped]] = {}
    study_when: dict[str, tuple[str, str]] = {}
    for index, (inst, when) in enumerate(found):
        if best[inst.sop_uid] != index:
            kept_path = found[best[inst.sop_uid]][0].path
            study_skipped.setdefault(inst.study_uid, []).append(
                Skipped(
                    inst.path,
                    "skipped",
                    DUPLICATE_INSTANCE,
                    f"same SOP Instance UID as {phi_ref(kept_path, prefix='file')}, which is used instead",
                )
            )
            logger.info("duplicate instance %s in %s", phi_ref(inst.sop_uid), phi_ref(inst.path))
            continue
        by_study.setdefault(inst.study_uid, []).append(inst)
        study_when.setdefault(inst.study_uid, when)
    studies = [
        _build_study(uid, by_study.get(uid, []), study_skipped.get(uid, []), study_when.get(uid, ("", "")))
        for uid in set(by_study) | set(study_skipped)
    ]
    studies.sort(key=lambda s: (s.study_date, s.study_time, s.study_uid))
    logger.info(
        "scanned %d studies, %d selected images, %d files belong to no study",
        len(studies),
        sum(len(s.selected) for s in studies),
        len(unassigned),
    )
    return StudyScan(tuple(studies), tuple(unassigned))


def _build_study(uid: str, instances: list[Instance], skipped: list[Skipped], when: tuple[str, str]) -> Study:
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
                )
            )
        else:
            reason = inst.decision.reason or "INTERNAL"
            status: Literal["skipped", "error"] = (
                "error" if reason in _SKIP_REASONS_THAT_ARE_ERRORS else "skipped"
            )
            not_analysed.append(Skipped(inst.path, status, reason, inst.decision.message))
    return Study(uid, when[0], when[1], tuple(series), tuple(selected), tuple(not_analysed))


def scan_studies(
    paths: Iterable[str | os.PathLike[str]], *, config: IngestConfig | None = None
) -> list[Study]:
    """Group the files under ``paths`` into studies (see :func:`scan` and the module docstring).

    Parameters
    ----------
    paths
        Files and folders.
    config
        Ingest limits; defaults when None.

    Returns
    -------
    list of Study
        In (StudyDate, StudyTime, StudyInstanceUID) order. Files that belong to no
        study are only in :func:`scan`'s :attr:`StudyScan.unassigned`.
    """
    return list(scan(paths, config=config).studies)
