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
    run = _Discovery(index, cfg, root_s, commit_every, progress)
    with index.transaction():  # committed in chunks of commit_every files
        run.walk()
        run.follow_dicomdirs()
        removed = index.remove_unseen(run.generation)
        duplicates = _resolve_duplicates(index)
        index.set_meta("generation", str(run.generation))
        index.set_meta("ingest", key)
        index.set_meta("root", os.path.realpath(root_s))
    counts = run.counts
    report = DiscoveryReport(
        files=index.count(),
        read=counts["new"] + counts["changed"],
        removed=removed,
        dicomdirs=len(run.dicomdirs),
        duplicates=duplicates,
        **counts,
    )
    log.info("discovery: %s", report)
    return report


class _Discovery:
    """The state of one :func:`discover`: the generation, the counts, the files met so far."""

    def __init__(
        self,
        index: HeaderIndex,
        cfg: IngestConfig,
        root: str,
        commit_every: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.index = index
        self.cfg = cfg
        self.root = root
        self.commit_every = commit_every
        self.progress = progress
        self.generation = int(index.get_meta("generation") or 0) + 1
        self.counts = {"new": 0, "changed": 0, "unchanged": 0}
        self.walked: set[str] = set()
        self.dicomdirs: list[str] = []
        self.seq = 0

    def walk(self) -> None:
        """Every file under the root, in walking order."""
        for entry in iter_files([self.root]):
            rel = rel_path(entry.path, self.root)
            self.walked.add(rel)
            if entry.reason is not None:
                self.refuse(rel, entry.reason, entry.message, FOUND_BY_WALK)
                continue
            self.handle(rel, entry.path, FOUND_BY_WALK)

    def follow_dicomdirs(self) -> None:
        """The files the DICOMDIRs found reference (a file already walked is one record)."""
        for dicomdir in self.dicomdirs:
            for rel, problem, message in self.index.refs(dicomdir):
                if rel in self.walked:
                    self.index.add_found_by(rel, FOUND_BY_DICOMDIR)
                    continue
                self.walked.add(rel)
                if problem:
                    self.refuse(rel, problem, message, FOUND_BY_DICOMDIR)
                else:
                    self.handle(rel, os.path.join(self.root, rel), FOUND_BY_DICOMDIR)

    def refuse(self, rel: str, reason: str, message: str, found_by: int) -> None:
        """A file not read (outside the root, a missing reference, ...)."""
        self.seq += 1
        self.index.put(_refused(rel, reason, message, found_by, self.seq), self.generation)

    def handle(self, rel: str, full: str, found_by: int) -> None:
        """One file: unchanged (seen again) or read and recorded; then commit and progress."""
        self.seq += 1
        stamp = self.index.stamp(rel)
        try:
            st: os.stat_result | None = os.stat(full)
        except OSError:
            st = None
        if stamp is not None and st is not None and stamp[:2] == (st.st_size, st.st_mtime_ns):
            self.index.seen(rel, self.generation, self.seq, found_by)
            self.counts["unchanged"] += 1
            kind = stamp[2]
        else:
            kind = self._read(rel, full, found_by, exists=st is not None, new=stamp is None)
        if kind == FileKind.INDEX:
            self.dicomdirs.append(rel)
        if self.seq % self.commit_every == 0:
            self.index.checkpoint()
        if self.progress is not None:
            self.progress(self.seq)

    def _read(self, rel: str, full: str, found_by: int, *, exists: bool, new: bool) -> str:
        """Read a new or changed file's header and record it; the kind of file it is."""
        found = read_instance(full, self.cfg, keep_raw=True)
        if not exists:
            assert isinstance(found, Skipped)
            record = _refused(rel, found.reason, found.message, found_by, self.seq)
        else:
            record = _record(rel, full, found, found_by, self.seq)
        self.index.put(record, self.generation)
        self.counts["new" if new else "changed"] += 1
        if record.kind == FileKind.INDEX:
            self._references(rel, full, record)
        fault("batch.discover")
        return record.kind

    def _references(self, rel: str, full: str, record: FileRecord) -> None:
        """Record a DICOMDIR's references, or mark it corrupt when it cannot be used."""
        try:
            self.index.set_refs(rel, dicomdir_references(full, self.root))
        except ValueError as exc:
            log.warning("%s: %s", phi_ref(rel, prefix="file"), exc)
            failed = {**asdict(record), "status": "error", "reason": CORRUPT_HEADER, "message": str(exc)}
            self.index.put(FileRecord(**failed), self.generation)
            self.index.set_refs(rel, [])


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
