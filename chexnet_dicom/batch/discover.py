"""Discovery: every file of an export, found once, its header read once, into the index.

Rules
-----
* The export root is walked with the one folder walker
  (:func:`chexnet_dicom.dicom.walk.iter_files`): nested folders, any file names (no
  extension, ``.dcm``, upper case), hidden entries ignored, links out of the root
  refused (``OUTSIDE_ROOT``).
* Each new or changed file (size or modification time differ from the index) has its
  header read once (:func:`~chexnet_dicom.dicom.study.read_instance`, the scan's own
  reader and gate) and recorded with its header bytes.  An unchanged file is not read
  again: a re-run over a grown export reads only the new or changed files.  Files gone
  from the export leave the index.
* A DICOMDIR (any file whose Media Storage SOP Class is Media Storage Directory
  Storage, whatever its name) is listed as an index file and followed with pydicom's
  :class:`~pydicom.fileset.FileSet`.  A referenced path that leads outside the export
  root (``..`` components, an absolute path, or a link) is refused with
  ``OUTSIDE_ROOT`` and never read; a referenced file that does not exist is recorded
  with ``MISSING_FILE``.  A file found both by walking and through a DICOMDIR is one
  record (its ``found_by`` says both).
* Non-DICOM files are recorded (``NOT_DICOM``) without a warning.
* Duplicates: the files sharing a SOP Instance UID are resolved by the scan's rule 2
  (:func:`~chexnet_dicom.dicom.study.kept_index`) over the whole export, in walking
  order.
* The index commits every ``commit_every`` files, so a killed discovery keeps what it
  had read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom.uid import MediaStorageDirectoryStorage

from chexnet_dicom.batch.index import (
    FOUND_BY_DICOMDIR,
    FOUND_BY_WALK,
    FileKind,
    FileRecord,
    HeaderIndex,
    HeaderStatus,
)
from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.attrs import text
from chexnet_dicom.dicom.reasons import CORRUPT_HEADER, MISSING_FILE, OUTSIDE_ROOT, status_for
from chexnet_dicom.dicom.study import Instance, Skipped, kept_index, read_instance
from chexnet_dicom.dicom.walk import iter_files
from chexnet_dicom.faults import fault
from chexnet_dicom.logs import phi_ref, redact

__all__ = ["DiscoveryReport", "dicomdir_references", "discover", "rel_path"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoveryReport:
    """What one discovery did.

    Attributes
    ----------
    files
        Records in the index now (every file found).
    read
        Headers read in this discovery (new + changed files).
    new, changed, unchanged, removed
        Files by what happened to them since the previous discovery.
    dicomdirs
        DICOMDIR files found.
    duplicates
        Files that duplicate another file's SOP Instance UID.
    """

    files: int
    read: int
    new: int
    changed: int
    unchanged: int
    removed: int
    dicomdirs: int
    duplicates: int


def rel_path(path: str, root: str) -> str:
    """A path relative to the export root, with ``/`` separators."""
    return Path(os.path.relpath(path, root)).as_posix()


def _inside(path: str, root_real: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _ingest_key(cfg: IngestConfig) -> str:
    """What the recorded gate decisions depend on (the reading limits)."""
    return hashlib.sha256(json.dumps(asdict(cfg.limits), sort_keys=True).encode()).hexdigest()[:16]


def _attrs(record: dict[str, object], ds: object) -> None:
    from pydicom.dataset import Dataset

    if not isinstance(ds, Dataset):
        return
    for name, keyword in (
        ("sop_uid", "SOPInstanceUID"),
        ("series_uid", "SeriesInstanceUID"),
        ("study_uid", "StudyInstanceUID"),
        ("sop_class_uid", "SOPClassUID"),
        ("modality", "Modality"),
        ("view", "ViewPosition"),
        ("body_part", "BodyPartExamined"),
        ("study_date", "StudyDate"),
        ("study_time", "StudyTime"),
        ("patient_id", "PatientID"),
        ("accession", "AccessionNumber"),
        ("patient_sex", "PatientSex"),
        ("patient_age", "PatientAge"),
        ("birth_date", "PatientBirthDate"),
        ("manufacturer", "Manufacturer"),
    ):
        record[name] = text(ds, keyword)
    meta = getattr(ds, "file_meta", None)
    record["transfer_syntax"] = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""


def _is_dicomdir(ds: object) -> bool:
    meta = getattr(ds, "file_meta", None)
    return (
        meta is not None
        and str(meta.get("MediaStorageSOPClassUID", "") or "") == MediaStorageDirectoryStorage
    )


def _record(
    rel: str, full: str, found: tuple[Instance, tuple[str, str]] | Skipped, found_by: int, seq: int
) -> FileRecord:
    st = os.stat(full)
    fields: dict[str, object] = {
        "path": rel,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "found_by": found_by,
    }
    fields["seq"] = seq
    if isinstance(found, Skipped):
        ds = found.dataset
        kind = FileKind.INDEX if ds is not None and _is_dicomdir(ds) else FileKind.UNASSIGNED
        fields.update(kind=kind, status=found.status, reason=found.reason, message=found.message)
        if kind == FileKind.INDEX:
            fields.update(
                status=HeaderStatus.SKIPPED, reason="", message="DICOMDIR: an index of the export's files"
            )
        _attrs(fields, ds)
        return FileRecord(**fields)  # type: ignore[arg-type]
    inst, _when = found
    decision = inst.decision
    fields.update(
        kind=FileKind.INSTANCE,
        status=HeaderStatus.ACCEPTED if decision.accepted else HeaderStatus.SKIPPED,
        reason=decision.reason or "",
        message=decision.message if not decision.accepted else "",
    )
    _attrs(fields, inst.dataset)
    loc = inst.scanned.location
    if inst.scanned.raw is not None and loc is not None:
        fields.update(
            header=inst.scanned.raw, px_offset=loc.offset, implicit=int(loc.implicit), little=int(loc.little)
        )
        fields.update(size=loc.size, mtime_ns=loc.mtime_ns)
    return FileRecord(**fields)  # type: ignore[arg-type]


def _refused(rel: str, reason: str, message: str, found_by: int, seq: int) -> FileRecord:
    return FileRecord(
        path=rel, size=-1, mtime_ns=-1, kind=FileKind.UNASSIGNED, status=status_for(reason), reason=reason,
        message=message, found_by=found_by, seq=seq,
    )  # fmt: skip


def dicomdir_references(path: str, root: str) -> list[tuple[str, str, str]]:
    """The files a DICOMDIR references: ``(path relative to root, problem, message)``.

    ``problem`` is ``""`` for a usable reference, ``OUTSIDE_ROOT`` for one that leads
    outside ``root`` (refused before pydicom sees it), ``MISSING_FILE`` for one that does
    not exist.  The usable ones are the instances of pydicom's
    :class:`~pydicom.fileset.FileSet`.

    Raises
    ------
    ValueError
        When the DICOMDIR cannot be used (the message quotes no values).
    """
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    root_real = os.path.realpath(root)
    base = os.path.dirname(path)
    out: list[tuple[str, str, str]] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path)
            for item in ds.get("DirectoryRecordSequence", []):
                if "ReferencedFileID" not in item:
                    continue
                value = item.ReferencedFileID
                parts = [str(value)] if isinstance(value, str) else [str(v) for v in value]
                full = os.path.normpath(os.path.join(base, *parts))
                rel = rel_path(full, root)
                if os.path.isabs(parts[0]) or not _inside(full, root_real):
                    out.append(
                        (
                            rel,
                            OUTSIDE_ROOT,
                            "a DICOMDIR reference that leads outside the export root: not read",
                        )
                    )
                    del item.ReferencedFileID  # pydicom would refuse the whole file set
                elif not os.path.isfile(full):
                    out.append(
                        (rel, MISSING_FILE, "the DICOMDIR references this file, but it does not exist")
                    )
            fileset = FileSet(ds)
            for instance in fileset:
                out.append((rel_path(os.path.normpath(instance.path), os.path.realpath(root)), "", ""))
    except Exception as exc:  # an unusable DICOMDIR loses nothing: its files are walked anyway
        raise ValueError(f"the DICOMDIR cannot be used ({type(exc).__name__}: {redact(exc, 80)})") from None
    unique = {r[0]: r for r in out}
    return sorted(unique.values())


def discover(
    root: str | os.PathLike[str],
    index: HeaderIndex,
    *,
    config: IngestConfig | None = None,
    commit_every: int = 256,
    progress: Callable[[int], None] | None = None,
) -> DiscoveryReport:
    """Bring the index of the export at ``root`` up to date (see the module docstring).

    Parameters
    ----------
    root
        The export root folder.
    index
        The header index to update.
    config
        Reading limits (a change of limits re-reads every file).
    commit_every
        Files per committed chunk.
    progress
        Called with the number of files handled so far.

    Returns
    -------
    DiscoveryReport
    """
    cfg = config or IngestConfig()
    root_s = os.fspath(root)
    key = _ingest_key(cfg)
    if index.get_meta("ingest") not in (None, key):
        log.info("the reading limits changed since the index was built: reading every header again")
        index.clear()
    generation = int(index.get_meta("generation") or 0) + 1
    counts = {"new": 0, "changed": 0, "unchanged": 0}
    walked: set[str] = set()
    dicomdirs: list[str] = []
    seq = 0
    with index.transaction():  # committed in chunks of commit_every files

        def handle(rel: str, full: str, found_by: int) -> None:
            nonlocal seq
            seq += 1
            stamp = index.stamp(rel)
            try:
                st = os.stat(full)
            except OSError:
                st = None
            if stamp is not None and st is not None and stamp[:2] == (st.st_size, st.st_mtime_ns):
                index.seen(rel, generation, seq, found_by)
                counts["unchanged"] += 1
                kind = stamp[2]
            else:
                found = read_instance(full, cfg, keep_raw=True)
                if st is None:
                    assert isinstance(found, Skipped)
                    record = _refused(rel, found.reason, found.message, found_by, seq)
                else:
                    record = _record(rel, full, found, found_by, seq)
                index.put(record, generation)
                counts["new" if stamp is None else "changed"] += 1
                kind = record.kind
                if kind == FileKind.INDEX:
                    try:
                        index.set_refs(rel, dicomdir_references(full, root_s))
                    except ValueError as exc:
                        log.warning("%s: %s", phi_ref(rel, prefix="file"), exc)
                        index.put(
                            FileRecord(
                                **{
                                    **asdict(record),
                                    "status": "error",
                                    "reason": CORRUPT_HEADER,
                                    "message": str(exc),
                                }
                            ),
                            generation,
                        )
                        index.set_refs(rel, [])
                fault("batch.discover")
            if kind == FileKind.INDEX:
                dicomdirs.append(rel)
            if seq % commit_every == 0:
                index.checkpoint()
            if progress is not None:
                progress(seq)

        for entry in iter_files([root_s]):
            rel = rel_path(entry.path, root_s)
            walked.add(rel)
            if entry.reason is not None:
                seq += 1
                reason = entry.reason
                index.put(_refused(rel, reason, entry.message, FOUND_BY_WALK, seq), generation)
                continue
            handle(rel, entry.path, FOUND_BY_WALK)
        for dicomdir in dicomdirs:
            for rel, problem, message in index.refs(dicomdir):
                if rel in walked:
                    index.add_found_by(rel, FOUND_BY_DICOMDIR)
                    continue
                walked.add(rel)
                if problem:
                    seq += 1
                    index.put(_refused(rel, problem, message, FOUND_BY_DICOMDIR, seq), generation)
                else:
                    handle(rel, os.path.join(root_s, rel), FOUND_BY_DICOMDIR)
        removed = index.remove_unseen(generation)
        duplicates = _resolve_duplicates(index)
        index.set_meta("generation", str(generation))
        index.set_meta("ingest", key)
        index.set_meta("root", os.path.realpath(root_s))
    report = DiscoveryReport(
        files=index.count(),
        read=counts["new"] + counts["changed"],
        removed=removed,
        dicomdirs=len(dicomdirs),
        duplicates=duplicates,
        **counts,
    )
    log.info("discovery: %s", report)
    return report


def _resolve_duplicates(index: HeaderIndex) -> int:
    """Rule 2 over the whole export: mark every file that is not the one kept for its SOP Instance UID."""
    pairs: list[tuple[str, str]] = []
    group: list[FileRecord] = []

    def close() -> None:
        if len(group) > 1:
            kept = group[kept_index([r.accepted for r in group])]
            pairs.extend((r.path, kept.path) for r in group if r is not kept)

    for record in index.duplicated_records():
        if group and group[0].sop_uid != record.sop_uid:
            close()
            group = []
        group.append(record)
    close()
    index.set_duplicates(pairs)
    return len(pairs)
