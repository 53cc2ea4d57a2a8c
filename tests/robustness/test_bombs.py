"""Decompression bombs through ``infer`` and ``batch`` (issue 18 item 1 must-show "Bombs").

Each bomb is a constant 16-bit image at the largest matrix the default limits allow
(16384 x 16384), in every syntax the ingest decodes.  Run in a fresh process, each gives
a result (the JPEG 2000 fast path: a downscaled analysis) or the typed reason TOO_LARGE
(the decode would exceed ``ingest.limits.max_working_bytes``), a good study in the same
run is analysed, and the process's peak RSS stays within the documented budget
(:mod:`chexnet_dicom.dicom.budget`; generous bound below).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from chexnet_dicom.dicom.check import check_file
from chexnet_dicom.testing.bombs import write_bomb
from tests.helpers.memory import REPO, peak_rss_of

#: The model and runtime (~0.5 GiB) + max_working_bytes (256 MiB) + the analysis on the
#: 4096 grid (~1.5 GiB measured), with a margin.
BUDGET_MIB = 3072
SIZE = 16384
GOOD = REPO / "sample_data" / "study3_dx16_window"


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    out = {}
    for syntax in ("rle", "j2k", "jpegls", "deflated", "native"):
        folder = root / syntax
        (folder / "bomb").mkdir(parents=True)
        write_bomb(folder / "bomb" / "bomb.dcm", syntax, SIZE)
        shutil.copytree(GOOD, folder / "good")
        out[syntax] = folder
    return out


@pytest.mark.slow
@pytest.mark.parametrize("syntax", ["rle", "j2k", "jpegls", "deflated", "native"])
def test_bomb_through_infer(bombs: dict[str, Path], tmp_path: Path, syntax: str) -> None:
    bomb = bombs[syntax] / "bomb"
    code, peak = peak_rss_of(["infer", str(bomb), "--out", str(tmp_path / "bomb")])
    assert peak < BUDGET_MIB, f"{syntax}: peak RSS {peak:.0f} MiB"
    checked = check_file(bomb / "bomb.dcm")  # what check says, the same decode as infer
    if code == 0:  # analysed (downscaled): a result
        assert checked.status == "accepted" and list((tmp_path / "bomb").rglob("sr.dcm"))
    else:  # refused: exit 1 (no study left to analyse) or 3, with the typed reason
        assert code in (1, 3), code
        assert (checked.status, checked.reason) == ("error", "TOO_LARGE")
    code, _ = peak_rss_of(["infer", str(bombs[syntax] / "good"), "--out", str(tmp_path / "good")])
    assert code == 0 and list((tmp_path / "good").rglob("sr.dcm"))


@pytest.mark.slow
@pytest.mark.parametrize("syntax", ["rle", "j2k", "native"])
def test_bomb_through_batch(bombs: dict[str, Path], tmp_path: Path, syntax: str) -> None:
    out = tmp_path / "batch"
    code, peak = peak_rss_of(["batch", str(bombs[syntax]), "--out", str(out), "--no-progress"])
    assert code in (0, 3), code
    assert peak < BUDGET_MIB, f"{syntax}: peak RSS {peak:.0f} MiB"
    with open(out / "studies.csv", newline="") as f:
        studies = list(csv.DictReader(f))
    assert studies  # the good study at least
    files = (out / "files.csv").read_text() + (
        (out / "errors.csv").read_text() if (out / "errors.csv").exists() else ""
    )
    assert "TOO_LARGE" in files or syntax == "j2k"
    with open(out / "predictions.csv", newline="") as f:
        predictions = list(csv.DictReader(f))
    assert predictions  # the good study (and the J2K bomb) analysed
