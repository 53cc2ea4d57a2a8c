"""The SQLite layer: transactions roll back and raise StorageError; versions migrate or refuse."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chexnet_dicom.batch.index import FileRecord, HeaderIndex
from chexnet_dicom.batch.ledger import RunLedger
from chexnet_dicom.errors import StorageError
from chexnet_dicom.node.ledger import NodeLedger
from chexnet_dicom.storage import VERSION_KEY, Durability, SQLiteStore

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"


def _store(path: Path, **kw: object) -> SQLiteStore:
    return SQLiteStore(path, SCHEMA, version=3, what="test store", **kw)  # type: ignore[arg-type]


def _meta(path: Path) -> dict[str, str]:
    con = sqlite3.connect(path)
    try:
        return dict(con.execute("SELECT key, value FROM meta"))
    finally:
        con.close()


def test_a_failing_body_rolls_back_and_a_sql_error_becomes_storage_error(tmp_path: Path) -> None:
    store = _store(tmp_path / "s.sqlite")
    with store.transaction() as db:
        db.execute("INSERT INTO t VALUES ('a', 1)")
    with pytest.raises(KeyError), store.transaction() as db:
        db.execute("INSERT INTO t VALUES ('b', 2)")
        raise KeyError("not a storage problem: raised as itself")
    with pytest.raises(StorageError, match="test store could not be written"), store.transaction() as db:
        db.execute("INSERT INTO t VALUES ('c', 3)")
        db.execute("INSERT INTO t VALUES ('a', 4)")  # primary key taken
    assert [tuple(r) for r in store.read("SELECT k, v FROM t ORDER BY k")] == [("a", 1)]
    # the failed transactions left none open: the next one commits
    with store.transaction() as db:
        db.execute("INSERT INTO t VALUES ('d', 5)")
    store.close()
    assert _store(tmp_path / "s.sqlite").one("SELECT COUNT(*) FROM t")[0] == 2  # type: ignore[index]


def test_nested_transactions_join_and_a_checkpoint_commits_the_work_so_far(tmp_path: Path) -> None:
    store = _store(tmp_path / "s.sqlite")
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction() as db:
            db.execute("INSERT INTO t VALUES ('kept', 1)")
        store.checkpoint()
        with store.transaction() as db:
            db.execute("INSERT INTO t VALUES ('lost', 2)")
        raise RuntimeError
    assert [r["k"] for r in store.read("SELECT k FROM t")] == ["kept"]


def test_durability_is_the_pragma(tmp_path: Path) -> None:
    full = _store(tmp_path / "f.sqlite")
    normal = _store(tmp_path / "n.sqlite", durability=Durability.NORMAL)
    # PRAGMA synchronous: 2 = FULL, 1 = NORMAL
    assert full.one("PRAGMA synchronous")[0] == 2  # type: ignore[index]
    assert normal.one("PRAGMA synchronous")[0] == 1  # type: ignore[index]
    with pytest.raises(ValueError):
        _store(tmp_path / "x.sqlite", durability="SOMETIMES")


def test_a_legacy_version_key_is_migrated_and_other_versions_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);" + SCHEMA)
    con.execute("INSERT INTO meta VALUES ('version', '3')")
    con.execute("INSERT INTO t VALUES ('a', 1)")
    con.commit()
    con.close()
    _store(path, legacy_version_keys=("version",)).close()
    assert _meta(path) == {VERSION_KEY: "3"}
    with pytest.raises(StorageError, match="schema version 3, this chexnet-dicom reads version 4"):
        SQLiteStore(path, SCHEMA, version=4, what="test store")
    assert _meta(path) == {VERSION_KEY: "3"}  # a refused open changes nothing


def test_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StorageError, match="damaged or not a database"):
        _store(path)


def _legacy_db(path: Path, schema: str, meta: dict[str, str]) -> None:
    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);" + schema)
    con.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
    con.commit()
    con.close()


def test_databases_written_before_the_layer_still_open(tmp_path: Path) -> None:
    # the node's ledger kept its version under 'schema'
    node = tmp_path / "node.sqlite"
    _legacy_db(node, "", {"schema": "1"})
    NodeLedger(node).close()
    assert _meta(node) == {VERSION_KEY: "1"}
    # the header index under 'version', beside its own keys
    index = tmp_path / "index.sqlite"
    _legacy_db(index, "", {"version": "1", "generation": "4", "root": "/x"})
    HeaderIndex(index).close()
    assert _meta(index) == {VERSION_KEY: "1", "generation": "4", "root": "/x"}
    # the run ledger kept none: stamped, its fingerprint kept
    ledger = tmp_path / "ledger.sqlite"
    _legacy_db(ledger, "", {"fingerprint": "{}"})
    assert RunLedger(ledger).check_fingerprint({}) is True
    assert _meta(ledger) == {VERSION_KEY: "1", "fingerprint": "{}"}
    # a version this code does not know is refused, naming the file
    _legacy_db(tmp_path / "future.sqlite", "", {"schema": "9"})
    with pytest.raises(StorageError, match=r"node ledger .*future\.sqlite has schema version 9"):
        NodeLedger(tmp_path / "future.sqlite")


def test_discovery_chunks_survive_a_failure_after_their_checkpoint(tmp_path: Path) -> None:
    """The header index commits in chunks: a failure loses only the chunk that was open."""
    index = HeaderIndex(tmp_path / "index.sqlite")
    with pytest.raises(OSError, match="the disk went away"), index.transaction():
        index.put(FileRecord("a.dcm", 1, 1, "instance", "accepted", study_uid="1.2"), 1)
        index.checkpoint()
        index.put(FileRecord("b.dcm", 1, 1, "instance", "accepted", study_uid="1.3"), 1)
        raise OSError("the disk went away")
    assert index.count() == 1
    assert [r.path for r in index.study_records("1.2")] == ["a.dcm"]
    assert list(index.study_records("1.3")) == []
    index.close()
