"""TID 1500 SR: validity (dciodvfy), read-back (pydicom, highdicom, dcmtk), content."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from chexnet_dicom.dicom.study import Skipped
from chexnet_dicom.errors import OutputError
from chexnet_dicom.model.labels import FINDING_CODES, LABELS
from chexnet_dicom.outputs.regions import evidence_regions
from chexnet_dicom.outputs.sr import build_sr, finding_name, heatmap_region
from chexnet_dicom.outputs.write import write_dataset
from chexnet_dicom.results import study_summary
from tests.helpers.outputs import (
    blob,
    dciodvfy_errors,
    make_card,
    make_dx,
    make_result,
    real_source,
)
from tests.helpers.shared import require_tool

PROBS = np.array([0.91, 0.02, 0.55, 0.1, 0.3, 0.49, 0.5, 0.75, 0.01, 0.2, 0.33, 0.6, 0.123456789, 0.0])


def _heatmaps(ds: pydicom.Dataset, cy: float, cx: float) -> np.ndarray:
    rows, cols = int(ds.Rows), int(ds.Columns)
    h = blob(rows, cols, cy * rows, cx * cols, max(rows, cols) / 12)
    return np.repeat(h[None], len(LABELS), axis=0)


def _write_read(sr: pydicom.Dataset, tmp_path: Path, name: str = "sr.dcm") -> tuple[Path, pydicom.Dataset]:
    path = write_dataset(sr, tmp_path / name)
    return path, pydicom.dcmread(path)


def _report(sr: pydicom.Dataset) -> Any:
    return hd.sr.Comprehensive3DSR.from_dataset(sr, copy=True).content  # typed TID 1500 content


def _qualitative(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The Qualitative Evaluations container (TID 1500 row 12), placed first among the root's containers."""
    containers = [i for i in ds.ContentSequence if i.ValueType == "CONTAINER"]
    assert containers[0].ConceptNameCodeSequence[0].CodeValue == "C0034375"
    return containers[0]


