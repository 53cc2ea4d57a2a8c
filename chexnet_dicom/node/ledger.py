"""The node's ledger: one SQLite database (WAL, ``synchronous=FULL``) that every process shares.

Opened through :class:`~chexnet_dicom.storage.SQLiteStore` (schema version, transactions
that roll back and raise :class:`~chexnet_dicom.errors.StorageError`) by
:class:`~chexnet_dicom.node.ledger_store.LedgerStore` (schema, events, counters); the
delivery records are :class:`~chexnet_dicom.node.delivery_records.DeliveryRecords`; the
states below are the enums of :mod:`chexnet_dicom.node.states`.

It records what the node has acknowledged, analysed and delivered, so that a restart
resumes exactly where the node stopped.  A row is committed (and so fsynced) before
the step it records is acknowledged: an instance before its C-STORE success status,
a study's results before its delivery starts, a delivered file before the next one.

Tables
------
``instances``
    One row per received copy: its spool file, SOP/study/series UIDs, SHA-256, size,
    ``kind`` (``image`` in scope, ``out_of_scope``, ``own_output``), ``state``
    (``stored``, ``superseded`` by a later copy with other bytes, ``purged``,
    ``dropped``), ``conflict`` (another copy of the UID has other bytes).
``studies``
    The analysis state of each study: ``receiving`` (instances arriving),
    ``ready`` (complete: released and quiet), ``analysing``, ``analysed``,
    ``failed`` (with a reason), ``ignored`` (nothing in scope); ``pending`` counts
    in-scope instances not yet analysed, ``version`` the analyses done.
``headers``
    Each stored copy's header bytes as the listener read them, with where its pixel
    data starts: the worker parses these instead of reading the header again (removed
    when the image is purged).  Absent for a deflated file or a header over
    :data:`~chexnet_dicom.node.scp.HEADER_VALUE_BYTES`: the worker reads that one.
``records``
    What each analysed (or skipped) instance left for later versions of its study's
    SR (:mod:`chexnet_dicom.node.records`): kept after the images are purged.
``versions``
    The SR of each analysis of a study (its UIDs, for the next one's predecessors).
``deliveries`` and ``delivery_files``
    Each analysis's results and where they go: ``pending``, ``sending``, ``sent``,
    ``dead`` (after the last attempt); per file ``pending``, ``inflight``, ``sent``,
    with ``sends`` (how often it was handed to the transport) and ``uncertain`` (it was
    in flight when a crash or a dropped connection hid the outcome).
``events`` and ``counters``
    The last problems (PHI-free) and running counts, for ``chexdcm status``.
``drift_observations`` and ``drift_state``
    The rolling window of drift observations (binned metadata, probabilities, calls,
    features; no PHI, no pixels) and the latest drift score
    (:class:`~chexnet_dicom.node.ledger_drift.DriftRecords`), so the window survives
    a restart and every worker shares it.

Every timestamp is ``time.time()`` (comparable across processes and restarts).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from chexnet_dicom.node.delivery_records import DeliveryRecords, QueuedDelivery
from chexnet_dicom.node.ledger_drift import DriftRecords
from chexnet_dicom.node.ledger_rows import (
    CONFLICT,
    DUPLICATE,
    NEW,
    Claimed,
    NewInstance,
    StoredHeader,
    StoredInstance,
    instance_of,
)
from chexnet_dicom.node.ledger_store import SCHEMA_VERSION
from chexnet_dicom.node.states import DeliveryState, FileState, InstanceKind, InstanceState, StudyState

__all__ = [
    "CONFLICT",
    "DUPLICATE",
    "NEW",
    "SCHEMA_VERSION",
    "Claimed",
    "NewInstance",
    "NodeLedger",
    "QueuedDelivery",
    "StoredHeader",
    "StoredInstance",
]


class NodeLedger(DeliveryRecords, DriftRecords):
    """The node's ledger database (one per spool; thread-safe; one connection per process).

    Parameters
    ----------
    path
        The SQLite file (created with its schema).
    durability
        ``FULL`` (the default: what the node acknowledges is fsynced), or ``NORMAL``.
    """

    # -- receiving

    def known(self, sop_uid: str, sha256: str) -> bool:
        """Whether this very copy (UID and bytes) was received before."""
        rows = self._read(
            "SELECT 1 FROM instances WHERE sop_uid = ? AND sha256 = ? LIMIT 1", (sop_uid, sha256)
        )
        return bool(rows)

    def stored_bytes(self) -> int:
        """Bytes of the instances the spool holds."""
        rows = self._read(
            f"SELECT COALESCE(SUM(size), 0) AS n FROM instances WHERE state IN ('{InstanceState.STORED}', '{InstanceState.SUPERSEDED}')"
        )
        return int(rows[0]["n"])

    def record_instance(self, new: NewInstance, *, keep: bool = True, now: float | None = None) -> str:
        """Record a received copy and what it does to its study; durable when it returns.

        Parameters
        ----------
        new
            The copy (:class:`NewInstance`), with its header bytes when the listener kept them.
        keep
            False when the configuration drops instances of its kind (its row says
            ``dropped``; it never reaches a study).
        now
            The time to record (default: now).

        Returns
        -------
        str
            :data:`NEW`, :data:`DUPLICATE` (the same UID and bytes were received before:
            nothing recorded, the caller removes its copy) or :data:`CONFLICT` (same UID,
            other bytes: both kept and flagged, this one supersedes).
        """
        ts = time.time() if now is None else now
        with self._tx() as db:
            earlier = list(
                db.execute("SELECT file_id, sha256, state FROM instances WHERE sop_uid = ?", (new.sop_uid,))
            )
            if any(r["sha256"] == new.sha256 for r in earlier):
                db.execute(
                    "INSERT INTO counters VALUES ('duplicates', 1) ON CONFLICT(name) DO UPDATE SET value = value + 1"
                )
                return DUPLICATE
            outcome = NEW
            live = [r for r in earlier if r["state"] != InstanceState.DROPPED]
            if live and keep:
                outcome = CONFLICT
                db.execute(
                    "UPDATE instances SET conflict = 1, "
                    f"state = CASE state WHEN '{InstanceState.STORED}' THEN '{InstanceState.SUPERSEDED}' ELSE state END WHERE sop_uid = ?",
                    (new.sop_uid,),
                )
                db.execute(
                    "INSERT INTO counters VALUES ('conflicts', 1) ON CONFLICT(name) DO UPDATE SET value = value + 1"
                )
            db.execute(
                "INSERT INTO instances (file_id, path, sop_uid, study_uid, series_uid, sop_class_uid, sha256, "
                "size, kind, reason, state, conflict, calling_ae, adopted, received) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.file_id,
                    new.path,
                    new.sop_uid,
                    new.study_uid,
                    new.series_uid,
                    new.sop_class_uid,
                    new.sha256,
                    new.size if keep else 0,
                    new.kind,
                    new.reason,
                    InstanceState.STORED if keep else InstanceState.DROPPED,
                    int(outcome == CONFLICT),
                    new.calling_ae,
                    int(new.adopted),
                    ts,
                ),
            )
            if keep and new.header is not None:
                h = new.header
                db.execute(
                    "INSERT OR REPLACE INTO headers VALUES (?, ?, ?, ?, ?, ?)",
                    (new.file_id, h.data, h.offset, h.mtime_ns, int(h.implicit), int(h.little)),
                )
            if keep and new.kind in (InstanceKind.IMAGE, InstanceKind.OUT_OF_SCOPE):
                self._touch_study(db, new.study_uid, new.kind == InstanceKind.IMAGE, ts)
            return outcome

    @staticmethod
    def _touch_study(db: sqlite3.Connection, study_uid: str, in_scope: bool, ts: float) -> None:
        row = db.execute("SELECT state FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO studies (study_uid, state, pending, first_arrival, last_arrival, updated) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    study_uid,
                    StudyState.RECEIVING if in_scope else StudyState.IGNORED,
                    int(in_scope),
                    ts,
                    ts,
                    ts,
                ),
            )
            return
        state = row["state"]
        if in_scope:
            # a late in-scope instance (re-)opens the study; one arriving during its
            # analysis is counted and re-opens it when that analysis ends
            new_state = state if state == StudyState.ANALYSING else StudyState.RECEIVING
            db.execute(
                "UPDATE studies SET state = ?, pending = pending + 1, last_arrival = ?, updated = ? "
                "WHERE study_uid = ?",
                (new_state, ts, ts, study_uid),
            )
        elif state in (StudyState.RECEIVING, StudyState.READY, StudyState.IGNORED):
            # out of scope: part of the study if it comes with it, never a re-opening
            new_state = StudyState.RECEIVING if state == StudyState.READY else state
            db.execute(
                "UPDATE studies SET state = ?, last_arrival = ?, updated = ? WHERE study_uid = ?",
                (new_state, ts, ts, study_uid),
            )

    def stored_ids(self) -> set[str]:
        """File ids the ledger has a row for."""
        return {r["file_id"] for r in self._read("SELECT file_id FROM instances")}

    def instances(self, study_uid: str | None = None) -> list[StoredInstance]:
        """Every copy (of one study)."""
        if study_uid is None:
            rows = self._read("SELECT * FROM instances ORDER BY received")
        else:
            rows = self._read("SELECT * FROM instances WHERE study_uid = ? ORDER BY received", (study_uid,))
        return [instance_of(r) for r in rows]

    # -- study completion

    def promote_ready(self, now: float, quiet: float, open_wait: float, open_studies: set[str]) -> list[str]:
        """Mark complete studies ``ready``: quiet for ``quiet`` s and no open association
        (or quiet for ``open_wait`` s whatever the associations).

        Returns
        -------
        list of str
            The studies made ready.
        """
        rows = self._read(
            f"SELECT study_uid, last_arrival FROM studies WHERE state = '{StudyState.RECEIVING}' AND pending > 0 AND last_arrival <= ?",
            (now - quiet,),
        )
        ready = [
            r["study_uid"]
            for r in rows
            if r["study_uid"] not in open_studies or r["last_arrival"] <= now - open_wait
        ]
        if ready:
            with self._tx() as db:
                for uid in ready:
                    db.execute(
                        f"UPDATE studies SET state = '{StudyState.READY}', updated = ? WHERE study_uid = ? AND state = '{StudyState.RECEIVING}'",
                        (now, uid),
                    )
        return ready

    # -- analysis

    def claim(self, worker: str, limit: int = 1) -> list[Claimed]:
        """Take up to ``limit`` ready studies for ``worker`` (oldest first)."""
        out: list[Claimed] = []
        with self._tx() as db:
            rows = list(
                db.execute(
                    f"SELECT study_uid, version FROM studies WHERE state = '{StudyState.READY}' ORDER BY last_arrival LIMIT ?",
                    (limit,),
                )
            )
            for row in rows:
                uid = row["study_uid"]
                db.execute(
                    f"UPDATE studies SET state = '{StudyState.ANALYSING}', pending = 0, claimed_by = ?, updated = ? "
                    "WHERE study_uid = ?",
                    (worker, time.time(), uid),
                )
                instances = tuple(
                    instance_of(r)
                    for r in db.execute(
                        "SELECT i.*, h.data AS h_data, h.px_offset, h.mtime_ns, h.implicit, h.little "
                        "FROM instances i LEFT JOIN headers h ON h.file_id = i.file_id "
                        f"WHERE i.study_uid = ? AND i.state = '{InstanceState.STORED}' "
                        f"AND i.kind IN ('{InstanceKind.IMAGE}', '{InstanceKind.OUT_OF_SCOPE}') ORDER BY i.received",
                        (uid,),
                    )
                )
                records = {
                    r["sop_uid"]: (r["file_id"], bytes(r["data"]))
                    for r in db.execute(
                        "SELECT sop_uid, file_id, data FROM records WHERE study_uid = ?", (uid,)
                    )
                }
                prev = db.execute(
                    "SELECT sr_uid, sr_series_uid, sr_class_uid FROM versions WHERE study_uid = ? "
                    "AND sr_uid IS NOT NULL ORDER BY version DESC LIMIT 1",
                    (uid,),
                ).fetchone()
                last_ack = max((i.received for i in instances), default=time.time())
                out.append(
                    Claimed(
                        uid,
                        int(row["version"]) + 1,
                        instances,
                        records,
                        (prev["sr_uid"], prev["sr_series_uid"], prev["sr_class_uid"]) if prev else None,
                        last_ack,
                    )
                )
        return out

    def finish(
        self,
        claimed: Claimed,
        *,
        records: dict[str, tuple[str, str, bytes]],
        analysed_files: Sequence[str],
        sr: tuple[str, str, str] | None,
        destination: str,
        folder: str | None,
        files: Sequence[str],
        delivered: bool,
    ) -> int | None:
        """Record a study's analysis and queue its delivery, in one transaction.

        Parameters
        ----------
        claimed
            What the worker took.
        records
            ``sop_uid -> (file_id, kind, record bytes)`` of the newly analysed and skipped instances.
        analysed_files
            The file ids this analysis covered.
        sr
            ``(sr_uid, series_uid, sop_class_uid)`` of the new SR, or None.
        destination
            Where the results go (its description), or ``"outbox"``.
        folder
            The results folder (relative to the spool), or None without results.
        files
            The result files to send, in order.
        delivered
            The results are already where they go (the local outbox).

        Returns
        -------
        int or None
            The delivery's id (None without results).
        """
        now = time.time()
        with self._tx() as db:
            for sop_uid, (file_id, kind, data) in records.items():
                db.execute(
                    "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)",
                    (claimed.study_uid, sop_uid, file_id, kind, claimed.version, data),
                )
            db.executemany(
                "UPDATE instances SET analysed_version = ? WHERE file_id = ?",
                [(claimed.version, f) for f in analysed_files],
            )
            db.execute(
                "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?, ?, ?)",
                (claimed.study_uid, claimed.version, *(sr or (None, None, None)), now),
            )
            delivery = None
            if folder is not None and files:
                cur = db.execute(
                    "INSERT INTO deliveries (study_uid, version, destination, state, next_at, folder, last_ack, "
                    "created, sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        claimed.study_uid,
                        claimed.version,
                        destination,
                        DeliveryState.SENT if delivered else DeliveryState.PENDING,
                        now,
                        folder,
                        claimed.last_ack,
                        now,
                        now if delivered else None,
                    ),
                )
                delivery = int(cur.lastrowid or 0)
                db.executemany(
                    "INSERT INTO delivery_files (delivery, name, state, sends) VALUES (?, ?, ?, ?)",
                    [
                        (delivery, name, FileState.SENT if delivered else FileState.PENDING, int(delivered))
                        for name in files
                    ],
                )
            self._release(db, claimed.study_uid, StudyState.ANALYSED, now, version=claimed.version)
            return delivery

    @staticmethod
    def _release(
        db: sqlite3.Connection, study_uid: str, state: str, now: float, *, version: int | None = None
    ) -> None:
        """End an analysis: ``state``, or ``receiving`` again when instances arrived meanwhile."""
        db.execute(
            f"UPDATE studies SET state = CASE WHEN pending > 0 THEN '{StudyState.RECEIVING}' ELSE ? END, "
            "version = COALESCE(?, version), claimed_by = NULL, updated = ? WHERE study_uid = ?",
            (state, version, now, study_uid),
        )

    def unchanged(self, claimed: Claimed) -> None:
        """End an analysis that found nothing new to analyse (the results stand)."""
        with self._tx() as db:
            self._release(db, claimed.study_uid, StudyState.ANALYSED, time.time())

    def fail(self, claimed: Claimed, reason: str, message: str) -> None:
        """Mark a study failed with a reason (PHI-free message); the node goes on."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE studies SET failure = ?, failure_message = ? WHERE study_uid = ?",
                (reason, message, claimed.study_uid),
            )
            self._release(db, claimed.study_uid, StudyState.FAILED, now)
            db.execute(
                "INSERT INTO events (ts, kind, message) VALUES (?, ?, ?)",
                (now, "study-failed", f"{reason}: {message}"),
            )
            db.execute(
                "INSERT INTO counters VALUES ('studies_failed', 1) ON CONFLICT(name) DO UPDATE SET value = value + 1"
            )

    def study(self, study_uid: str) -> dict[str, Any] | None:
        """A study's row as a dictionary."""
        rows = self._read("SELECT * FROM studies WHERE study_uid = ?", (study_uid,))
        return dict(rows[0]) if rows else None

    def studies(self) -> list[dict[str, Any]]:
        """Every study's row."""
        return [dict(r) for r in self._read("SELECT * FROM studies ORDER BY first_arrival")]

    # -- restart recovery and retention

    def release_claims(self, worker: str) -> int:
        """The studies ``worker`` was analysing go back to the queue (its process ended); returns how many."""
        with self._tx() as db:
            return int(
                db.execute(
                    f"UPDATE studies SET state = '{StudyState.READY}', claimed_by = NULL "
                    f"WHERE state = '{StudyState.ANALYSING}' AND claimed_by = ?",
                    (worker,),
                ).rowcount
            )

    def recover(self) -> dict[str, int]:
        """After a crash or stop: unfinished analyses and sends go back to the queue.

        Returns
        -------
        dict
            How many studies and deliveries were resumed, and files whose outcome was lost.
        """
        with self._tx() as db:
            studies = db.execute(
                f"UPDATE studies SET state = '{StudyState.READY}', claimed_by = NULL WHERE state = '{StudyState.ANALYSING}'"
            ).rowcount
            deliveries = db.execute(
                f"UPDATE deliveries SET state = '{DeliveryState.PENDING}' WHERE state = '{DeliveryState.SENDING}'"
            ).rowcount
            uncertain = db.execute(
                f"UPDATE delivery_files SET state = '{FileState.PENDING}', uncertain = 1 WHERE state = '{FileState.INFLIGHT}'"
            ).rowcount
        return {"studies": studies, "deliveries": deliveries, "uncertain_files": uncertain}

    def purgeable(self, now: float, grace: float) -> tuple[list[StoredInstance], list[tuple[int, str]]]:
        """What retention may delete now: images of studies whose results were all
        delivered ``grace`` seconds ago (and that are not being re-analysed), and the
        results folders of those deliveries.

        Returns
        -------
        instances, folders
        """
        done = [
            r["study_uid"]
            for r in self._read(
                f"SELECT s.study_uid FROM studies s WHERE s.state IN ('{StudyState.ANALYSED}', '{StudyState.IGNORED}') AND s.pending = 0 "
                f"AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.study_uid = s.study_uid AND d.state != '{DeliveryState.SENT}') "
                "AND COALESCE((SELECT MAX(sent) FROM deliveries d WHERE d.study_uid = s.study_uid), s.updated) <= ?",
                (now - grace,),
            )
        ]
        instances: list[StoredInstance] = []
        folders: list[tuple[int, str]] = []
        for uid in done:
            instances += [
                instance_of(r)
                for r in self._read(
                    f"SELECT * FROM instances WHERE study_uid = ? AND state IN ('{InstanceState.STORED}', '{InstanceState.SUPERSEDED}')",
                    (uid,),
                )
            ]
            folders += [
                (r["id"], r["folder"])
                for r in self._read(
                    "SELECT id, folder FROM deliveries WHERE study_uid = ? AND folder IS NOT NULL AND destination != 'outbox'",
                    (uid,),
                )
            ]
        return instances, folders

    def purged(self, file_ids: Sequence[str], deliveries: Sequence[int]) -> None:
        """Record that files and results folders were deleted."""
        with self._tx() as db:
            db.executemany(
                f"UPDATE instances SET state = '{InstanceState.PURGED}' WHERE file_id = ?",
                [(f,) for f in file_ids],
            )
            db.executemany("DELETE FROM headers WHERE file_id = ?", [(f,) for f in file_ids])
            db.executemany("UPDATE deliveries SET folder = NULL WHERE id = ?", [(d,) for d in deliveries])

    def expire(self, before: float) -> int:
        """Delete the records of studies untouched since ``before`` whose files are all gone."""
        with self._tx() as db:
            rows = list(
                db.execute(
                    f"SELECT study_uid FROM studies s WHERE s.updated < ? AND s.state IN ('{StudyState.ANALYSED}', '{StudyState.IGNORED}', '{StudyState.FAILED}') "
                    "AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.study_uid = s.study_uid "
                    f"AND i.state IN ('{InstanceState.STORED}', '{InstanceState.SUPERSEDED}')) "
                    f"AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.study_uid = s.study_uid AND d.state != '{DeliveryState.SENT}')",
                    (before,),
                )
            )
            for r in rows:
                uid = r["study_uid"]
                db.execute(
                    "DELETE FROM headers WHERE file_id IN (SELECT file_id FROM instances WHERE study_uid = ?)",
                    (uid,),
                )
                for table in ("records", "versions", "instances", "studies"):
                    db.execute(f"DELETE FROM {table} WHERE study_uid = ?", (uid,))
                ids = [d["id"] for d in db.execute("SELECT id FROM deliveries WHERE study_uid = ?", (uid,))]
                for d in ids:
                    db.execute("DELETE FROM delivery_files WHERE delivery = ?", (d,))
                db.execute("DELETE FROM deliveries WHERE study_uid = ?", (uid,))
            return len(rows)

    # -- status

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """Counts for ``chexdcm status`` and the metrics endpoint."""
        ts = time.time() if now is None else now
        studies = {
            r["state"]: r["n"] for r in self._read("SELECT state, COUNT(*) AS n FROM studies GROUP BY state")
        }
        deliveries = {
            r["state"]: r["n"]
            for r in self._read("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")
        }
        instances = {
            r["state"]: (r["n"], r["bytes"])
            for r in self._read(
                "SELECT state, COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM instances GROUP BY state"
            )
        }
        kinds = {
            r["kind"]: r["n"] for r in self._read("SELECT kind, COUNT(*) AS n FROM instances GROUP BY kind")
        }
        recent = self._read(
            "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM instances WHERE received >= ?", (ts - 60,)
        )
        turnaround = [
            r["t"]
            for r in self._read(
                f"SELECT sent - last_ack AS t FROM deliveries WHERE state = '{DeliveryState.SENT}' AND sent IS NOT NULL ORDER BY id DESC LIMIT 1000"
            )
        ]
        return {
            "studies": studies,
            "deliveries": deliveries,
            "instances": {k: {"count": v[0], "bytes": v[1]} for k, v in instances.items()},
            "kinds": kinds,
            "received_last_minute": {"count": recent[0]["n"], "bytes": recent[0]["b"]},
            "analysed_versions": self._read("SELECT COUNT(*) AS n FROM versions")[0]["n"],
            "turnaround_s": turnaround,
            "counters": self.counters(),
            "queue": {
                "studies_waiting": studies.get(StudyState.RECEIVING, 0)
                + studies.get(StudyState.READY, 0)
                + studies.get(StudyState.ANALYSING, 0),
                "deliveries_waiting": deliveries.get(DeliveryState.PENDING, 0)
                + deliveries.get(DeliveryState.SENDING, 0),
            },
        }
