"""Tests for study grouping and image selection (chexnet_dicom.dicom.study)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chexnet_dicom.dicom.reasons import (
    DUPLICATE_INSTANCE,
    FOR_PROCESSING_REDUNDANT,
    MISSING_UID,
    OUTSIDE_ROOT,
)
from chexnet_dicom.dicom.study import Study, scan
from chexnet_dicom.testing import synth

REPO = Path(__file__).resolve().parents[2]
SMALL = synth.chest_phantom(48, seed=11, noise=0.0)


def _write(path: Path, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    synth.write(synth.make_dataset(SMALL, **kwargs), path)
    return path


def _by_name(study: Study) -> list[str]:
    return [Path(i.path).name for i in study.selected]


def test_sample_data_studies() -> None:
    result = scan([REPO / "sample_data"])
    assert len(result.studies) == 8
    pa_lat = [s for s in result.studies if len(s.series) == 2]
    assert len(pa_lat) == 1
    study = pa_lat[0]
    assert _by_name(study) == ["pa.dcm"]
    assert [(Path(s.path).name, s.reason, s.status) for s in study.skipped] == [
        ("lateral.dcm", "VIEW_NOT_FRONTAL", "skipped")
    ]
    assert [s.series_number for s in study.series] == [1, 2]
    assert {i.view for i in study.instances} == {"PA", "LL"}
    # Every other study has exactly one selected frontal image (the truncated file too:
    # its header is fine, the pixel error shows when decoding).
    assert all(len(s.selected) == 1 for s in result.studies)
    assert [(Path(s.path).name, s.reason) for s in result.unassigned] == [("README.md", "NOT_DICOM")]
    assert list(scan([REPO / "sample_data"]).studies) == list(result.studies)


def test_scan_is_deterministic(tmp_path: Path) -> None:
    for i, name in enumerate(["c.dcm", "a.dcm", "b.dcm"]):
        _write(tmp_path / "s" / name, study_key="one", series_number=3 - i, instance_number=1)
    first = scan([tmp_path])
    second = scan([tmp_path])
    assert first == second
    # Ordered by SeriesNumber, not by file name or walking order.
    (study,) = first.studies
    assert [i.series_number for i in study.selected] == [1, 2, 3]
    assert _by_name(study) == ["b.dcm", "a.dcm", "c.dcm"]
    assert study.selected[0].path.endswith("b.dcm")


def test_missing_numbers_sort_last_and_studies_by_date(tmp_path: Path) -> None:
    _write(tmp_path / "x1.dcm", study_key="late", study_date="20240301", instance_number=1)
    _write(
        tmp_path / "x2.dcm",
        study_key="late",
        study_date="20240301",
        instance_number=2,
        extra={"InstanceNumber": None},
    )
    _write(tmp_path / "y.dcm", study_key="early", study_date="20230101")
    studies = list(scan([tmp_path]).studies)
    assert [s.study_date for s in studies] == ["20230101", "20240301"]
    assert [i.instance_number for i in studies[1].selected] == [1, None]


def test_duplicates_keep_the_accepted_then_the_first(tmp_path: Path) -> None:
    uid = "2.25.1234567"
    # Walking order: a_lateral first, but it is not frontal; b_frontal is kept.
    _write(tmp_path / "a_lateral.dcm", study_key="d", sop_uid=uid, view_position="LL")
    _write(tmp_path / "b_frontal.dcm", study_key="d", sop_uid=uid)
    _write(tmp_path / "c_copy.dcm", study_key="d", sop_uid=uid)
    (study,) = list(scan([tmp_path]).studies)
    assert _by_name(study) == ["b_frontal.dcm"]
    assert sorted((Path(s.path).name, s.reason) for s in study.skipped) == [
        ("a_lateral.dcm", DUPLICATE_INSTANCE),
        ("c_copy.dcm", DUPLICATE_INSTANCE),
    ]
    assert len(study.instances) == 1
    # The message names the kept file only by a hashed reference.
    assert all("b_frontal" not in s.message for s in study.skipped)


def test_for_processing_only_when_nothing_else(tmp_path: Path) -> None:
    _write(
        tmp_path / "both" / "proc.dcm",
        study_key="both",
        series_number=1,
        presentation_intent="FOR PROCESSING",
        window=None,
    )
    _write(tmp_path / "both" / "pres.dcm", study_key="both", series_number=2)
    _write(
        tmp_path / "only" / "proc.dcm", study_key="only", presentation_intent="FOR PROCESSING", window=None
    )
    result = scan([tmp_path / "both", tmp_path / "only"])
    by_key = {len(s.series): s for s in result.studies}
    both, only = by_key[2], by_key[1]
    assert _by_name(both) == ["pres.dcm"]
    assert [(Path(s.path).name, s.reason) for s in both.skipped] == [("proc.dcm", FOR_PROCESSING_REDUNDANT)]
    assert _by_name(only) == ["proc.dcm"]


def test_missing_uid_and_non_dicom(tmp_path: Path) -> None:
    _write(tmp_path / "no_study.dcm", extra={"StudyInstanceUID": ""})
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "empty.dcm").write_bytes(b"")
    result = scan([tmp_path])
    assert result.studies == ()
    reasons = {Path(s.path).name: (s.status, s.reason) for s in result.unassigned}
    assert reasons["no_study.dcm"] == ("error", MISSING_UID)
    assert reasons["notes.txt"] == ("error", "NOT_DICOM")
    assert reasons["empty.dcm"][0] == "error"
    assert result.skipped == result.unassigned


def test_hidden_entries_ignored(tmp_path: Path) -> None:
    _write(tmp_path / ".hidden.dcm", study_key="h")
    _write(tmp_path / ".git" / "x.dcm", study_key="h2")
    _write(tmp_path / "seen.dcm", study_key="v")
    result = scan([tmp_path])
    assert [Path(i.path).name for s in result.studies for i in s.instances] == ["seen.dcm"]
    assert result.unassigned == ()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links on this platform")
def test_symlinks_not_followed_outside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = _write(tmp_path / "outside" / "secret.dcm", study_key="out")
    inside = _write(root / "real.dcm", study_key="in")
    (root / "link_out.dcm").symlink_to(outside)
    (root / "link_in.dcm").symlink_to(inside)
    (root / "dir_out").symlink_to(outside.parent, target_is_directory=True)
    result = scan([root])
    assert {(Path(s.path).name, s.reason) for s in result.unassigned} == {
        ("link_out.dcm", OUTSIDE_ROOT),
        ("dir_out", OUTSIDE_ROOT),
    }
    (study,) = result.studies
    # The in-root link is read; it is the same instance as real.dcm, so one is a duplicate.
    assert len(study.selected) == 1
    assert [s.reason for s in study.skipped] == [DUPLICATE_INSTANCE]
    # A file named explicitly is read even through a link.
    explicit = scan([root / "link_out.dcm"])
    assert len(explicit.studies) == 1 and explicit.unassigned == ()


def test_non_chest_and_colour_in_a_study(tmp_path: Path) -> None:
    _write(tmp_path / "pa.dcm", study_key="mix", series_number=1)
    _write(tmp_path / "hand.dcm", study_key="mix", series_number=2, body_part="HAND")
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    synth.write(
        synth.make_dataset(rgb, photometric="RGB", modality="SC", study_key="mix", series_number=3),
        tmp_path / "rgb.dcm",
    )
    (study,) = list(scan([tmp_path]).studies)
    assert _by_name(study) == ["pa.dcm"]
    reasons = {Path(s.path).name: s.reason for s in study.skipped}
    assert reasons["hand.dcm"] == "BODY_PART"
    assert reasons["rgb.dcm"] in {"MODALITY", "COLOR"}
    assert len(study.series) == 3


# --------------------------------------------------------------------------- real corpus


def test_real_chest_folder(shared_dicom: Path) -> None:
    chest = shared_dicom / "chest"
    files = sorted(p for p in chest.rglob("*") if p.is_file())
    result = scan([chest])
    assert result.unassigned == ()
    selected = [i for s in result.studies for i in s.selected]
    skipped = [s for st in result.studies for s in st.skipped]
    # Every chest file is analysed, or is a duplicate SOP instance of one that is.
    assert len(selected) + len(skipped) == len(files)
    assert all(s.reason == DUPLICATE_INSTANCE for s in skipped)
    selected_uids = {i.sop_uid for i in selected}
    assert len(selected_uids) == len(selected)
    assert all(i.accepted for i in selected)


def test_real_corpus_every_file_accounted(shared_dicom: Path) -> None:
    files = sorted(str(p) for p in shared_dicom.rglob("*") if p.is_file() and not p.name.startswith("."))
    result = scan([shared_dicom])
    selected = [i.path for s in result.studies for i in s.selected]
    skipped = [s.path for s in result.skipped]
    assert sorted(selected + skipped) == files
    # Nothing outside chest/ (and the broken chest codestream, whose header is fine) is selected.
    for path in selected:
        rel = Path(path).relative_to(shared_dicom)
        assert rel.parts[0] in {"chest", "broken"}, rel
    for s in result.skipped:
        rel = Path(s.path).relative_to(shared_dicom)
        if rel.parts[0] in {"other_xray", "non_xray"}:
            assert s.status == "skipped" or s.reason in {"CORRUPT_HEADER"}, (rel, s.reason)


def test_duplicate_across_studies_and_explicit_file_order(tmp_path: Path) -> None:
    uid = "2.25.987654321"
    a = _write(tmp_path / "a.dcm", study_key="s1", sop_uid=uid)
    b = _write(tmp_path / "b.dcm", study_key="s2", sop_uid=uid)
    # Explicit files are read in the order given: b first, so b is kept.
    result = scan([b, a])
    kept = [i.path for s in result.studies for i in s.selected]
    assert kept == [str(b)]
    dup_study = next(s for s in result.studies if not s.selected)
    assert dup_study.series == () and [s.reason for s in dup_study.skipped] == [DUPLICATE_INSTANCE]
    assert [s.path for s in result.skipped] == [str(a)]
