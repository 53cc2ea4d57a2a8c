"""A generated export with every kind of file: each one is accounted for in the tables."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydicom import dcmread

from chexnet_dicom.batch.schema import FILE_STATUSES, FILES, PREDICTIONS, STUDIES, FileStatus
from chexnet_dicom.errors import EXIT_INCOMPLETE, EXIT_OK
from chexnet_dicom.testing import synth
from chexnet_dicom.testing.export import Export
from tests.helpers.batch import read_table, run_batch_cli


@pytest.fixture(scope="module")
def out(export: Export, card: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    assert run_batch_cli(export.root, folder, card) == EXIT_INCOMPLETE  # a corrupt file is a failed file
    return folder


def test_every_file_has_its_expected_status(export: Export, out: Path) -> None:
    files = read_table(out, "files")
    got = {r["path"]: (r["status"], r["reason"]) for r in files}
    assert got == export.expected
    counts = Counter(r["status"] for r in files)
    assert set(counts) <= set(FILE_STATUSES)
    skipped = counts["skipped"] + counts["duplicate"] + counts["index"]
    assert counts["analysed"] + skipped + counts["failed"] + counts["not_dicom"] == len(export.expected)
    # every category of a finished run occurs; none is pending (that is a stopped run's)
    assert counts[FileStatus.PENDING] == 0
    assert all(counts[s] for s in FILE_STATUSES if s != FileStatus.PENDING), counts


def test_without_a_drift_reference_shift_json_says_why(out: Path) -> None:
    shift = json.loads((out / "shift.json").read_text())
    assert shift["status"] == "no_reference" and "drift reference" in shift["reason"]
    assert shift["analysed_images"] == len(read_table(out, "predictions"))
    md = (out / "shift.md").read_text()
    assert "## Cohort shift against the model's reference" in md and shift["reason"] in md


def test_the_dicomdir_files_are_counted_once_and_the_outside_file_never_read(
    export: Export, out: Path
) -> None:
    files = {r["path"]: r for r in read_table(out, "files")}
    cd = [r for p, r in files.items() if p.startswith("cd/PT")]
    assert {r["found_by"] for r in cd if r["status"] == "analysed"} == {"walk+dicomdir"}
    assert files["cd/PT000003/ST000000/SE000000/IM000000"]["found_by"] == "dicomdir"
    assert export.outside is not None and export.outside.is_file()
    outside_sop = str(dcmread(export.outside, stop_before_pixels=True).SOPInstanceUID)
    sops = {r["sop_uid"] for r in read_table(out, "predictions")} | {r["sop_uid"] for r in files.values()}
    assert outside_sop not in sops


def test_studies_and_predictions(export: Export, out: Path) -> None:
    studies = {r["study_uid"]: r for r in read_table(out, "studies")}
    assert {u: r["status"] for u, r in studies.items()} == export.studies
    assert studies["1.2.826.0.1.3680043.8.498.77.9"]["reason"] == "CORRUPT_PIXELS"
    assert studies["1.2.826.0.1.3680043.8.498.77.7"]["reason"] == "BODY_PART"
    preds = read_table(out, "predictions")
    analysed = [p for p, (s, _) in export.expected.items() if s == "analysed"]
    assert sorted(r["path"] for r in preds) == sorted(analysed)
    assert list(preds[0]) == [c.name for c in PREDICTIONS]
    assert list(read_table(out, "studies")[0]) == [c.name for c in STUDIES]
    assert list(read_table(out, "files")[0]) == [c.name for c in FILES]
    table = pq.read_table(out / "predictions.parquet")
    assert table.num_rows == len(preds)
    assert table.column("sop_uid").to_pylist() == [r["sop_uid"] for r in preds]
    assert table.column("prob_Effusion").to_pylist() == [float(r["prob_Effusion"]) for r in preds]
    assert {r["decode_path"] for r in preds} >= {"full"} and all(r["decode_path"] for r in preds)
    # a two-image study: the study maximum of its images
    two = [r for r in preds if r["study_uid"] == "1.2.826.0.1.3680043.8.498.77.3"]
    assert len(two) == 2
    study = studies["1.2.826.0.1.3680043.8.498.77.3"]
    assert float(study["study_prob_Mass"]) == max(float(r["prob_Mass"]) for r in two)
    errors = {r["path"]: r for r in read_table(out, "errors")}
    assert set(errors) == {p for p, (s, _) in export.expected.items() if s == "failed"}
    assert errors["2021/broken/truncated.dcm"]["stage"] == "decode"


def test_a_grown_export_reads_only_new_and_changed_files(
    export: Export, out: Path, card: Path, tmp_path: Path
) -> None:
    grown = tmp_path / "export"
    shutil.copytree(export.root, grown, symlinks=True)
    run = tmp_path / "run"
    shutil.copytree(out, run)
    # the ledger remembers the export root: a copy is another export, so index it anew first
    shutil.rmtree(run / "state")
    assert run_batch_cli(grown, run, card) == EXIT_INCOMPLETE
    synth.write(synth.make_dataset(synth.chest_phantom(96, seed=40), seed=40), grown / "2022" / "new.dcm")
    changed = grown / "2019/PAT000/IMG0001"
    ds = dcmread(changed)
    ds.SeriesDescription = "edited"
    ds.save_as(changed)
    (grown / "2021/broken/truncated.dcm").unlink()
    (grown / "2021/broken/garbage.dcm").unlink()
    (grown / "cd/DICOMDIR").unlink()
    assert run_batch_cli(grown, run, card) == EXIT_OK  # nothing broken is left
    summary = json.loads((run / "summary.json").read_text())
    d = summary["discovery"]
    assert (d["new"], d["changed"], d["read"]) == (1, 1, 2)
    assert d["removed"] == 3 + 2  # the two broken files, the DICOMDIR and its two refusals
    assert summary["studies_analysed"] == 2  # the new study and the edited one, nothing else
    assert summary["studies_resumed"] == summary["studies_planned"] - 2
