"""``--pseudonymize`` (keyed hashes, shifted dates, refusals) and ``--write-dicom`` (SR + SC per study)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from pathlib import Path

import pytest
from pydicom import dcmread

from chexnet_dicom.batch.pseudonym import KEY_ENV
from chexnet_dicom.errors import EXIT_INCOMPLETE, EXIT_USAGE
from chexnet_dicom.testing.export import Export
from tests.helpers.batch import predictions_by_sop, read_table, run_batch_cli

KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def plain(export: Export, card: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain")
    assert run_batch_cli(export.root, out, card, "--write-dicom") == EXIT_INCOMPLETE
    return out


def test_pseudonymize_refuses_without_a_key_and_with_dicom_results(
    export: Export,
    card: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert run_batch_cli(export.root, tmp_path / "a", card, "--pseudonymize") == EXIT_USAGE
    assert KEY_ENV in capsys.readouterr().err
    assert not (tmp_path / "a" / "predictions.csv").exists()
    monkeypatch.setenv(KEY_ENV, KEY)
    for extra in (("--write-dicom",), ("--send", "PACS@127.0.0.1:11112")):
        assert run_batch_cli(export.root, tmp_path / "b", card, "--pseudonymize", *extra) == EXIT_USAGE
        assert "must link to the real study" in capsys.readouterr().err
    short = tmp_path / "short.key"
    short.write_text("too short")
    assert (
        run_batch_cli(export.root, tmp_path / "c", card, "--pseudonymize", "--pseudonym-key-file", str(short))
        == 2
    )
    assert "at least 16 bytes" in capsys.readouterr().err


def test_pseudonymized_tables(export: Export, card: Path, plain: Path, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    out = tmp_path / "pseudo"
    assert (
        run_batch_cli(export.root, out, card, "--pseudonymize", "--pseudonym-key-file", str(key))
        == EXIT_INCOMPLETE
    )
    raw = {r["sop_uid"]: r for r in read_table(plain, "predictions")}
    rows = read_table(out, "predictions")
    assert len(rows) == len(raw)
    text = "".join((out / f"{t}.csv").read_text() for t in ("predictions", "studies", "files", "errors"))
    for r in raw.values():  # no identifier, path or real date of the plain run is left
        for col in ("study_uid", "series_uid", "sop_uid", "path", "patient_id", "accession"):
            assert not r[col] or r[col] not in text, col
    assert "PAT00" not in text and "1.2.826.0.1.3680043.8.498" not in text and "2019/" not in text
    # the same pseudonyms in every table: predictions join studies, files
    studies = {r["study_uid"] for r in read_table(out, "studies")}
    assert {r["study_uid"] for r in rows} <= studies
    assert {r["sop_uid"] for r in rows} <= {r["sop_uid"] for r in read_table(out, "files")}
    # probabilities, age and sex kept; dates shifted by one offset per patient
    by_probs = {tuple(v): sop for sop, v in predictions_by_sop(plain).items()}
    shifts: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        probs = tuple(float(r[k]) for k in r if k.startswith("prob_"))
        src = raw[by_probs[probs]]
        assert (r["patient_sex"], r["patient_age"], r["view"]) == (
            src["patient_sex"],
            src["patient_age"],
            src["view"],
        )
        d0 = date(int(src["study_date"][:4]), int(src["study_date"][4:6]), int(src["study_date"][6:8]))
        d1 = date(int(r["study_date"][:4]), int(r["study_date"][4:6]), int(r["study_date"][6:8]))
        assert 1 <= (d0 - d1).days <= 1825
        shifts[r["patient_id"]].add((d0 - d1).days)
    assert all(len(s) == 1 for s in shifts.values()) and len(shifts) > 1
    assert len({next(iter(s)) for s in shifts.values()}) > 1  # patients move by different offsets


def test_write_dicom_gives_each_study_its_sr_and_each_analysed_image_an_sc(
    export: Export, plain: Path
) -> None:
    found: dict[str, list[str]] = defaultdict(list)
    for path in (plain / "dicom").rglob("*.dcm"):
        ds = dcmread(path, stop_before_pixels=True)
        found[str(ds.StudyInstanceUID)].append(ds.SOPClassUID.name)
    # as infer: a study not analysed gets an SR that says why, and no SC
    assert set(found) == set(export.studies)
    preds = read_table(plain, "predictions")
    for uid, classes in found.items():
        n_images = sum(1 for r in preds if r["study_uid"] == uid)
        assert n_images == (2 if uid.endswith(".3") else int(export.studies[uid] == "analysed"))
        want = ["Comprehensive 3D SR Storage"] + ["Secondary Capture Image Storage"] * n_images
        assert sorted(classes) == sorted(want), (uid, classes)


def test_the_shipped_batch_config_runs(export: Export, card: Path, tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[2] / "pipelines" / "batch.toml"
    out = tmp_path / "run"
    assert run_batch_cli(export.root, out, card, "--config", str(config)) == EXIT_INCOMPLETE
    assert len(read_table(out, "predictions")) == sum(s == "analysed" for s, _ in export.expected.values())