def _walk(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    out = []
    for item in ds.get("ContentSequence", []):
        out.append(item)
        out.extend(_walk(item))
    return out


def _is_probability(item: pydicom.Dataset) -> bool:
    return item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == "122157"


def _num_items(group: Any) -> list[float]:
    return [item.value for item in group.get_measurements(name=codes.DCM.Probability)]


def _check_regions(mine: list[Any], group: Any, ds: pydicom.Dataset) -> None:
    """A present finding's two TID 1410 groups: outline and bounding box, on the source."""
    assert len(mine) == 2
    purposes = {}
    for roi in mine:
        region = roi.roi
        assert (
            region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
        )
        xy = region.value
        assert np.array_equal(xy[0], xy[-1])  # closed
        cx, cy = 0.6 * ds.Columns, 0.4 * ds.Rows
        assert xy[:, 0].min() < cx < xy[:, 0].max() and xy[:, 1].min() < cy < xy[:, 1].max()
        (purpose,) = [i for i in roi[0].ContentSequence if i.name == codes.DCM.GeometricPurposeOfRegion]
        purposes[purpose.value.value] = xy
        assert roi.get_qualitative_evaluations()[0].value.value == codes.SCT.Present.value
        assert roi.tracking_uid and roi.tracking_uid != group.tracking_uid
    outline, box = purposes[codes.DCM.Outline.value], purposes[codes.SCT.BoundedBy.value]
    assert len(box) == 5  # a rectangle around the outline
    assert box[:, 0].min() <= outline[:, 0].min() and outline[:, 0].max() <= box[:, 0].max()
    assert box[:, 1].min() <= outline[:, 1].min() and outline[:, 1].max() <= box[:, 1].max()


@pytest.mark.parametrize("source", ["siim_6904.dcm", "CR-MONO1-10-chest.dcm"])
def test_sr_of_a_real_chest_is_valid_and_complete(source: str, tmp_path: Path) -> None:
    ds = real_source(source)
    card = make_card()
    sr = build_sr([make_result(ds, card, PROBS, heat=_heatmaps(ds, 0.4, 0.6))], card)
    path, back = _write_read(sr, tmp_path)

    errors, warnings = dciodvfy_errors(path)
    assert errors == [], errors
    # the private coding scheme and the AIR Device UID are the only expected extensions
    unexpected = [
        w for w in warnings if "99CHEXDCM" not in w and "Device UID" not in w and "DICOMDIR" not in w
    ]
    assert all("Person Name" in w or "Standard Extended" in w for w in unexpected), unexpected

    # identity of patient and study, new series, flags
    for kw in ("PatientName", "PatientID", "StudyInstanceUID", "AccessionNumber", "StudyDate"):
        if kw in ds:
            assert str(back.get(kw, "")) == str(ds.get(kw, "")), kw
    assert back.SeriesInstanceUID != ds.SeriesInstanceUID
    assert back.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert back.VerificationFlag == "UNVERIFIED"
    assert "RESEARCH USE ONLY" in back.SeriesDescription
    assert back.file_meta.ImplementationClassUID != "1.2.826.0.1.3680043.9.7433.1.1"  # not highdicom's
    # source referenced as evidence
    evidence = back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    # AIR contributing equipment: the model as processing equipment with its device UID
    algo = [
        item
        for item in back.ContributingEquipmentSequence
        if item.PurposeOfReferenceCodeSequence[0].CodeValue == codes.DCM.ProcessingEquipment.value
        and item.Manufacturer == "chexnet-dicom project"
    ]
    assert len(algo) == 1
    assert algo[0].DeviceUID == card.device_uid
    assert algo[0].ManufacturerModelName == card.name
    assert card.version in list(algo[0].SoftwareVersions)

    report: Any = hd.sr.srread(path)
    groups = report.content.get_image_measurement_groups()
    assert len(groups) == len(LABELS)
    by_code = {(g.finding_type.scheme_designator, g.finding_type.value): g for g in groups}
    planar = report.content.get_planar_roi_measurement_groups()
    n_present = 0
    for k, label in enumerate(LABELS):
        code = FINDING_CODES[label]
        group = by_code[(code.scheme, code.value)]
        assert group.finding_type.meaning == code.meaning
        assert _num_items(group) == [PROBS[k]]  # exact: FloatingPointValue is kept
        present = PROBS[k] >= card.threshold(label)
        evaluation = group.get_qualitative_evaluations()[0]
        assert evaluation.value.value == (codes.SCT.Present if present else codes.SCT.Absent).value
        assert isinstance(group, hd.sr.MeasurementsAndQualitativeEvaluations)  # TID 1501, every one
        (probability,) = group.get_measurements(name=codes.DCM.Probability)
        assert not probability.referenced_coordinates and probability.referenced_images
        assert group.tracking_uid
        # where the evidence lies: two TID 1410 groups of a present finding, none of an absent one
        mine = [g for g in planar if g.finding_type.value == code.value]
        if not present:
            assert mine == [], label
            continue
        n_present += 1
        _check_regions(mine, group, ds)
    assert n_present and len(planar) == 2 * n_present
    # observer is the model as a device
    device_uid = [
        item.value for item in report.content[0].ContentSequence if item.name == codes.DCM.DeviceObserverUID
    ]
    assert device_uid == [card.device_uid]


def test_dsrdump_prints_the_tree(tmp_path: Path) -> None:
    exe = require_tool("dsrdump")
    ds = make_dx()
    card = make_card()
    path = write_dataset(build_sr([make_result(ds, card, PROBS)], card), tmp_path / "sr.dcm")
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60, errors="replace")
    assert out.returncode == 0, out.stderr
    assert "Imaging Measurement Report" in out.stdout
    assert out.stdout.count('"Measurement Group"') == len(LABELS)
    assert "(HERNIA,99CHEXDCM" in out.stdout and "(36118008,SCT," in out.stdout
    assert '"Qualitative Evaluations"' in out.stdout


