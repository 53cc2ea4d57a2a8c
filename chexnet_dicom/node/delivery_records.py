"""The delivery half of the node ledger: each analysis's results and where they go, file by file.

A delivery is ``pending -> sending -> sent`` (or ``dead`` after its last attempt); each of
its files ``pending -> inflight -> sent``.  The sender marks a file ``inflight`` just
before handing it to the transport and ``sent`` as soon as its answer arrives (a C-STORE
response, or the per-instance result of its STOW-RS response), each a durable commit
made before the next file is sent: after a crash at most the one file in flight is sent
again, flagged ``uncertain``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chexnet_dicom.node.ledger_store import LedgerStore
from chexnet_dicom.node.states import DeliveryState, FileState

__all__ = ["DeliveryRecords", "QueuedDelivery"]


@dataclass(frozen=True)
class QueuedDelivery:
    """A delivery a sender took from the queue.

    Attributes
    ----------
    id, study_uid, version
        Which analysis's results.
    folder
        Its results folder (relative to the spool).
    pending
        File names not yet sent, in sending order.
    attempts
        Attempts made before this one.
    """

    id: int
    study_uid: str
    version: int
    folder: str
    pending: tuple[str, ...]
    attempts: int


class DeliveryRecords(LedgerStore):
    """The delivery queue and its per-file records (see the module docstring)."""

    def claim_delivery(self, now: float | None = None) -> QueuedDelivery | None:
        """Take the next due delivery (``pending`` and its retry time reached)."""
        ts = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute(
                f"SELECT * FROM deliveries WHERE state = '{DeliveryState.PENDING}' AND next_at <= ? ORDER BY next_at, id LIMIT 1",
                (ts,),
            ).fetchone()
            if row is None:
                return None
            db.execute(f"UPDATE deliveries SET state = '{DeliveryState.SENDING}' WHERE id = ?", (row["id"],))
            names = tuple(
                r["name"]
                for r in db.execute(
                    f"SELECT name FROM delivery_files WHERE delivery = ? AND state != '{FileState.SENT}' ORDER BY name",
                    (row["id"],),
                )
            )
        return QueuedDelivery(
            row["id"], row["study_uid"], row["version"], row["folder"], names, row["attempts"]
        )

    def next_delivery_at(self) -> float | None:
        """When the next pending delivery is due."""
        rows = self._read(f"SELECT MIN(next_at) AS t FROM deliveries WHERE state = '{DeliveryState.PENDING}'")
        return rows[0]["t"]

    def file_inflight(self, delivery: int, name: str) -> None:
        """A file is about to be handed to the transport (committed before it is).

        The sender marks one file at a time (C-STORE, and STOW-RS with one request per
        file), so after a crash at most that one is found ``inflight`` (and becomes
        ``uncertain``).
        """
        with self._tx() as db:
            db.execute(
                f"UPDATE delivery_files SET state = '{FileState.INFLIGHT}', sends = sends + 1 WHERE delivery = ? AND name = ?",
                (delivery, name),
            )

    def file_sent(self, delivery: int, name: str) -> None:
        """The destination confirmed a file (committed, fsynced, before the next file is sent)."""
        with self._tx() as db:
            db.execute(
                f"UPDATE delivery_files SET state = '{FileState.SENT}' WHERE delivery = ? AND name = ?",
                (delivery, name),
            )

    def file_refused(self, delivery: int, name: str) -> None:
        """The destination answered a file with a failure: ``pending`` again, not uncertain."""
        with self._tx() as db:
            db.execute(
                f"UPDATE delivery_files SET state = '{FileState.PENDING}' WHERE delivery = ? AND name = ? AND state = '{FileState.INFLIGHT}'",
                (delivery, name),
            )

    def delivered(self, delivery: int) -> None:
        """Every file of a delivery is at its destination."""
        with self._tx() as db:
            db.execute(
                f"UPDATE deliveries SET state = '{DeliveryState.SENT}', sent = ?, last_error = NULL WHERE id = ?",
                (time.time(), delivery),
            )
            db.execute(
                "INSERT INTO counters VALUES ('delivered', 1) ON CONFLICT(name) DO UPDATE SET value = value + 1"
            )

    def delivery_failed(self, delivery: int, error: str, retry_at: float | None) -> None:
        """An attempt failed: retry at ``retry_at``, or dead-letter the delivery (None)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                f"UPDATE delivery_files SET state = '{FileState.PENDING}', uncertain = 1 WHERE delivery = ? AND state = '{FileState.INFLIGHT}'",
                (delivery,),
            )
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, state = ?, next_at = ? WHERE id = ?",
                (
                    error,
                    DeliveryState.PENDING if retry_at is not None else DeliveryState.DEAD,
                    retry_at if retry_at is not None else now,
                    delivery,
                ),
            )
            kind = "delivery-retry" if retry_at is not None else "dead-letter"
            db.execute(
                "INSERT INTO events (ts, kind, message) VALUES (?, ?, ?)",
                (now, kind, f"delivery {delivery}: {error}"),
            )
            if retry_at is None:
                db.execute(
                    "INSERT INTO counters VALUES ('dead_letters', 1) ON CONFLICT(name) DO UPDATE SET value = value + 1"
                )

    def deliveries(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every delivery (in one state) with its files' counts."""
        sql = (
            "SELECT d.*, (SELECT COUNT(*) FROM delivery_files f WHERE f.delivery = d.id) AS files, "
            "(SELECT COALESCE(SUM(sends), 0) FROM delivery_files f WHERE f.delivery = d.id) AS sends, "
            "(SELECT COALESCE(SUM(uncertain), 0) FROM delivery_files f WHERE f.delivery = d.id) AS uncertain "
            "FROM deliveries d"
        )
        rows = self._read(
            sql + (" WHERE d.state = ? ORDER BY d.id" if state else " ORDER BY d.id"),
            (state,) if state else (),
        )
        return [dict(r) for r in rows]

    def delivery_files(self, delivery: int) -> list[dict[str, Any]]:
        """The files of one delivery."""
        return [
            dict(r)
            for r in self._read("SELECT * FROM delivery_files WHERE delivery = ? ORDER BY name", (delivery,))
        ]

    def resend(self, ids: Sequence[int] | None = None) -> int:
        """Put dead letters back in the queue (all, or those ``ids``); returns how many."""
        with self._tx() as db:
            where = f"state = '{DeliveryState.DEAD}'" + (
                f" AND id IN ({','.join('?' * len(ids))})" if ids else ""
            )
            cur = db.execute(
                f"UPDATE deliveries SET state = '{DeliveryState.PENDING}', attempts = 0, next_at = ? WHERE {where}",
                (time.time(), *(ids or ())),
            )
            return int(cur.rowcount)

    def purge_dead(self, ids: Sequence[int] | None = None) -> list[str]:
        """Delete dead letters (all, or those ``ids``); returns their results folders."""
        with self._tx() as db:
            where = f"state = '{DeliveryState.DEAD}'" + (
                f" AND id IN ({','.join('?' * len(ids))})" if ids else ""
            )
            rows = list(db.execute(f"SELECT id, folder FROM deliveries WHERE {where}", tuple(ids or ())))
            for r in rows:
                db.execute("DELETE FROM delivery_files WHERE delivery = ?", (r["id"],))
                db.execute("DELETE FROM deliveries WHERE id = ?", (r["id"],))
            return [r["folder"] for r in rows if r["folder"]]
