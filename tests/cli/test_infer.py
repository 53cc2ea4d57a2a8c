"""``chexdcm infer``: table, JSON, output folder naming, weight resolution, exit codes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import torch

from chexnet_dicom.cli import main
from chexnet_dicom.model.labels import DISPLAY_NAMES, LABELS
from chexnet_dicom.results import study_ref
from tests.helpers import fixtures
from tests.helpers.studies import (
    STUDY_UID,
    is_expected_outputs,
    overlay_file,
    write_single_image_study,
)

card = fixtures.card
study = fixtures.study


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_table_and_files(card: Path, study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    code = main(["infer", str(study), "--weights", str(card), "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"weights: {card} (--weights {card})" in captured.err
    assert "timings: startup" in captured.err and " predict " in captured.err
    for label in LABELS:
        assert DISPLAY_NAMES[label] in captured.out
    assert "Study max" in captured.out  # two frontal images: the study-level maximum is shown
    assert "VIEW_NOT_FRONTAL" in captured.out and "Research use only" in captured.out
    # every column is labelled, the policy is named, the intended use is on stdout
    assert "Threshold" in captured.out and "Sensitivity (95% CI)" in captured.out
    assert "Specificity (95% CI)" in captured.out and "Intended use:" in captured.out
    assert "-> output folder study-" in captured.out and "study study-" not in captured.out
    names = sorted(p.name for p in out.iterdir())
    assert is_expected_outputs(names)
    sr = pydicom.dcmread(out / "sr.dcm")
    assert sr.StudyInstanceUID == STUDY_UID


def test_json_output_matches_the_sidecar(
    card: Path, study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["infer", str(study), "--weights", str(card), "--out", str(tmp_path), "--json", "--no-sc"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["weights"]["card"] == str(card)
    (st,) = doc["studies"]
    assert st["study"] == study_ref(STUDY_UID)
    assert [Path(s["path"]).name for s in st["skipped"]] == ["b_lateral.dcm"]
    assert [Path(u["path"]).name for u in doc["unassigned"]] == ["notes.txt"]
    sidecar = json.loads((tmp_path / "result.json").read_text())
    for ours, theirs in zip(st["images"], sidecar["images"], strict=True):
        assert ours["probabilities"] == pytest.approx(theirs["probabilities"])
    assert not list(tmp_path.glob("sc-*.dcm"))  # --no-sc
    assert is_expected_outputs(
        [p.name for p in tmp_path.glob("preview-*.png")], ["preview-1-*.png", "preview-2-*.png"]
    )


def test_default_output_folder_is_a_study_reference_never_a_uid(
    card: Path,
    study: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHEXDCM_WEIGHTS", str(card))
    code = main(["infer", str(study), "--no-sc"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"CHEXDCM_WEIGHTS={card}" in captured.err
    (folder,) = (tmp_path / "chexdcm-out").iterdir()
    assert folder.name == study_ref(STUDY_UID)
    assert STUDY_UID not in folder.name and "Synthetic" not in folder.name
    assert (folder / "sr.dcm").is_file()


def test_exit_codes(card: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", str(tmp_path / "missing"), "--weights", str(card)]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no DICOM here")
    assert main(["infer", str(empty), "--weights", str(card), "--out", str(tmp_path / "o")]) == 1
    assert "no DICOM study found" in capsys.readouterr().err
    assert main(["infer", str(empty), "--weights", str(tmp_path / "nope.card.json")]) == 1
    if not torch.cuda.is_available():
        assert main(["infer", str(empty), "--weights", str(card), "--device", "cuda"]) == 2
        assert "cuda" in capsys.readouterr().err
    assert main(["infer", str(empty), "--weights", str(card), "--threads", "0"]) == 2


def test_a_failed_study_does_not_stop_the_others(
    card: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study whose results cannot be built (a private SOP class highdicom knows no IOD for)
    fails alone: the studies around it are written and the exit code says one failed."""
    folder = tmp_path / "in"
    write_single_image_study(folder / "a" / "x.dcm", 301, study_date="20240101")
    write_single_image_study(
        folder / "b" / "x.dcm", 302, study_date="20240102", sop_class_uid="2.25.1234567890123456789"
    )
    write_single_image_study(folder / "c" / "x.dcm", 303, study_date="20240103")
    out = tmp_path / "out"
    code = main(["infer", str(folder), "--weights", str(card), "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err and "Traceback" not in captured.out, captured.err[-3000:]
    assert "FAILED: OUTPUT_FAILED" in captured.out and "1 of 3 studies failed" in captured.err
    assert "2.25.1234567890123456789" not in captured.out + captured.err  # no UID in the message
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 2  # the two good studies, each in its own folder
    for name in written:
        assert (out / name / "sr.dcm").is_file() and overlay_file(out / name, 1).is_file()


def test_the_broken_corpus_writes_what_it_can_without_a_traceback(
    card: Path, shared_dicom: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["infer", str(shared_dicom / "broken"), "--weights", str(card), "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1  # genFile_bad_jpeg's study cannot get an SR (its SOP class is a private UID)
    assert "Traceback" not in captured.err + captured.out
    assert "FAILED: OUTPUT_FAILED" in captured.out
    assert len(list(tmp_path.glob("*/sr.dcm"))) == 3  # the other studies are written
    assert "genFile_bad_jpeg.dcm" in captured.out


def test_config_file_is_read_and_the_command_line_wins(
    card: Path, study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "infer.toml"
    cfg.write_text(
        f'weights = "{card}"\n[runtime]\ndevice = "cpu"\nbatch_size = 1\n[outputs]\nsc = false\n'
        "[ingest.pixels]\nfast_path = false\n"
    )
    assert main(["infer", str(study), "--config", str(cfg), "--out", str(tmp_path / "a")]) == 0
    assert not list((tmp_path / "a").glob("sc-*.dcm"))  # [outputs] sc = false
    assert main(["infer", str(study), "--config", str(cfg), "--out", str(tmp_path / "b"), "--no-sc"]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.toml"
    bad.write_text("[runtime]\nbatch_sise = 4\n")
    assert main(["infer", str(study), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "batch_sise" in err and "[runtime]" in err
    assert main(["infer", str(study), "--pmap"]) == 2  # the option that wrote nothing is gone


def _truncate_pixels(path: Path) -> None:
    """Cut the Pixel Data of a written file to half (status error, CORRUPT_PIXELS)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20000])


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("clean", 0),  # every image analysed
        ("readme_beside", 0),  # a non-DICOM file met while walking the folder
        ("lateral_only_skipped", 0),  # out of scope: skipped, its SR says why
        ("corrupt_pixels_only", 3),  # the only file could not be decoded: SR written, exit 3
        ("corrupt_beside_good", 3),  # one of two images corrupt: results for the other, exit 3
        ("missing_uid", 3),  # a DICOM image that cannot be placed in a study
        ("named_not_dicom", 1),  # STUDY_DIR is itself a non-DICOM file: nothing to analyse
        ("failed_study", 1),  # the outputs could not be built
    ],
)
def test_exit_code_table(
    case: str, expected: int, card: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    target: Path = folder
    if case in ("clean", "readme_beside", "corrupt_beside_good"):
        write_single_image_study(folder / "a.dcm", 401)
    if case == "readme_beside":
        (folder / "README.md").write_text("# not DICOM\n")
    if case == "lateral_only_skipped":
        write_single_image_study(folder / "lat.dcm", 402, view_position="LL", view_code=False)
    if case in ("corrupt_pixels_only", "corrupt_beside_good"):
        # the same study as a.dcm when it is there (seed 401), another image in it
        same = pydicom.dcmread(folder / "a.dcm").StudyInstanceUID if case == "corrupt_beside_good" else None
        bad = write_single_image_study(folder / "b.dcm", 403, study_uid=same)
        _truncate_pixels(bad)
    if case == "missing_uid":
        write_single_image_study(folder / "a.dcm", 404)
        lost = write_single_image_study(folder / "c.dcm", 405)
        ds = pydicom.dcmread(lost)
        del ds.SeriesInstanceUID
        ds.save_as(lost)
    if case == "named_not_dicom":
        folder.mkdir()
        target = folder / "notes.txt"
        target.write_text("no DICOM here")
    if case == "failed_study":
        write_single_image_study(folder / "x.dcm", 406, sop_class_uid="2.25.1234567890123456789")
    out = tmp_path / "out"
    code = main(["infer", str(target), "--weights", str(card), "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == expected, captured.out[-2000:] + captured.err[-2000:]
    assert "Traceback" not in captured.err + captured.out
    if case == "readme_beside":
        assert "not counted against the run" in captured.err
    if expected == 3:
        assert "exit status 3" in captured.err
        assert list(out.rglob("sr.dcm"))  # the results that could be written are there
    if case == "corrupt_beside_good":
        assert "CORRUPT_PIXELS" in captured.out and "1 image analysed" in captured.out
    if case == "lateral_only_skipped":
        assert "VIEW_NOT_FRONTAL" in captured.out and "0 images analysed" in captured.out
    if case == "missing_uid":
        assert "MISSING_UID" in captured.err


def test_a_folder_whose_only_file_has_corrupt_pixels_exits_3(
    card: Path, shared_dicom: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.dcm").write_bytes((shared_dicom / "broken" / "966_broken_codestream.dcm").read_bytes())
    code = main(["infer", str(folder), "--weights", str(card), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 3, captured.err[-2000:]
    assert "0 images analysed, 1 file not analysed" in captured.out and "CORRUPT_PIXELS" in captured.out


def test_the_table_marks_findings_unreliable_at_their_threshold(
    card: Path, study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A finding with validation sensitivity 0 carries the legend's and the SR's "!" mark in the table too."""
    doc = json.loads(card.read_text())
    doc["operating_points"]["Edema"]["sensitivity"] = 0.0
    marked = tmp_path / card.name
    marked.write_text(json.dumps(doc))
    (tmp_path / doc["weights_file"]).symlink_to(card.parent / doc["weights_file"])
    code = main(["infer", str(study), "--weights", str(marked), "--out", str(tmp_path / "o"), "--no-sc"])
    out = capsys.readouterr().out
    assert code == 0
    rows = {
        line.split("  ")[1].strip(): line
        for line in out.splitlines()
        if line.startswith("  ") and " 0." in line
    }
    edema, mass = rows[DISPLAY_NAMES["Edema"]], rows[DISPLAY_NAMES["Mass"]]
    assert re.search(r"(PRESENT|absent) !", edema), edema
    assert not re.search(r"(PRESENT|absent) !", mass), mass
    lines = out.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("  ! unreliable at this threshold")]
    assert lines[at + 1].strip() == "Pulmonary edema: validation sensitivity 0 at its threshold"
    assert not lines[at + 2].startswith("      ")  # the only one
    # the columns stay aligned: the threshold ends where its header does
    header = next(line for line in out.splitlines() if "Threshold" in line)
    assert edema.index(f"{0.3 + 0.02 * 9:.3f}") + 5 == header.index("Threshold") + len("Threshold")