def test_uids_are_deterministic_and_depend_on_weights_and_sources() -> None:
    ds, other = make_dx(seed="a"), make_dx(seed="b")
    card, card2 = make_card("ab" * 32), make_card("cd" * 32)
    first = build_sr([make_result(ds, card, PROBS)], card)
    again = build_sr([make_result(ds, card, PROBS)], card)
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SeriesInstanceUID == again.SeriesInstanceUID
    tracking = [g.tracking_uid for g in _report(first).get_image_measurement_groups()]
    assert tracking == [g.tracking_uid for g in _report(again).get_image_measurement_groups()]
    assert len(set(tracking)) == len(LABELS)
    weights = build_sr([make_result(ds, card2, PROBS)], card2)
    assert weights.SOPInstanceUID != first.SOPInstanceUID
    assert weights.SeriesInstanceUID != first.SeriesInstanceUID
    sources = build_sr([make_result(other, card, PROBS)], card)
    assert sources.SOPInstanceUID != first.SOPInstanceUID
    assert sources.SeriesInstanceUID == first.SeriesInstanceUID  # same study, same model


@pytest.mark.parametrize(
    ("charset", "name"),
    [("ISO_IR 100", "Müller^Jürgen^Ä"), ("ISO_IR 192", "山田^太郎=Yamada^Tarō")],
)
def test_non_ascii_patient_name_round_trips(charset: str, name: str, tmp_path: Path) -> None:
    ds = make_dx(charset=charset, name=name)
    src = write_dataset(ds, tmp_path / "src.dcm")
    ds = pydicom.dcmread(src)
    card = make_card()
    path, back = _write_read(build_sr([make_result(ds, card, PROBS)], card), tmp_path)
    assert back.SpecificCharacterSet == charset
    assert str(back.PatientName) == name
    errors, _ = dciodvfy_errors(path)
    assert errors == [], errors


def test_study_summary_is_the_maximum_over_images(tmp_path: Path) -> None:
    card = make_card()
    a, b = make_dx(seed="a"), make_dx(seed="b")
    pa = PROBS
    pb = PROBS[::-1].copy()
    results = [make_result(a, card, pa), make_result(b, card, pb)]
    summary = study_summary(results)
    for k, label in enumerate(LABELS):
        assert summary[label].probability == max(pa[k], pb[k])
        assert summary[label].image_index == (0 if pa[k] >= pb[k] else 1)
    path, back = _write_read(build_sr(results, card), tmp_path)
    report: Any = hd.sr.srread(path)
    assert len(report.content.get_image_measurement_groups()) == 2 * len(LABELS)
    texts = [
        item.TextValue
        for item in _qualitative(back).ContentSequence
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "36118008"
    ]
    assert texts == [
        f"study maximum Probability {max(pa[7], pb[7]):.3g} (image 1 of 2), threshold 0.5: present"
    ]
    assert dciodvfy_errors(path)[0] == []


def test_all_skipped_study_still_gets_an_sr(tmp_path: Path) -> None:
    card = make_card()
    lateral = make_dx(seed="lat")
    skipped = [
        Skipped("x.dcm", "skipped", "VIEW_NOT_FRONTAL", "lateral view", lateral),
        Skipped("x.dcm", "skipped", "NOT_DICOM", "not a DICOM file", None),
    ]
    path, back = _write_read(build_sr([], card, skipped=skipped), tmp_path)
    assert dciodvfy_errors(path)[0] == []
    report: Any = hd.sr.srread(path)
    assert report.content.get_image_measurement_groups() == []
    evaluations = _qualitative(back)
    assert back.CompletionFlag == "COMPLETE"  # nothing meant for analysis was left out
    notes = [
        i.TextValue
        for i in evaluations.ContentSequence
        if i.ConceptNameCodeSequence[0].CodeValue == "NOT_ANALYSED"
    ]
    assert len(notes) == 2
    assert "VIEW_NOT_FRONTAL: lateral view" in notes[0] and lateral.SOPInstanceUID in notes[0]
    assert "NOT_DICOM" in notes[1]
    assert back.PatientName == lateral.PatientName


