"""Resume after ``kill -9`` (at injected points and by a timer), refusals, and shards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from chexnet_dicom.errors import EXIT_INCOMPLETE, EXIT_USAGE
from chexnet_dicom.faults import ENV as FAULT_ENV
from chexnet_dicom.testing.export import Export, make_export
from tests.helpers.batch import (
    assert_same_tables,
    kill_group,
    ledger_studies,
    read_table,
    run_batch_cli,
    run_batch_process,
    start_batch_process,
)
from tests.helpers.bundles import make_bundle

#: One-image studies added to the synthetic export, so that a run lasts long enough to be killed.
EXTRA = 30


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    return make_export(tmp_path_factory.mktemp("pacs") / "export", extra_studies=EXTRA)


@pytest.fixture(scope="module")
def full(export: Export, card: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run."""
    folder = tmp_path_factory.mktemp("full")
    assert run_batch_cli(export.root, folder, card) == EXIT_INCOMPLETE
    return folder


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _resume_and_check(export: Export, card: Path, out: Path, full: Path, *extra: str) -> dict:
    """Run again with the same arguments: finished studies are not recomputed, tables equal ``full``."""
    finished = ledger_studies(out)
    assert run_batch_cli(export.root, out, card, *extra) == EXIT_INCOMPLETE
    summary = _summary(out)
    planned = len(export.studies)
    assert summary["studies_planned"] == planned
    assert summary["studies_resumed"] == finished
    assert summary["studies_analysed"] == planned - finished
    assert_same_tables(out, full)
    return summary


@pytest.mark.parametrize(
    ("point", "finished"),
    [
        ("batch.discover:7", 0),  # half-way through the header index
        ("batch.predict:1", 0),  # the first study predicted, nothing recorded
        ("batch.predict:5", 4),
        ("batch.commit:1", 1),
        ("batch.commit:17", 17),
        ("batch.export:2", 11 + EXTRA),  # every study recorded, one table written
    ],
)
def test_kill_at_an_injected_point_then_resume(
    point: str, finished: int, export: Export, card: Path, full: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = run_batch_process(export.root, out, card, env={FAULT_ENV: point})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert ledger_studies(out) == finished
    summary = _resume_and_check(export, card, out, full)
    assert summary["studies_resumed"] == finished


def test_kill_with_write_dicom_between_writing_and_recording(
    export: Export, card: Path, tmp_path: Path
) -> None:
    ref = tmp_path / "ref"
    assert run_batch_cli(export.root, ref, card, "--write-dicom") == EXIT_INCOMPLETE
    out = tmp_path / "run"
    proc = run_batch_process(export.root, out, card, "--write-dicom", env={FAULT_ENV: "batch.write:3"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert ledger_studies(out) == 2  # the third study's files are written, its rows are not
    _resume_and_check(export, card, out, ref, "--write-dicom")
    # the third study was written twice (deterministic UIDs): the same files, once each
    got = sorted(p.relative_to(out / "dicom") for p in (out / "dicom").rglob("*") if p.is_file())
    want = sorted(p.relative_to(ref / "dicom") for p in (ref / "dicom").rglob("*") if p.is_file())
    assert got == want and got
    assert not [p for p in got if p.name.endswith(".part")]


def test_kill_by_a_timer_then_resume(export: Export, card: Path, full: Path, tmp_path: Path) -> None:
    """``kill -9`` of the run's main process as soon as the ledger has recorded some studies."""
    for n, after in enumerate((1, 12)):
        out = tmp_path / f"run{n}"
        proc = start_batch_process(export.root, out, card, "--workers", "2")
        try:
            deadline = time.monotonic() + 120
            while ledger_studies(out) < after and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            os.kill(proc.pid, signal.SIGKILL)  # the main process only, as a user's kill -9 would
            proc.wait(timeout=30)
            # its decode workers notice and exit: the pipes they share close
            proc.communicate(timeout=15)
        finally:
            kill_group(proc)
        assert proc.returncode == -9, "the run ended before the timer killed it"
        finished = ledger_studies(out)
        assert after <= finished < len(export.studies)
        _resume_and_check(export, card, out, full, "--workers", "2")


def test_a_resume_with_other_weights_or_options_is_refused(
    export: Export, card: Path, full: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(full, out)
    other = make_bundle(tmp_path / "other", seed=1)
    capsys.readouterr()
    assert run_batch_cli(export.root, out, other) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "resume refused" in err and "weights_sha256" in err
    assert "write_dicom" not in err
    assert run_batch_cli(export.root, out, card, "--write-dicom") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "resume refused" in err and "write_dicom (False before, True now)" in err
    assert "weights_sha256" not in err
    assert run_batch_cli(export.root, out, card, "--shard", "1/2") == EXIT_USAGE
    assert "shard ('1/1' before, '1/2' now)" in capsys.readouterr().err
    # batch size and decode workers only change rounding: not refused, nothing recomputed
    assert run_batch_cli(export.root, out, card, "--batch-size", "3", "--workers", "2") == EXIT_INCOMPLETE
    assert _summary(out)["studies_analysed"] == 0
    assert_same_tables(out, full)


#: The documented merge of shard runs (README, "Shards"): the CSV tables concatenated, one header.
MERGE_CSV = "awk 'FNR > 1 || NR == 1' {parts} > {dest}"


def test_the_union_of_the_shards_is_the_full_run(
    export: Export, card: Path, full: Path, tmp_path: Path
) -> None:
    n = 3
    outs = [tmp_path / f"shard{i}" for i in range(1, n + 1)]
    for i, out in enumerate(outs, 1):
        run_batch_cli(export.root, out, card, "--shard", f"{i}/{n}")
        assert _summary(out)["studies_planned"] > 0
    merged = tmp_path / "merged"
    merged.mkdir()
    for name in ("predictions", "studies", "files", "errors"):
        parts = " ".join(str(o / f"{name}.csv") for o in outs)
        subprocess.run(MERGE_CSV.format(parts=parts, dest=merged / f"{name}.csv"), shell=True, check=True)
    assert_same_tables(merged, full, tol=0.0)
    # each study is in exactly one shard
    seen = [r["study_uid"] for o in outs for r in read_table(o, "studies")]
    assert len(seen) == len(set(seen)) == len(export.studies)
    # the Parquet tables concatenate the same way (pyarrow.concat_tables)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(o / "predictions.parquet") for o in outs])
    assert sorted(table.column("sop_uid").to_pylist()) == sorted(
        r["sop_uid"] for r in read_table(full, "predictions")
    )
