"""JSON sidecar: content, output UIDs, no identifiers of the source, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.dicom.study import Skipped
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.outputs.sc import build_sc
from chexnet_dicom.outputs.sidecar import SIDECAR_SCHEMA, build_sidecar, hashed_ref, sidecar_text
from chexnet_dicom.outputs.sr import build_sr
from tests.helpers.outputs import make_card, make_dx, make_result

PROBS = np.linspace(0.05, 0.95, 14)


def _study(tmp_path: Path, name: str) -> tuple[Path, dict, list]:
    card = make_card()
    a = make_dx(seed="a", name="Müller^Jürgen", charset="ISO_IR 100")
    lateral = make_dx(seed="lat")
    heat = np.zeros((len(LABELS), a.Rows, a.Columns), np.float32)
    result = make_result(a, card, PROBS, heat=heat, flags=("HEADER_MONOCHROME_MISMATCH",))
    skipped = [Skipped("lat.dcm", "skipped", "VIEW_NOT_FRONTAL", "lateral view", lateral)]
    sr = build_sr([result], card, skipped=skipped)
    sc = build_sc(result, card)
    sidecar = build_sidecar([result], card, skipped=skipped, sr=sr, overlays=[sc])
    path = atomic_write(tmp_path / name, sidecar_text(sidecar))
    return path, sidecar, [a, lateral, sr, sc]


def test_sidecar_content(tmp_path: Path) -> None:
    path, _, (a, lateral, sr, sc) = _study(tmp_path, "result.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["schema"] == SIDECAR_SCHEMA
    assert "RESEARCH USE ONLY" in data["notice"]
    image = data["images"][0]
    assert image["probabilities"] == {label: float(p) for label, p in zip(LABELS, PROBS, strict=True)}
    assert image["present"] == {label: bool(p >= 0.5) for label, p in zip(LABELS, PROBS, strict=True)}
    assert image["flags"] == ["HEADER_MONOCHROME_MISMATCH"]
    assert image["source_ref"] == hashed_ref(a.SOPInstanceUID)
    assert image["outputs"] == [
        {
            "sop_class_uid": sc.SOPClassUID,
            "sop_instance_uid": sc.SOPInstanceUID,
            "series_instance_uid": sc.SeriesInstanceUID,
        }
    ]
    assert data["outputs"]["sr"]["sop_instance_uid"] == sr.SOPInstanceUID
    assert data["skipped"] == [
        {
            "source_ref": hashed_ref(lateral.SOPInstanceUID),
            "reason": "VIEW_NOT_FRONTAL",
            "message": "lateral view",
        }
    ]
    assert data["model"]["device_uid"] == make_card().device_uid
    assert data["model"]["operating_points"]["Hernia"]["threshold"] == 0.5
    assert data["study_summary"]["findings"]["Hernia"]["max_probability"] == PROBS[-1]
    assert data["finding_codes"]["Pneumothorax"] == ["SCT", "36118008", "Pneumothorax"]


def test_sidecar_holds_no_source_identifiers(tmp_path: Path) -> None:
    path, _, (a, lateral, _, _) = _study(tmp_path, "result.json")
    text = path.read_text(encoding="utf-8")
    for value in (
        a.SOPInstanceUID,
        lateral.SOPInstanceUID,
        a.SeriesInstanceUID,
        a.PatientID,
        a.AccessionNumber,
    ):
        assert str(value) not in text
    assert "Müller" not in text and "M\\u00fcller" not in text and "Muller" not in text
    assert text.isascii()


def test_sidecar_is_deterministic(tmp_path: Path) -> None:
    first, _, _ = _study(tmp_path, "one.json")
    second, _, _ = _study(tmp_path, "two.json")
    assert first.read_bytes() == second.read_bytes()