def test_skipped_images_are_listed_next_to_analysed_ones() -> None:
    card = make_card()
    sr = build_sr(
        [make_result(make_dx(seed="a"), card, PROBS)],
        card,
        skipped=[Skipped("lat.dcm", "skipped", "VIEW_NOT_FRONTAL", "lateral view", make_dx(seed="lat"))],
    )
    codes_ = [i.ConceptNameCodeSequence[0].CodeValue for i in _qualitative(sr).ContentSequence]
    assert codes_.count("NOT_ANALYSED") == 1
    assert sr.CompletionFlag == "COMPLETE"  # a lateral view is out of scope, not a failure


def test_a_defective_file_makes_the_sr_partial() -> None:
    card = make_card()
    sr = build_sr(
        [make_result(make_dx(seed="a"), card, PROBS)],
        card,
        skipped=[Skipped("bad.dcm", "error", "CORRUPT_PIXELS", "pixel data truncated", make_dx(seed="bad"))],
    )
    assert sr.CompletionFlag == "PARTIAL"


def test_a_duplicate_is_reported_once_with_the_uid_that_was_used() -> None:
    card = make_card()
    ds = make_dx(seed="a")
    dup = Skipped("copy.dcm", "skipped", "DUPLICATE_INSTANCE", "same UID as file:ee0e12", ds)
    sr = build_sr([make_result(ds, card, PROBS)], card, skipped=[dup, dup])
    notes = [
        i.TextValue
        for i in _qualitative(sr).ContentSequence
        if i.ConceptNameCodeSequence[0].CodeValue == "NOT_ANALYSED"
    ]
    assert len(notes) == 1
    assert str(ds.SOPInstanceUID) in notes[0] and "3 times" in notes[0]
    assert "file:" not in notes[0]


def test_the_top_says_research_use_and_the_present_findings() -> None:
    card = make_card()
    sr = build_sr([make_result(make_dx(seed="a"), card, PROBS)], card)
    items = _qualitative(sr).ContentSequence
    assert items[0].TextValue.startswith("RESEARCH USE ONLY")
    assert items[1].ConceptNameCodeSequence[0].CodeMeaning == "Summary"
    present = [label for k, label in enumerate(LABELS) if PROBS[k] >= 0.5]
    assert present, "the fixture must have a present finding"
    for label in present:
        assert f"{finding_name(label)} {PROBS[LABELS.index(label)]:.3g} (threshold 0.5)" in items[1].TextValue
    absent = [label for k, label in enumerate(LABELS) if PROBS[k] < 0.5]
    assert all(f"{finding_name(label)} " not in items[1].TextValue for label in absent)
    assert sr.SeriesDate == sr.ContentDate and sr.SeriesTime == sr.ContentTime


def test_probability_reads_3_digits_and_keeps_full_precision_with_a_readable_threshold() -> None:
    card = make_card(threshold=0.4321)
    sr = build_sr([make_result(make_dx(seed="a"), card, PROBS)], card)
    report = _report(sr)
    groups = report.get_image_measurement_groups()
    seen = set()
    for group in groups:
        finding = group.finding_type.meaning
        label = next(lab for lab in LABELS if finding_name(lab) == finding)
        seen.add(label)
        prob = group.get_measurements(name=codes.DCM.Probability)[0]
        thr = group.get_measurements(name=codes.DCM.ThresholdValue)[0]
        assert prob.value == pytest.approx(float(PROBS[LABELS.index(label)]), abs=1e-12)
        assert thr.value == pytest.approx(0.4321, abs=1e-12)
    assert seen == set(LABELS)
    shown = sorted(str(n.MeasuredValueSequence[0].NumericValue) for n in _walk(sr) if _is_probability(n))
    assert shown == sorted(f"{float(p):.3g}" for p in PROBS)  # what a renderer prints
    assert "finding index" not in str(sr)


