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

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from chexnet_dicom.errors import StorageError

__all__ = ["FOUND_BY_DICOMDIR", "FOUND_BY_WALK", "FileRecord", "HeaderIndex", "connect"]

#: ``FileRecord.found_by`` bits.
FOUND_BY_WALK = 1
FOUND_BY_DICOMDIR = 2

_VERSION = "1"


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
        ``"instance"`` (placed in a study), ``"unassigned"`` (belongs to no study:
        not DICOM, unreadable, missing UIDs, refused) or ``"index"`` (a DICOMDIR).
    status
        ``"accepted"`` (by the header gate), ``"skipped"`` or ``"error"``.
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
        return self.status == "accepted"


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(FileRecord))

_INTEGERS = frozenset({"size", "mtime_ns", "px_offset", "implicit", "little", "found_by", "seq"})


def _column(name: str) -> str:
    kind = "BLOB" if name == "header" else "INTEGER" if name in _INTEGERS else "TEXT"
    return f"{name} {kind}" + (" PRIMARY KEY" if name == "path" else "")


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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


def connect(path: Path, schema: str = "", what: str = "run database") -> sqlite3.Connection:
    """Open (creating) a SQLite database of a batch run (WAL journal) and create its ``schema``.

    Raises
    ------
    StorageError
        When the database cannot be opened (permissions, a damaged file).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=60.0, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA foreign_keys=ON")
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot open the {what} {path.name} ({exc}); check the --out folder") from None
    try:
        con.executescript(schema)
    except sqlite3.DatabaseError as exc:
        con.close()
        raise StorageError(f"the {what} {path} is damaged ({exc}); use a new --out") from None
    return con


class HeaderIndex:
    """The header index in ``path`` (see the module docstring).

    Parameters
    ----------
    path
        The SQLite file (created when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con = connect(path, _SCHEMA, "header index")
        version = self.get_meta("version")
        if version is None:
            self.set_meta("version", _VERSION)
        elif version != _VERSION:
            raise StorageError(f"the header index {path} has format {version}, not {_VERSION}; delete it")
        self._open = False

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str) -> str | None:
        """A value of the ``meta`` table, None when unset."""
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the ``meta`` table."""
        self.con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ writes
    def begin(self) -> None:
        """Start a transaction (discovery commits in chunks)."""
        if not self._open:
            self.con.execute("BEGIN")
            self._open = True

    def commit(self) -> None:
        """Commit the open transaction, if any."""
        if self._open:
            self.con.execute("COMMIT")
            self._open = False

    def clear(self) -> None:
        """Forget every file (the reading limits changed: everything is read again)."""
        self.con.execute("DELETE FROM files")
        self.con.execute("DELETE FROM dicomdir_refs")

    def put(self, record: FileRecord, generation: int) -> None:
        """Insert or replace a file's record, seen in discovery ``generation``."""
        names = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        self.con.execute(
            f"INSERT OR REPLACE INTO files ({names}, generation) VALUES ({marks}, ?)",
            (*astuple(record), generation),
        )

    def seen(self, path: str, generation: int, seq: int, found_by: int) -> None:
        """Mark an unchanged file as seen again, at walking position ``seq``."""
        self.con.execute(
            "UPDATE files SET generation = ?, seq = ?, found_by = ? WHERE path = ?",
            (generation, seq, found_by, path),
        )

    def add_found_by(self, path: str, bits: int) -> None:
        """Record that a file was also found another way."""
        self.con.execute("UPDATE files SET found_by = found_by | ? WHERE path = ?", (bits, path))

    def remove_unseen(self, generation: int) -> int:
        """Drop the files not seen in discovery ``generation`` (gone from the export); return how many."""
        cur = self.con.execute("DELETE FROM files WHERE generation != ?", (generation,))
        self.con.execute(
            "DELETE FROM dicomdir_refs WHERE dicomdir NOT IN (SELECT path FROM files WHERE kind = 'index')"
        )
        return int(cur.rowcount)

    def set_refs(self, dicomdir: str, refs: Sequence[tuple[str, str, str]]) -> None:
        """Replace the references of a DICOMDIR: ``(path, problem, message)``, problem "" when fine."""
        self.con.execute("DELETE FROM dicomdir_refs WHERE dicomdir = ?", (dicomdir,))
        self.con.executemany(
            "INSERT OR REPLACE INTO dicomdir_refs (dicomdir, path, problem, message) VALUES (?, ?, ?, ?)",
            [(dicomdir, *r) for r in refs],
        )

    def set_duplicates(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Record rule 2 of the selection: ``(duplicate path, kept path)``; every other file is kept."""
        self.con.execute("UPDATE files SET duplicate_of = NULL WHERE duplicate_of IS NOT NULL")
        self.con.executemany("UPDATE files SET duplicate_of = ? WHERE path = ?", [(k, d) for d, k in pairs])

    # ------------------------------------------------------------------ reads
    def stamp(self, path: str) -> tuple[int, int, str] | None:
        """(size, mtime_ns, kind) of a known file, None when unknown."""
        row = self.con.execute("SELECT size, mtime_ns, kind FROM files WHERE path = ?", (path,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), str(row[2]))

    def refs(self, dicomdir: str) -> list[tuple[str, str, str]]:
        """The stored references of a DICOMDIR."""
        return [
            (str(p), str(q), str(m))
            for p, q, m in self.con.execute(
                "SELECT path, problem, message FROM dicomdir_refs WHERE dicomdir = ? ORDER BY path",
                (dicomdir,),
            )
        ]

    def records(
        self, where: str = "1", params: Sequence[Any] = (), order: str = "seq"
    ) -> Iterator[FileRecord]:
        """Records matching a SQL condition, in ``order`` (streamed, not held in memory)."""
        cur = self.con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM files WHERE {where} ORDER BY {order}", params
        )
        for row in cur:
            yield FileRecord(*row)

    def duplicate_of(self, path: str) -> str | None:
        """The kept file a duplicate stands for, None for a kept file."""
        row = self.con.execute("SELECT duplicate_of FROM files WHERE path = ?", (path,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def count(self, where: str = "1", params: Sequence[Any] = ()) -> int:
        """How many files match a SQL condition."""
        return int(self.con.execute(f"SELECT COUNT(*) FROM files WHERE {where}", params).fetchone()[0])

    def close(self) -> None:
        """Commit and close."""
        self.commit()
        self.con.close()
