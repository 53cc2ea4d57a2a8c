"""``chexdcm check``: output formats, recursion order and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chexnet_dicom.cli import main
from chexnet_dicom.testing import synth


def _write(path: Path, **kw: object) -> Path:
    ds = synth.make_dataset(synth.chest_phantom((48, 40), seed=2), **kw)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    synth.write(ds, path)
    return path


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    _write(root / "b" / "2_lateral.dcm", view_position="LL", view_code=False)
    _write(root / "a" / "1_pa.dcm")
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("not an image\n")
    broken = _write(root / "c" / "0_cut.dcm")
    broken.write_bytes(broken.read_bytes()[:400])
    (root / ".hidden").mkdir()
    _write(root / ".hidden" / "x.dcm")
    return root


def _json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_json_lines_in_sorted_order(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check", "--json", str(study)])
    out, err = capsys.readouterr()
    records = _json_lines(out)
    names = [Path(str(r["path"])).relative_to(study).as_posix() for r in records]
    assert names == ["a/1_pa.dcm", "b/2_lateral.dcm", "c/0_cut.dcm", "c/notes.txt"]
    by = {n: r for n, r in zip(names, records, strict=True)}
    assert by["a/1_pa.dcm"]["status"] == "accepted" and by["a/1_pa.dcm"]["reason"] is None
    assert by["b/2_lateral.dcm"]["status"] == "skipped"
    assert by["b/2_lateral.dcm"]["reason"] == "VIEW_NOT_FRONTAL"
    assert by["c/0_cut.dcm"]["status"] == "error" and by["c/0_cut.dcm"]["reason"] == "CORRUPT_HEADER"
    assert by["c/notes.txt"]["reason"] == "NOT_DICOM"
    for r in records:
        assert set(r) >= {"path", "status", "reason", "message", "flags"}
        assert isinstance(r["flags"], list)
    assert rc == 0  # errors are reported, not a failure of the command
    assert "4 file(s): 1 accepted, 1 skipped, 2 error" in err


def test_strict_exit_codes_case_by_case(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--strict: 3 for a defective DICOM file or a named non-DICOM path; a README met while
    walking and out-of-scope files do not count; a missing path is a runtime failure (1)."""
    assert main(["check", "--strict", "--no-decode", str(study)]) == 3  # c/0_cut.dcm is corrupt
    assert main(["check", "--strict", str(study / "a")]) == 0
    assert main(["check", "--strict", str(study / "b")]) == 0  # a lateral: skipped, in order
    assert main(["check", "--strict", str(study / "a"), str(study / "c" / "notes.txt")]) == 3  # named
    (study / "a" / "README.txt").write_text("walked past, not named\n")
    assert main(["check", "--strict", str(study / "a")]) == 0
    assert main(["check", str(study)]) == 0  # without --strict errors are reported only
    assert main(["check", "--strict", str(study / "nope")]) == 1
    capsys.readouterr()


def test_human_readable_lines(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check", str(study / "a" / "1_pa.dcm"), str(study / "b")])
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2
    assert (
        lines[0].startswith("ACCEPTED") and "1_pa.dcm" in lines[0] and "frontal chest radiograph" in lines[0]
    )
    assert lines[1].startswith("SKIPPED  VIEW_NOT_FRONTAL") and "ViewPosition:LL" in lines[1]


def test_no_decode_says_so(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--json", "--no-decode", str(study / "a")]) == 0
    (record,) = _json_lines(capsys.readouterr().out)
    assert record["status"] == "accepted" and "pixels not decoded" in str(record["message"])
    assert record["decode_path"] == ""


def test_decode_at_full_resolution(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--json", "--size", "0", str(study / "a")]) == 0
    (record,) = _json_lines(capsys.readouterr().out)
    assert record["status"] == "accepted" and "48x40" in str(record["message"])


def test_missing_path_is_a_runtime_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = _write(tmp_path / "ok.dcm")
    rc = main(["check", str(tmp_path / "missing.dcm"), str(ok)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "no such file or folder" in err and "ok.dcm" in out


def test_empty_folder_is_a_runtime_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path)]) == 1
    assert "no files found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["check"], ["check", "--size", "-3", "x"], ["check", "--bogus", "x"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    capsys.readouterr()


def test_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = _write(tmp_path / "ok.dcm")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[ingest.limits]\nmax_rows = 16\n")
    assert main(["check", "--json", "--config", str(cfg), str(ok)]) == 0
    (record,) = _json_lines(capsys.readouterr().out)
    assert (record["status"], record["reason"]) == ("error", "TOO_LARGE")
    bad = tmp_path / "bad.toml"
    bad.write_text("[ingest.limits]\nmax_rowz = 16\n")
    assert main(["check", "--config", str(bad), str(ok)]) == 2
    assert "max_rowz" in capsys.readouterr().err


def test_real_corpus_folder(shared_dicom: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check", "--json", "--no-decode", str(shared_dicom / "other_xray")])
    records = _json_lines(capsys.readouterr().out)
    assert rc == 0 and len(records) == 7
    assert all(r["status"] == "skipped" for r in records)