def test_later_version_lists_the_earlier_sr_as_predecessor(tmp_path: Path) -> None:
    card = make_card()
    a, late = make_dx(seed="a"), make_dx(seed="late")
    first = build_sr([make_result(a, card, PROBS)], card)
    _, first_back = _write_read(first, tmp_path, "first.dcm")
    second = build_sr(
        [make_result(a, card, PROBS), make_result(late, card, PROBS)],
        card,
        previous=[first_back],
        instance_number=2,
    )
    path, back = _write_read(second, tmp_path, "second.dcm")
    assert back.SOPInstanceUID != first.SOPInstanceUID
    assert back.SeriesInstanceUID == first.SeriesInstanceUID
    pred = back.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert dciodvfy_errors(path)[0] == []


def test_heatmap_region_outlines_the_largest_component() -> None:
    h = np.zeros((60, 80), np.float32)
    h[10:20, 10:20] = 1.0  # 100 px
    h[30:50, 40:70] = 0.8  # 600 px: the largest
    xy = heatmap_region(h, 0.5)
    assert xy is not None and np.array_equal(xy[0], xy[-1])
    # the outline runs on pixel edges (marching squares cuts corners by half a pixel)
    extents = (xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].min(), xy[:, 1].max())
    np.testing.assert_allclose(extents, (40.0, 70.0, 30.0, 50.0), atol=0.5)
    assert heatmap_region(h, 1.5) is None
    # the box bounds every area at or above the threshold, on pixel edges
    found = evidence_regions(h, 0.5)
    assert found is not None and np.array_equal(found.outline, xy)
    np.testing.assert_array_equal(found.box, [[10, 10], [70, 10], [70, 50], [10, 50], [10, 10]])
    # on a reduced grid, both scale back to the source's pixels
    scaled = evidence_regions(h, 0.5, source_shape=(120, 160))
    assert scaled is not None
    np.testing.assert_array_equal(scaled.box, found.box * 2)
    single = np.zeros((5, 5), np.float32)
    single[2, 3] = 1
    xy1 = heatmap_region(single, 0.5)
    assert xy1 is not None
    extents1 = (xy1[:, 0].min(), xy1[:, 0].max(), xy1[:, 1].min(), xy1[:, 1].max())
    np.testing.assert_allclose(extents1, (3.0, 4.0, 2.0, 3.0), atol=0.5)
    assert len(xy1) >= 4


def test_positive_without_a_high_heatmap_has_no_region() -> None:
    card = make_card(cam_threshold=0.99)
    ds = make_dx()
    heat = np.full((len(LABELS), ds.Rows, ds.Columns), 0.5, np.float32)
    sr = build_sr([make_result(ds, card, PROBS, heat=heat)], card)
    groups = _report(sr).get_image_measurement_groups()
    assert len(groups) == len(LABELS)
    assert not any(g.get_measurements()[0].referenced_coordinates for g in groups)
    assert _report(sr).get_planar_roi_measurement_groups() == []


def test_invalid_inputs_are_output_errors() -> None:
    card = make_card()
    ds = make_dx()
    with pytest.raises(OutputError, match="finite"):
        make_result(ds, card, np.full(14, np.nan))
    with pytest.raises(OutputError, match="exactly one study"):
        build_sr(
            [
                make_result(make_dx(seed="a"), card, PROBS),
                make_result(make_dx(seed="b", study="other"), card, PROBS),
            ],
            card,
        )
    with pytest.raises(OutputError, match="at least one DICOM header"):
        build_sr([], card, skipped=[Skipped("x.dcm", "error", "NOT_DICOM", "not DICOM")])
    no_uid = make_dx()
    del no_uid.SeriesInstanceUID
    with pytest.raises(OutputError, match="SeriesInstanceUID"):
        make_result(no_uid, card, PROBS)


def test_invalid_source_values_are_left_out_not_copied(tmp_path: Path) -> None:
    ds = make_dx()
    with pytest.warns(UserWarning, match="AS"):
        ds.PatientAge = "62"  # AS needs 4 characters, e.g. "062Y": a real-world defect
    card = make_card()
    path, back = _write_read(build_sr([make_result(ds, card, PROBS)], card), tmp_path)
    assert "PatientAge" not in back
    assert dciodvfy_errors(path)[0] == []
