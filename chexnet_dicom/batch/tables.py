"""Writing the result tables from the ledger and the index (streamed, atomic).

``predictions.parquet`` (pyarrow) and ``predictions.csv``, ``studies.csv``,
``files.csv`` and ``errors.csv`` are written at the end of every run, complete, from
what the ledger and the index hold: each through :func:`~chexnet_dicom.atomic.atomic_write`,
so a reader (or a run killed while writing them) sees the previous table or the new
one, never a part.  Rows are streamed; Parquet is written in row groups, so memory does
not grow with the export.  Column order and types: :mod:`chexnet_dicom.batch.schema`.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.batch.index import FOUND_BY_DICOMDIR, FOUND_BY_WALK, FileKind, HeaderIndex, HeaderStatus
from chexnet_dicom.batch.ledger import RunLedger
from chexnet_dicom.batch.pseudonym import Pseudonymizer
from chexnet_dicom.batch.schema import ERRORS, FILES, PREDICTIONS, STUDIES, Column, FileStatus
from chexnet_dicom.batch.studies import Shard, in_shard
from chexnet_dicom.dicom.reasons import NOT_DICOM
from chexnet_dicom.faults import fault

__all__ = ["file_rows", "read_csv_rows", "write_tables"]

_ROW_GROUP = 4096


def _found_by(bits: int) -> str:
    return {FOUND_BY_WALK: "walk", FOUND_BY_DICOMDIR: "dicomdir"}.get(bits, "walk+dicomdir")


def file_rows(index: HeaderIndex, ledger: RunLedger, shard: Shard) -> Iterator[dict[str, Any]]:
    """One ``files`` row per file of the shard, in path order, with its status.

    A file of a study has the outcome the ledger recorded (``pending`` while its study
    is not finished); a file that belongs to no study has the index's: ``not_dicom``,
    ``index`` (a DICOMDIR), ``failed`` (status ``error``) or ``skipped``.
    """
    for (
        path,
        size,
        kind,
        status,
        reason,
        message,
        found_by,
        study,
        sop,
        dup,
        modality,
        view,
        part,
        ts,
    ) in index.table_rows():
        if not in_shard(str(study if kind == FileKind.INSTANCE else path), shard):
            continue
        if kind == FileKind.INSTANCE:
            outcome = ledger.outcome(str(path)) or (FileStatus.PENDING, "", "its study is not analysed yet")
            status, reason, message = outcome
        elif kind == FileKind.INDEX:
            status = FileStatus.INDEX
        elif reason == NOT_DICOM:
            status = FileStatus.NOT_DICOM
        else:
            status = FileStatus.FAILED if status == HeaderStatus.ERROR else FileStatus.SKIPPED
        yield {
            "path": path, "size": size, "status": status, "reason": reason, "message": message,
            "found_by": _found_by(int(found_by)), "study_uid": study, "sop_uid": sop, "duplicate_of": dup,
            "modality": modality.upper(), "view": view.upper(), "body_part": part.upper(), "transfer_syntax": ts,
        }  # fmt: skip


def _unassigned_errors(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for r in rows:
        if r["status"] == FileStatus.FAILED and not r["study_uid"]:
            yield {
                "path": r["path"],
                "study_uid": "",
                "stage": "scan",
                "reason": r["reason"],
                "message": r["message"],
            }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _write_csv(path: Path, columns: tuple[Column, ...], rows: Iterable[dict[str, Any]]) -> int:
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow([c.name for c in columns])
            for row in rows:
                w.writerow([_cell(row.get(c.name)) for c in columns])
                count += 1

    atomic_write(path, write)
    return count


def _arrow_schema(columns: tuple[Column, ...]) -> Any:
    import pyarrow as pa

    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    return pa.schema([pa.field(c.name, types[c.type]) for c in columns])


def _write_parquet(path: Path, columns: tuple[Column, ...], rows: Iterable[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema(columns)

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            chunk: list[dict[str, Any]] = []
            for row in rows:
                chunk.append({c.name: row.get(c.name) for c in columns})
                if len(chunk) >= _ROW_GROUP:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                    chunk = []
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))

    atomic_write(path, write)


def write_tables(
    out: Path, index: HeaderIndex, ledger: RunLedger, shard: Shard, pseudonymizer: Pseudonymizer | None = None
) -> dict[str, Any]:
    """Write the five tables into ``out``; return the counts of the summary.

    Returns
    -------
    dict
        ``files`` (per status), ``studies`` (per status), ``predictions`` and ``errors``
        row counts.
    """

    def cover(columns: tuple[Column, ...], rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for row in rows:
            yield pseudonymizer.row(columns, row) if pseudonymizer is not None else row

    _write_parquet(out / "predictions.parquet", PREDICTIONS, cover(PREDICTIONS, ledger.predictions()))
    fault("batch.export")
    n_pred = _write_csv(out / "predictions.csv", PREDICTIONS, cover(PREDICTIONS, ledger.predictions()))
    study_status: Counter[str] = Counter()

    def counted_studies() -> Iterator[dict[str, Any]]:
        for row in ledger.studies():
            study_status[row["status"]] += 1
            yield row

    _write_csv(out / "studies.csv", STUDIES, cover(STUDIES, counted_studies()))
    fault("batch.export")
    file_status: Counter[str] = Counter()
    failed_unassigned: list[dict[str, Any]] = []

    def counted_files() -> Iterator[dict[str, Any]]:
        for row in file_rows(index, ledger, shard):
            file_status[row["status"]] += 1
            failed_unassigned.extend(_unassigned_errors([row]))
            yield row

    _write_csv(out / "files.csv", FILES, cover(FILES, counted_files()))
    n_err = _write_csv(out / "errors.csv", ERRORS, cover(ERRORS, [*failed_unassigned, *ledger.errors()]))
    return {
        "files": dict(sorted(file_status.items())),
        "studies": dict(sorted(study_status.items())),
        "predictions": n_pred,
        "errors": n_err,
    }


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a table this module wrote (for merges and tests)."""
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def dumps(summary: dict[str, Any]) -> str:
    """A summary as indented JSON."""
    return json.dumps(summary, indent=2, sort_keys=True)
