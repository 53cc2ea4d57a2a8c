"""The one SQLite layer: the node's ledger, the batch header index and the batch run ledger.

:class:`SQLiteStore` opens a database (WAL journal, creating its folder and its schema),
checks its schema version, and gives the stores built on it a single way to write:
:meth:`SQLiteStore.transaction`, a ``BEGIN IMMEDIATE ... COMMIT`` that rolls back when
its body raises and turns every ``sqlite3.Error`` into a :class:`~chexnet_dicom.errors.StorageError`.
Transactions nest: an inner one joins the outer, and :meth:`SQLiteStore.checkpoint`
commits the outer one's work so far (discovery commits in chunks).

Durability is an argument: ``FULL`` (every commit is fsynced: the node acknowledges what
it committed) or ``NORMAL`` (a power cut may lose the last commits, never corrupt the
file: a batch run redoes them).

Schema version
--------------
The version is stored in the ``meta`` table under the key ``schema_version``.  Databases
written before this layer existed kept it under another key (the node's ledger under
``schema``, the header index under ``version``; the run ledger kept none): when such a
legacy key holds the current version, it is moved to ``schema_version`` on open; any
other version (older or newer) is refused with a :class:`StorageError` that says what to
do.  A database without any version is stamped with the current one.

SQL stays in the store modules built on this one; nothing else sees a connection.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from chexnet_dicom.errors import StorageError
from chexnet_dicom.vocab import Vocabulary

__all__ = ["VERSION_KEY", "Durability", "SQLiteStore"]

#: The ``meta`` key of the schema version.
VERSION_KEY = "schema_version"

_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"


class Durability(Vocabulary):
    """``PRAGMA synchronous`` of a store."""

    #: Every commit is fsynced before it returns.
    FULL = "FULL"
    #: Commits survive a crash of the process, not always a power cut (WAL: never corrupt).
    NORMAL = "NORMAL"


class SQLiteStore:
    """One SQLite database with its schema (thread-safe: one connection, one lock).

    Parameters
    ----------
    path
        The SQLite file (created, with its folder, when missing).
    schema
        ``CREATE ... IF NOT EXISTS`` statements (a ``meta (key, value)`` table is added).
    version
        The schema version this code reads and writes.
    what
        What the database is, for messages ("node ledger").
    durability
        :attr:`Durability.FULL` or :attr:`Durability.NORMAL`.
    legacy_version_keys
        ``meta`` keys earlier code kept the version under (see the module docstring).
    hint
        What to do when the file cannot be opened or is damaged, appended to the message.
    timeout
        Seconds to wait for another process's write lock.

    Raises
    ------
    StorageError
        When the file cannot be opened or created, is not a database, or has another
        schema version.
    """

    def __init__(
        self,
        path: str | Path,
        schema: str,
        *,
        version: int,
        what: str,
        durability: Durability = Durability.FULL,
        legacy_version_keys: Sequence[str] = (),
        hint: str = "",
        timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self._hint = f"; {hint}" if hint else ""
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the {what} {self.path} ({exc}){self._hint}") from None
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={Durability(durability).value}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_META + schema)
            self._check_version(version, tuple(legacy_version_keys))
        except sqlite3.Error as exc:
            self._db.close()
            raise StorageError(
                f"the {what} {self.path} is damaged or not a database ({exc}){self._hint}"
            ) from None
        except StorageError:
            self._db.close()
            raise

    def _check_version(self, version: int, legacy: tuple[str, ...]) -> None:
        with self.transaction() as db:
            found = self.get_meta(VERSION_KEY)
            old_key = None
            if found is None:
                for key in legacy:
                    found = self.get_meta(key)
                    if found is not None:
                        old_key = key
                        break
            if found is not None and found != str(version):
                raise StorageError(
                    f"the {self.what} {self.path} has schema version {found}, this chexnet-dicom reads "
                    f"version {version}{self._hint or '; use the chexnet-dicom that wrote it, or start afresh'}"
                )
            if old_key is not None:
                db.execute("DELETE FROM meta WHERE key = ?", (old_key,))
            if old_key is not None or found is None:
                self.set_meta(VERSION_KEY, str(version))

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (durably, as the store's durability says) when the body returns.

        An inner transaction joins the outer one.  When the body raises, the transaction
        is rolled back; a ``sqlite3.Error`` (from the body or the commit) is raised as
        :class:`StorageError`, anything else as itself.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._begin()
            self._depth = 1
            try:
                yield self._db
            except BaseException as exc:
                self._depth = 0
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"the {self.what} could not be written ({exc})") from exc
                raise
            self._depth = 0
            self._commit()

    def checkpoint(self) -> None:
        """Commit the open transaction's work so far and go on in a new one (no-op outside one)."""
        with self._lock:
            if self._depth:
                self._commit()
                self._begin()

    def _begin(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"the {self.what} is not writable ({exc})") from exc

    def _commit(self) -> None:
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StorageError(f"the {self.what} could not be written ({exc})") from exc

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    # ------------------------------------------------------------------ reads
    def read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """All rows of a query."""
        with self._lock:
            try:
                return list(self._db.execute(sql, args))
            except sqlite3.Error as exc:
                raise StorageError(f"the {self.what} could not be read ({exc})") from exc

    def stream(self, sql: str, args: Sequence[Any] = ()) -> Iterator[sqlite3.Row]:
        """The rows of a query, one at a time (for exports larger than memory; one thread)."""
        try:
            yield from self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StorageError(f"the {self.what} could not be read ({exc})") from exc

    def one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        """The first row of a query, None when there is none."""
        rows = self.read(sql, args)
        return rows[0] if rows else None

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str) -> str | None:
        """A value of the ``meta`` table, None when unset."""
        row = self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the ``meta`` table."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back)."""
        with self._lock:
            self._rollback()
            self._db.close()
