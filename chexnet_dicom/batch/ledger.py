"""The run ledger: which studies are finished, with their rows, and what the run was.

``OUT/state/ledger.sqlite`` records, per finished study, its content key and its rows,
in one transaction: a run killed at any point (``kill -9`` included) has either
recorded a study completely or not at all, and a run started again with the same
arguments skips the studies recorded with an unchanged content key.

The first run stores its fingerprint (weights hash, backend and precision, the analysis
options, shard, pseudonymisation key id, export root); a later run with a different one
is refused with a message that names what differs.  Batch size, decode workers, the
device and the engine may differ: they change float rounding at most.

The ledger holds raw rows (UIDs, paths): it is PHI, like the index.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chexnet_dicom.batch.index import open_store
from chexnet_dicom.batch.rows import StudyRows
from chexnet_dicom.batch.studies import StudyEntry
from chexnet_dicom.errors import ConfigError

__all__ = ["RunLedger", "fingerprint_differences"]

_VERSION = 1

#: The tables that hold a study's rows (a study is recorded or forgotten in all of them at once).
_STUDY_TABLES = ("studies", "predictions", "outcomes", "errors", "observations")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY, study_date TEXT, study_time TEXT, content TEXT, row TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions (study_uid TEXT, k INTEGER, row TEXT NOT NULL, PRIMARY KEY (study_uid, k));
CREATE TABLE IF NOT EXISTS outcomes (
    path TEXT PRIMARY KEY, study_uid TEXT, status TEXT, reason TEXT, message TEXT
);
CREATE TABLE IF NOT EXISTS errors (study_uid TEXT, k INTEGER, row TEXT NOT NULL, PRIMARY KEY (study_uid, k));
CREATE TABLE IF NOT EXISTS observations (
    study_uid TEXT, k INTEGER, metadata TEXT NOT NULL, features BLOB, PRIMARY KEY (study_uid, k)
);
"""

