"""No identifier or date value of the real files reaches stderr or the log of ``chexdcm infer``.

pydicom warns (and logs) with the offending value quoted (``Invalid value for VR UI:
'1.2.123...'``, ``The value length (56) exceeds ...``); highdicom and pynetdicom may
quote patient data.  ``chexdcm -vv infer`` over the broken and chest corpora must show
keywords, VRs, reason codes and hashed references only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset

from chexnet_dicom.cli import main
from tests.helpers.bundles import make_bundle

#: VRs whose values identify a patient, a study or a moment.
IDENTIFYING_VRS = {"UI", "PN", "DA", "DT", "TM"}
#: Keywords of identifiers held in other VRs (LO, SH, ...).
IDENTIFYING_KEYWORDS = {
    "PatientID",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyID",
    "PatientAddress",
    "InstitutionName",
    "InstitutionAddress",
    "DeviceSerialNumber",
    "StationName",
    "PatientBirthDate",
}


def _values(ds: Dataset, out: set[str]) -> None:
    for elem in ds.iterall():
        if elem.VR == "SQ" or elem.value in (None, b"", ""):
            continue
        if elem.VR not in IDENTIFYING_VRS and elem.keyword not in IDENTIFYING_KEYWORDS:
            continue
        values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
        for v in values:
            text = str(v).strip()
            if elem.VR == "UI" and text in UID_dictionary:  # a standard SOP class or syntax: no PHI
                continue
            if elem.VR == "TM" and len(text) < 6:  # "0" or "12": too short to mean anything
                continue
            if len(text) >= 4:
                out.add(text)
            if elem.VR == "PN":  # the components of a name, each on its own
                out.update(part for part in text.replace("=", "^").split("^") if len(part) >= 4)


def _identifying_values(folders: list[Path]) -> set[str]:
    found: set[str] = set()
    for folder in folders:
        for path in sorted(folder.iterdir()):
            try:
                ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
            except Exception:  # a file too broken to parse has no values to leak
                continue
            try:
                _values(ds, found)
                _values(ds.file_meta, found)
            except Exception:  # a value that does not parse: whatever was read is checked
                continue
    return found


@pytest.fixture(scope="module")
def corpora(shared_dicom: Path) -> list[Path]:
    return [shared_dicom / "broken", shared_dicom / "chest"]


def test_the_corpora_do_hold_values_that_could_leak(corpora: list[Path]) -> None:
    values = _identifying_values(corpora)
    # this test must be able to fail: the files hold UIDs, names and dates
    assert len(values) > 50
    assert any(v.startswith("1.") and v.count(".") > 4 for v in values)


def test_stderr_of_infer_vv_holds_no_identifier_or_date(corpora: list[Path], tmp_path: Path) -> None:
    card = make_bundle(tmp_path / "bundle")
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # every warning is raised, none deduplicated
    runs = []
    for folder in corpora:
        proc = subprocess.run(
            [sys.executable, "-m", "chexnet_dicom", "-vv", "infer", str(folder), "--weights", str(card),
             "--out", str(tmp_path / folder.name), "--device", "cpu"],
            capture_output=True, text=True, timeout=600, env=env, check=False,
        )  # fmt: skip
        assert proc.returncode in (0, 1, 3), proc.stderr[-3000:]
        runs.append(proc)
    err = "\n".join(p.stderr for p in runs)
    # the runs did meet the files that make pydicom complain, and logged it in words
    assert "DEBUG" in err and "CORRUPT_PIXELS" in err
    assert "chexnet_dicom.library" in err, "pydicom's warnings should reach the debug log, redacted"
    leaked = sorted(v for v in _identifying_values(corpora) if v in err)
    assert not leaked, f"values on stderr: {leaked[:10]}"
    assert "Traceback" not in err


def test_the_log_records_hold_no_identifier_or_date(
    corpora: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process: every record of every logger (pydicom's and highdicom's included)."""
    card = make_bundle(tmp_path / "bundle")
    with caplog.at_level(logging.DEBUG):
        for folder in corpora:
            main(["-vv", "infer", str(folder), "--weights", str(card), "--out", str(tmp_path / folder.name)])
    captured = capsys.readouterr()
    text = "\n".join(r.getMessage() for r in caplog.records) + captured.err
    assert len(caplog.records) > 10
    leaked = sorted(v for v in _identifying_values(corpora) if v in text)
    assert not leaked, f"values in the log: {leaked[:10]}"
