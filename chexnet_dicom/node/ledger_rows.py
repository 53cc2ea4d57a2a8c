"""What the node ledger's queries take and give: received copies, their headers, claimed studies.

Plain frozen records (no connection, no pydicom): they cross from the ledger to the
listener, the worker and ``chexdcm status``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

__all__ = [
    "CONFLICT",
    "DUPLICATE",
    "NEW",
    "Claimed",
    "NewInstance",
    "StoredHeader",
    "StoredInstance",
    "instance_of",
]

#: :meth:`NodeLedger.record_instance` outcomes.
NEW = "new"
DUPLICATE = "duplicate"
CONFLICT = "conflict"


@dataclass(frozen=True)
class StoredHeader:
    """A received file's header bytes, as the listener read them, and where its pixel data starts.

    The worker parses these bytes (:func:`~chexnet_dicom.dicom.read.header_from_raw`)
    instead of reading the file's header again; the file's size and ``mtime_ns`` let the
    pixel read notice a file that changed since.

    Attributes
    ----------
    data
        The file's bytes up to its pixel data.
    offset, mtime_ns, implicit, little
        As in :class:`~chexnet_dicom.dicom.read.PixelLocation` (the size is the instance's).
    """

    data: bytes = field(repr=False)
    offset: int
    mtime_ns: int
    implicit: bool
    little: bool


@dataclass(frozen=True)
class NewInstance:
    """A received copy to record (:meth:`NodeLedger.record_instance`).

    Attributes
    ----------
    file_id, path
        Its spool file (path relative to the spool; ``""`` for a dropped one).
    sop_uid, study_uid, series_uid, sop_class_uid, sha256, size
        What it is.
    kind
        ``image``, ``out_of_scope`` or ``own_output``.
    reason
        The gate's reason for an out-of-scope instance.
    calling_ae
        Who sent it (``""`` for an adopted file).
    adopted
        Found on disk without a row at restart.
    header
        Its header bytes, when the listener kept them (None: the worker reads the file).
    """

    file_id: str
    path: str
    sop_uid: str
    study_uid: str
    series_uid: str
    sop_class_uid: str
    sha256: str
    size: int
    kind: str
    reason: str | None
    calling_ae: str
    adopted: bool = False
    header: StoredHeader | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StoredInstance:
    """A received copy as the ledger knows it.

    Attributes
    ----------
    file_id, path
        Its spool file (path relative to the spool).
    sop_uid, study_uid, series_uid, sop_class_uid
        Its identifiers.
    kind, reason, state
        See the module docstring.
    received
        When its row was committed (just before its success status was sent).
    size
        Its size in bytes.
    header
        Its header bytes as the listener read them (given by :meth:`NodeLedger.claim`
        only; None otherwise, or when the listener did not keep them).
    """

    file_id: str
    path: str
    sop_uid: str
    study_uid: str
    series_uid: str
    sop_class_uid: str
    kind: str
    reason: str | None
    state: str
    received: float
    size: int = 0
    header: StoredHeader | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Claimed:
    """A study a worker took: what to analyse and what earlier versions left.

    Attributes
    ----------
    study_uid
        The study.
    version
        The version this analysis makes (1 for the first).
    instances
        Its current copies (``stored`` state, ``image`` and ``out_of_scope`` kinds).
    records
        ``sop_uid -> (file_id, record bytes)`` from earlier versions.
    previous_sr
        ``(sr_uid, series_uid, sop_class_uid)`` of the latest earlier version with an SR.
    last_ack
        When the newest of its instances was acknowledged.
    """

    study_uid: str
    version: int
    instances: tuple[StoredInstance, ...]
    records: dict[str, tuple[str, bytes]]
    previous_sr: tuple[str, str, str] | None
    last_ack: float


def instance_of(row: sqlite3.Row) -> StoredInstance:
    """A row of ``instances`` (joined with its ``headers`` row as ``h_data`` ..., if any)."""
    header = None
    if "h_data" in row.keys() and row["h_data"] is not None:  # noqa: SIM118 (a Row's "in" tests values)
        header = StoredHeader(
            bytes(row["h_data"]),
            row["px_offset"],
            row["mtime_ns"],
            bool(row["implicit"]),
            bool(row["little"]),
        )
    return StoredInstance(
        row["file_id"],
        row["path"],
        row["sop_uid"],
        row["study_uid"],
        row["series_uid"],
        row["sop_class_uid"],
        row["kind"],
        row["reason"],
        row["state"],
        row["received"],
        row["size"],
        header,
    )