#: fingerprint keys whose values are not shown in a refusal (they may name a place).
_QUIET = {"export_root"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two run fingerprints, one phrase per setting (no PHI)."""
    a, b = _flat(old), _flat(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(key if key in _QUIET else f"{key} ({a.get(key)!r} before, {b.get(key)!r} now)")
    return out


class RunLedger:
    """The ledger in ``path`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._store = open_store(path, _SCHEMA, _VERSION, "run ledger")

    def check_fingerprint(self, fingerprint: dict[str, Any]) -> bool:
        """Store the run's fingerprint, or check it against the stored one.

        Returns
        -------
        bool
            True when resuming an earlier run (a fingerprint was stored).

        Raises
        ------
        ConfigError
            When the stored fingerprint differs (the message says what differs).
        """
        stored = self._store.get_meta("fingerprint")
        if stored is None:
            self._store.set_meta("fingerprint", json.dumps(fingerprint, sort_keys=True))
            return False
        differences = fingerprint_differences(json.loads(stored), fingerprint)
        if differences:
            raise ConfigError(
                f"resume refused: the run in {self.path.parent.parent} was started with other settings; "
                f"differs: {'; '.join(differences)}. Run again with the same weights and options, "
                "or use a new --out"
            )
        return True

    def done(self, study_uid: str) -> str | None:
        """The content key a study was recorded with, None when it is not finished."""
        row = self._store.one("SELECT content FROM studies WHERE study_uid = ?", (study_uid,))
        return None if row is None else str(row[0])

    def record(self, entry: StudyEntry, rows: StudyRows) -> None:
        """Record a finished study and its rows, replacing an earlier version, in one transaction."""
        uid = entry.study_uid
        with self._store.transaction() as con:
            for table in _STUDY_TABLES:
                con.execute(f"DELETE FROM {table} WHERE study_uid = ?", (uid,))
            con.execute(
                "INSERT INTO studies (study_uid, study_date, study_time, content, row) VALUES (?, ?, ?, ?, ?)",
                (uid, entry.study_date, entry.study_time, entry.content, json.dumps(rows.study)),
            )
            con.executemany(
                "INSERT INTO predictions (study_uid, k, row) VALUES (?, ?, ?)",
                [(uid, k, json.dumps(r)) for k, r in enumerate(rows.predictions)],
            )
            con.executemany(
                "INSERT OR REPLACE INTO outcomes (path, study_uid, status, reason, message) VALUES (?, ?, ?, ?, ?)",
                [(p, uid, s, r, m) for p, s, r, m in rows.outcomes],
            )
            con.executemany(
                "INSERT INTO errors (study_uid, k, row) VALUES (?, ?, ?)",
                [(uid, k, json.dumps(r)) for k, r in enumerate(rows.errors)],
            )
            con.executemany(
                "INSERT INTO observations (study_uid, k, metadata, features) VALUES (?, ?, ?, ?)",
                [(uid, k, json.dumps(m), f) for k, (m, f) in enumerate(rows.observations)],
            )

    def forget_others(self, keep: set[str]) -> int:
        """Drop the studies no longer in the export (or the shard); return how many."""
        with self._store.transaction() as con:
            gone = [u for (u,) in con.execute("SELECT study_uid FROM studies") if u not in keep]
            for uid in gone:
                for table in _STUDY_TABLES:
                    con.execute(f"DELETE FROM {table} WHERE study_uid = ?", (uid,))
        return len(gone)

    # ------------------------------------------------------------------ reads, in table order
    def studies(self) -> Iterator[dict[str, Any]]:
        """``studies`` rows in the scan's study order."""
        for (row,) in self._store.stream(
            "SELECT row FROM studies ORDER BY study_date, study_time, study_uid"
        ):
            yield json.loads(row)

    def predictions(self) -> Iterator[dict[str, Any]]:
        """``predictions`` rows: studies in order, images in selection order."""
        query = (
            "SELECT p.row FROM predictions p JOIN studies s ON p.study_uid = s.study_uid "
            "ORDER BY s.study_date, s.study_time, s.study_uid, p.k"
        )
        for (row,) in self._store.stream(query):
            yield json.loads(row)

    def observations(self) -> Iterator[tuple[dict[str, Any], dict[str, str] | None, bytes | None]]:
        """(``predictions`` row, drift metadata, float32 feature bytes) per analysed image, in table order.

        The metadata is None for a study recorded by a version that kept none (its
        features too); the features are None when the weights gave none.
        """
        query = (
            "SELECT p.row, o.metadata, o.features FROM predictions p JOIN studies s ON p.study_uid = s.study_uid "
            "LEFT JOIN observations o ON o.study_uid = p.study_uid AND o.k = p.k "
            "ORDER BY s.study_date, s.study_time, s.study_uid, p.k"
        )
        for row, metadata, features in self._store.stream(query):
            yield json.loads(row), (json.loads(metadata) if metadata is not None else None), features

    def errors(self) -> Iterator[dict[str, Any]]:
        """Error rows of the studies, in study order."""
        query = (
            "SELECT e.row FROM errors e JOIN studies s ON e.study_uid = s.study_uid "
            "ORDER BY s.study_date, s.study_time, s.study_uid, e.k"
        )
        for (row,) in self._store.stream(query):
            yield json.loads(row)

    def undelivered(self) -> set[str]:
        """Studies with a DICOM result the destination did not accept (``--send``)."""
        rows = self._store.stream("SELECT study_uid, row FROM errors")
        return {uid for uid, row in rows if json.loads(row).get("stage") == "send"}

    def outcome(self, path: str) -> tuple[str, str, str] | None:
        """(status, reason, message) of a study file, None when its study is not finished."""
        row = self._store.one("SELECT status, reason, message FROM outcomes WHERE path = ?", (path,))
        return None if row is None else (str(row[0]), str(row[1]), str(row[2]))

    def count(self, table: str) -> int:
        """Rows of a ledger table."""
        if table not in _STUDY_TABLES:
            raise ValueError(f"no ledger table {table!r}")
        row = self._store.one(f"SELECT COUNT(*) FROM {table}")
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        """Close the database."""
        self._store.close()
