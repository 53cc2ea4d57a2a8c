"""The studies of an indexed export, rebuilt from the index by the scan's own rules.

:func:`study_plan` lists the studies in the scan's order (rule 4: StudyDate, StudyTime,
StudyInstanceUID of the first kept instance in walking order) with a content key (what
the study's files were when indexed); :func:`load_study` rebuilds one study's
:class:`~chexnet_dicom.dicom.study.Study` from the stored headers with
:func:`~chexnet_dicom.dicom.study.instance_from_header`,
:func:`~chexnet_dicom.dicom.study.duplicate_skipped` and
:func:`~chexnet_dicom.dicom.study.build_study`, exactly as
:func:`~chexnet_dicom.dicom.study.scan` would from the files.

Shards
------
``--shard i/n`` (1 <= i <= n) takes the studies whose unkeyed hash
``sha256("chexnet-dicom:shard:" + StudyInstanceUID)`` modulo ``n`` is ``i - 1``, and the
files that belong to no study by the same hash of their path: every file and study
lands in exactly one shard, whatever machine computes it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from chexnet_dicom.batch.index import FileRecord, HeaderIndex
from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.read import PixelLocation, ScannedHeader, header_from_raw, read_header
from chexnet_dicom.dicom.study import (
    Instance,
    Skipped,
    Study,
    build_study,
    duplicate_skipped,
    instance_from_header,
)
from chexnet_dicom.errors import ConfigError, InputError

__all__ = ["WHOLE", "Shard", "StudyEntry", "in_shard", "load_study", "study_plan"]


@dataclass(frozen=True)
class Shard:
    """``--shard i/n``: the i-th of n disjoint parts (1-based)."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``"i/n"``.

        Raises
        ------
        ConfigError
            When it is not ``i/n`` with 1 <= i <= n.
        """
        head, sep, tail = text.partition("/")
        try:
            i, n = int(head), int(tail)
        except ValueError:
            i = n = 0
        if not sep or not 1 <= i <= n:
            raise ConfigError(f"--shard must be i/n with 1 <= i <= n (for example 1/4), not {text!r}")
        return cls(i, n)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


#: The whole export (``--shard 1/1``).
WHOLE = Shard()


def in_shard(key: str, shard: Shard) -> bool:
    """Whether the study UID (or the path of a file without a study) ``key`` belongs to ``shard``."""
    if shard.count == 1:
        return True
    digest = hashlib.sha256(f"chexnet-dicom:shard:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % shard.count == shard.index - 1


@dataclass(frozen=True)
class StudyEntry:
    """A study of the plan: its UID, order and content key."""

    study_uid: str
    study_date: str
    study_time: str
    content: str


def _content(index: HeaderIndex, study_uid: str) -> str:
    h = hashlib.sha256()
    for row in index.study_content(study_uid):
        h.update(repr(row).encode())
    return h.hexdigest()[:32]


def study_plan(index: HeaderIndex, shard: Shard | None = None) -> Iterator[StudyEntry]:
    """The studies of the index that belong to ``shard`` (all: None), in the scan's order."""
    shard = shard or WHOLE
    for uid, date, time_ in index.study_order():
        if in_shard(uid, shard):
            yield StudyEntry(uid, date, time_, _content(index, uid))


def _scanned(record: FileRecord, full: str, cfg: IngestConfig) -> ScannedHeader:
    if record.header is None or record.px_offset < 0:  # a deflated file: its pixels need a full read anyway
        return read_header(full, limits=cfg.limits)
    location = PixelLocation(
        full, record.px_offset, record.size, record.mtime_ns, bool(record.implicit), bool(record.little)
    )
    return header_from_raw(record.header, location, limits=cfg.limits)


def load_study(index: HeaderIndex, study_uid: str, root: str, cfg: IngestConfig) -> Study:
    """Rebuild one study from its stored headers (see the module docstring).

    Paths in the study are ``os.path.join(root, relative path)``.
    """
    instances: list[Instance] = []
    skipped: list[Skipped] = []
    when = ("", "")
    first = True
    for record in index.study_records(study_uid):
        full = os.path.join(root, record.path)
        try:
            found = instance_from_header(full, _scanned(record, full, cfg), cfg)
        except InputError as exc:  # the file changed or vanished since it was indexed
            skipped.append(Skipped(full, "error", exc.reason, str(exc)))
            continue
        if isinstance(found, Skipped):
            skipped.append(found)
            continue
        inst, inst_when = found
        kept = index.duplicate_of(record.path)
        if kept is not None:
            skipped.append(duplicate_skipped(inst, os.path.join(root, kept)))
            continue
        if first:
            when, first = inst_when, False
        instances.append(inst)
    return build_study(study_uid, instances, skipped, when)
