"""``chexdcm batch`` with decode workers analyses every image of an NIH export in six encodings.

The export of issue 19: real NIH radiographs, one study each, written in turn in six
encodings of the conformance matrix, among them implicit VR without file meta carrying a
VOI LUT Sequence (the legacy file that failed through the decode workers).  The run must
exit 0, analyse every image and give no ``INTERNAL`` reason anywhere.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from chexnet_dicom.testing.matrix import EXPORT_ENCODINGS, write_export
from tests.helpers.batch import read_table, run_batch_cli
from tests.helpers.doors import RUNTIME
from tests.helpers.shared import shared_path


def _run(n: int, card: Path, tmp_path: Path) -> None:
    export = tmp_path / "export"
    written = write_export(shared_path("nih"), export, n)
    assert collections.Counter(f.case.name for f in written.values()) == dict.fromkeys(
        EXPORT_ENCODINGS, n // len(EXPORT_ENCODINGS)
    )
    out = tmp_path / "run"
    code = run_batch_cli(export, out, card, *RUNTIME, "--workers", "2")
    files = {r["path"]: r for r in read_table(out, "files")}
    bad = {p: (r["status"], r["reason"]) for p, r in files.items() if r["status"] != "analysed"}
    assert not bad, bad
    assert set(files) == set(written)
    errors = read_table(out, "errors")
    assert not [e for e in errors if "INTERNAL" in str(e.values())], errors
    assert len(read_table(out, "predictions")) == n
    assert {r["status"] for r in read_table(out, "studies")} == {"analysed"}
    assert code == 0


def test_batch_with_workers_analyses_an_nih_export_in_six_encodings(card: Path, tmp_path: Path) -> None:
    _run(12, card, tmp_path)


@pytest.mark.slow
def test_batch_with_workers_analyses_a_larger_nih_export_in_six_encodings(card: Path, tmp_path: Path) -> None:
    _run(120, card, tmp_path)
