"""The header index of an export: one SQLite row per file, headers kept as read.

``OUT/state/index.sqlite`` holds, for every file discovery found (walked or referenced
by a DICOMDIR): its path relative to the export root, size and modification time, how
it was found, what reading its header gave (status, reason, message, gate decision),
the identifiers and attributes the tables need, and the header bytes themselves with
where the pixel data starts.  The runner rebuilds each study's instances from these
rows (:func:`~chexnet_dicom.dicom.read.header_from_raw`), so a file's header is read
from the file once, whatever the number of runs.

The index holds paths, UIDs and headers: it is PHI, like the export itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from chexnet_dicom.storage import Durability, SQLiteStore
from chexnet_dicom.vocab import Vocabulary

__all__ = [
    "FOUND_BY_DICOMDIR",
    "FOUND_BY_WALK",
    "FileKind",
    "FileRecord",
    "HeaderIndex",
    "HeaderStatus",
    "open_store",
]

#: ``FileRecord.found_by`` bits.
FOUND_BY_WALK = 1
FOUND_BY_DICOMDIR = 2

_VERSION = 1


class FileKind(Vocabulary):
    """``FileRecord.kind``: what a file is to the run."""

    #: Placed in a study.
    INSTANCE = "instance"
    #: Belongs to no study: not DICOM, unreadable, missing UIDs, refused.
    UNASSIGNED = "unassigned"
    #: A DICOMDIR.
    INDEX = "index"


class HeaderStatus(Vocabulary):
    """``FileRecord.status``: what the header gate said."""

    ACCEPTED = "accepted"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass(frozen=True)
class FileRecord:
    """One file of the export, as discovery recorded it.

    Attributes
    ----------
    path
        Relative to the export root, with ``/`` separators (``..`` only for a DICOMDIR
        reference that leads outside, which is never read).
    size, mtime_ns
        When it was read (-1 for a file that was not read).
    kind
        A :class:`FileKind` value.
    status
        A :class:`HeaderStatus` value.
    reason, message
        Why, when not accepted (reason codes of :mod:`chexnet_dicom.dicom.reasons`).
    sop_uid, series_uid, study_uid, sop_class_uid
        Identifiers ("" when absent).
    modality, view, body_part, transfer_syntax
        ViewPosition, BodyPartExamined, the transfer syntax UID.
    study_date, study_time, patient_id, accession, patient_sex, patient_age, birth_date, manufacturer
        The attributes the tables and subgroups need.
    header
        The header bytes (None when the file was not read, or is deflated).
    px_offset, implicit, little
        Where the pixel data starts and the dataset's encoding (with ``header``).
    found_by
        :data:`FOUND_BY_WALK` and/or :data:`FOUND_BY_DICOMDIR`.
    seq
        Position in the latest discovery's walking order.
    """

    path: str
    size: int
    mtime_ns: int
    kind: str
    status: str
    reason: str = ""
    message: str = ""
    sop_uid: str = ""
    series_uid: str = ""
    study_uid: str = ""
    sop_class_uid: str = ""
    modality: str = ""
    view: str = ""
    body_part: str = ""
    transfer_syntax: str = ""
    study_date: str = ""
    study_time: str = ""
    patient_id: str = ""
    accession: str = ""
    patient_sex: str = ""
    patient_age: str = ""
    birth_date: str = ""
    manufacturer: str = ""
    header: bytes | None = None
    px_offset: int = -1
    implicit: int = 0
    little: int = 1
    found_by: int = FOUND_BY_WALK
    seq: int = 0

    @property
    def accepted(self) -> bool:
        """Whether the header gate accepted the file."""
        return self.status == HeaderStatus.ACCEPTED


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(FileRecord))

_INTEGERS = frozenset({"size", "mtime_ns", "px_offset", "implicit", "little", "found_by", "seq"})


def _column(name: str) -> str:
    kind = "BLOB" if name == "header" else "INTEGER" if name in _INTEGERS else "TEXT"
    return f"{name} {kind}" + (" PRIMARY KEY" if name == "path" else "")


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS files (
    {", ".join(_column(c) for c in COLUMNS)},
    generation INTEGER NOT NULL DEFAULT 0,
    duplicate_of TEXT
);
CREATE INDEX IF NOT EXISTS files_sop ON files (sop_uid);
CREATE INDEX IF NOT EXISTS files_study ON files (study_uid);
CREATE INDEX IF NOT EXISTS files_seq ON files (seq);
CREATE TABLE IF NOT EXISTS dicomdir_refs (
    dicomdir TEXT NOT NULL, path TEXT NOT NULL, problem TEXT NOT NULL, message TEXT NOT NULL,
    PRIMARY KEY (dicomdir, path)
);
"""


