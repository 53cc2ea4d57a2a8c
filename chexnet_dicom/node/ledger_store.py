"""The node ledger's database: its schema, how it is opened, and its events and counters.

:class:`LedgerStore` opens the SQLite file through :class:`~chexnet_dicom.storage.SQLiteStore`
(WAL, schema version, transactions that roll back and raise
:class:`~chexnet_dicom.errors.StorageError`) with the durability it is given: ``FULL`` for
the node, whose commits are acknowledged to peers.  :class:`~.delivery_records.DeliveryRecords`
and :class:`~.ledger.NodeLedger` build on it; the tables are described in :mod:`.ledger`.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from chexnet_dicom.errors import StorageError
from chexnet_dicom.storage import Durability, SQLiteStore

__all__ = ["MAX_EVENTS", "SCHEMA", "SCHEMA_VERSION", "LedgerStore"]

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0,
    first_arrival REAL NOT NULL,
    last_arrival REAL NOT NULL,
    claimed_by TEXT,
    failure TEXT,
    failure_message TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_state ON studies(state, last_arrival);
CREATE TABLE IF NOT EXISTS instances (
    file_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT,
    state TEXT NOT NULL,
    conflict INTEGER NOT NULL DEFAULT 0,
    analysed_version INTEGER,
    calling_ae TEXT NOT NULL,
    adopted INTEGER NOT NULL DEFAULT 0,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_sop ON instances(sop_uid);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE INDEX IF NOT EXISTS instances_state ON instances(state, size);
CREATE TABLE IF NOT EXISTS records (
    study_uid TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    file_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    version INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (study_uid, sop_uid)
);
CREATE TABLE IF NOT EXISTS versions (
    study_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    sr_uid TEXT,
    sr_series_uid TEXT,
    sr_class_uid TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (study_uid, version)
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    folder TEXT,
    last_ack REAL NOT NULL,
    created REAL NOT NULL,
    sent REAL
);
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries(state, next_at);
CREATE TABLE IF NOT EXISTS delivery_files (
    delivery INTEGER NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    sends INTEGER NOT NULL DEFAULT 0,
    uncertain INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (delivery, name)
);
CREATE TABLE IF NOT EXISTS headers (
    file_id TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    px_offset INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    implicit INTEGER NOT NULL,
    little INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS drift_observations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    metadata TEXT NOT NULL,
    probabilities BLOB NOT NULL,
    present BLOB,
    features BLOB
);
CREATE TABLE IF NOT EXISTS drift_state (
    name TEXT PRIMARY KEY,
    covers INTEGER NOT NULL,
    value TEXT NOT NULL,
    updated REAL NOT NULL
);
"""


#: Events kept for ``chexdcm status``.
MAX_EVENTS = 200


class LedgerStore:
    """The ledger's connection (one per process; thread-safe) with its events and counters.

    Parameters
    ----------
    path
        The SQLite file (created with its schema).
    durability
        ``PRAGMA synchronous``: :attr:`~chexnet_dicom.storage.Durability.FULL` (the node:
        every commit fsynced before the step it records is acknowledged), or ``NORMAL``
        (benchmarks and tools that may lose the last commits to a power cut).
    """

    def __init__(self, path: str | Path, *, durability: Durability = Durability.FULL) -> None:
        self.path = Path(path)
        self._store = SQLiteStore(
            self.path,
            SCHEMA,
            version=SCHEMA_VERSION,
            what="node ledger",
            durability=durability,
            legacy_version_keys=("schema",),
        )
        self._tx = self._store.transaction
        self._read = self._store.read

    def close(self) -> None:
        """Close the connection."""
        self._store.close()

    # -- events and counters

    def note(self, kind: str, message: str) -> None:
        """Record a PHI-free event (the last ones are shown by ``chexdcm status``)."""
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO events (ts, kind, message) VALUES (?, ?, ?)", (time.time(), kind, message)
                )
                db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (MAX_EVENTS,))
        except StorageError:
            pass  # an event that cannot be recorded must not fail the step that had it

    def count(self, name: str, by: int = 1) -> None:
        """Add ``by`` to the counter ``name``."""
        with contextlib.suppress(StorageError), self._tx() as db:
            db.execute(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                (name, by, by),
            )

    def counters(self) -> dict[str, int]:
        """Every counter."""
        return {r["name"]: r["value"] for r in self._read("SELECT name, value FROM counters")}

    def events(self, limit: int = 10) -> list[tuple[float, str, str]]:
        """The newest events, newest first."""
        rows = self._read("SELECT ts, kind, message FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return [(r["ts"], r["kind"], r["message"]) for r in rows]