def open_store(path: Path, schema: str, version: int, what: str) -> SQLiteStore:
    """Open (creating) a SQLite database of a batch run: WAL, ``synchronous=NORMAL`` (a run redoes lost work).

    Raises
    ------
    StorageError
        When the database cannot be opened (permissions, a damaged file, another version).
    """
    return SQLiteStore(
        path,
        schema,
        version=version,
        what=what,
        durability=Durability.NORMAL,
        legacy_version_keys=("version",),
        hint="check the --out folder, or use a new --out",
        timeout=60.0,
    )


_INSTANCE = f"kind = '{FileKind.INSTANCE}'"
_KEPT = f"{_INSTANCE} AND duplicate_of IS NULL"

_PLAN = f"""
WITH firsts AS (
    SELECT study_uid, MIN(seq) AS first FROM files WHERE {_KEPT} GROUP BY study_uid
)
SELECT f.study_uid, f.study_date, f.study_time FROM files f
    JOIN firsts ON f.study_uid = firsts.study_uid AND f.seq = firsts.first
UNION
SELECT DISTINCT study_uid, '', '' FROM files
    WHERE {_INSTANCE} AND study_uid NOT IN (SELECT study_uid FROM firsts)
ORDER BY 2, 3, 1
"""


class HeaderIndex:
    """The header index in ``path`` (see the module docstring).

    Every write joins the open :meth:`transaction`, or commits on its own.

    Parameters
    ----------
    path
        The SQLite file (created when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._store = open_store(path, _SCHEMA, _VERSION, "header index")
        self.transaction = self._store.transaction
        self.checkpoint = self._store.checkpoint
        self.get_meta = self._store.get_meta
        self.set_meta = self._store.set_meta

    # ------------------------------------------------------------------ writes
    def _write(self, sql: str, args: Sequence[object] = ()) -> int:
        with self._store.transaction() as db:
            return int(db.execute(sql, args).rowcount)

    def clear(self) -> None:
        """Forget every file (the reading limits changed: everything is read again)."""
        with self._store.transaction() as db:
            db.execute("DELETE FROM files")
            db.execute("DELETE FROM dicomdir_refs")

    def put(self, record: FileRecord, generation: int) -> None:
        """Insert or replace a file's record, seen in discovery ``generation``."""
        names = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        self._write(
            f"INSERT OR REPLACE INTO files ({names}, generation) VALUES ({marks}, ?)",
            (*astuple(record), generation),
        )

    def seen(self, path: str, generation: int, seq: int, found_by: int) -> None:
        """Mark an unchanged file as seen again, at walking position ``seq``."""
        self._write(
            "UPDATE files SET generation = ?, seq = ?, found_by = ? WHERE path = ?",
            (generation, seq, found_by, path),
        )

    def add_found_by(self, path: str, bits: int) -> None:
        """Record that a file was also found another way."""
        self._write("UPDATE files SET found_by = found_by | ? WHERE path = ?", (bits, path))

    def remove_unseen(self, generation: int) -> int:
        """Drop the files not seen in discovery ``generation`` (gone from the export); return how many."""
        with self._store.transaction() as db:
            cur = db.execute("DELETE FROM files WHERE generation != ?", (generation,))
            db.execute(
                "DELETE FROM dicomdir_refs WHERE dicomdir NOT IN "
                f"(SELECT path FROM files WHERE kind = '{FileKind.INDEX}')"
            )
            return int(cur.rowcount)

    def set_refs(self, dicomdir: str, refs: Sequence[tuple[str, str, str]]) -> None:
        """Replace the references of a DICOMDIR: ``(path, problem, message)``, problem "" when fine."""
        with self._store.transaction() as db:
            db.execute("DELETE FROM dicomdir_refs WHERE dicomdir = ?", (dicomdir,))
            db.executemany(
                "INSERT OR REPLACE INTO dicomdir_refs (dicomdir, path, problem, message) VALUES (?, ?, ?, ?)",
                [(dicomdir, *r) for r in refs],
            )

    def set_duplicates(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Record rule 2 of the selection: ``(duplicate path, kept path)``; every other file is kept."""
        with self._store.transaction() as db:
            db.execute("UPDATE files SET duplicate_of = NULL WHERE duplicate_of IS NOT NULL")
            db.executemany("UPDATE files SET duplicate_of = ? WHERE path = ?", [(k, d) for d, k in pairs])

    # ------------------------------------------------------------------ reads
    def stamp(self, path: str) -> tuple[int, int, str] | None:
        """(size, mtime_ns, kind) of a known file, None when unknown."""
        row = self._store.one("SELECT size, mtime_ns, kind FROM files WHERE path = ?", (path,))
        return None if row is None else (int(row[0]), int(row[1]), str(row[2]))

    def refs(self, dicomdir: str) -> list[tuple[str, str, str]]:
        """The stored references of a DICOMDIR."""
        return [
            (str(p), str(q), str(m))
            for p, q, m in self._store.read(
                "SELECT path, problem, message FROM dicomdir_refs WHERE dicomdir = ? ORDER BY path",
                (dicomdir,),
            )
        ]

    def _records(self, where: str, params: Sequence[object] = (), order: str = "seq") -> Iterator[FileRecord]:
        for row in self._store.stream(
            f"SELECT {', '.join(COLUMNS)} FROM files WHERE {where} ORDER BY {order}", params
        ):
            yield FileRecord(*row)

    def study_records(self, study_uid: str) -> Iterator[FileRecord]:
        """The files placed in a study, in walking order."""
        return self._records(f"{_INSTANCE} AND study_uid = ?", (study_uid,))

    def kept_records_with_headers(self) -> Iterator[FileRecord]:
        """The instances that are no duplicate and whose header bytes are stored, in walking order."""
        return self._records(f"{_KEPT} AND header IS NOT NULL")

    def duplicated_records(self) -> Iterator[FileRecord]:
        """The instances whose SOP Instance UID another instance has too, grouped by that UID."""
        where = (
            f"{_INSTANCE} AND sop_uid IN "
            f"(SELECT sop_uid FROM files WHERE {_INSTANCE} GROUP BY sop_uid HAVING COUNT(*) > 1)"
        )
        return self._records(where, order="sop_uid, seq")

    def study_order(self) -> list[tuple[str, str, str]]:
        """``(study_uid, date, time)`` of every study, in the scan's order (date and time of its first kept file)."""
        return [(str(u), str(d), str(t)) for u, d, t in self._store.read(_PLAN)]

    def study_content(self, study_uid: str) -> list[tuple[str, int, int, str, str]]:
        """``(path, size, mtime_ns, status, duplicate_of)`` of a study's files, by path (its content key's input)."""
        rows = self._store.read(
            "SELECT path, size, mtime_ns, status, COALESCE(duplicate_of, '') FROM files "
            f"WHERE {_INSTANCE} AND study_uid = ? ORDER BY path",
            (study_uid,),
        )
        return [(str(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4])) for r in rows]

    def accepted_study_uids(self) -> Iterator[str]:
        """The study of every accepted instance that is no duplicate (one item per image)."""
        for (uid,) in self._store.stream(
            f"SELECT study_uid FROM files WHERE {_KEPT} AND status = '{HeaderStatus.ACCEPTED}'"
        ):
            yield str(uid)

    def table_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every file, by path: ``path, size, kind, status, reason, message, found_by, study_uid,
        sop_uid, duplicate_of ("" when kept), modality, view, body_part, transfer_syntax``."""
        query = (
            "SELECT path, size, kind, status, reason, message, found_by, study_uid, sop_uid, "
            "COALESCE(duplicate_of, ''), modality, view, body_part, transfer_syntax FROM files ORDER BY path"
        )
        for row in self._store.stream(query):
            yield tuple(row)

    def duplicate_of(self, path: str) -> str | None:
        """The kept file a duplicate stands for, None for a kept file."""
        row = self._store.one("SELECT duplicate_of FROM files WHERE path = ?", (path,))
        return None if row is None or row[0] is None else str(row[0])

    def count(self) -> int:
        """How many files the index holds."""
        row = self._store.one("SELECT COUNT(*) FROM files")
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        """Commit and close."""
        self._store.close()
