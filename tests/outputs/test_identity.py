"""A source value the results cannot keep is recorded in them, not lost (966_fixed's AccessionNumber).

966_fixed carries a 56-character AccessionNumber (SH holds 16 in every character set) and
an anonymiser's hash as PatientBirthDate.  The SR and the SC carry both empty (type 2),
and each says so in its Original Attributes Sequence: the attribute, the reason, the
modifying system and the source's value byte for byte; ``dciodvfy`` reports no error.
The SR is built on 966_fixed's real header; the SC (which needs a heatmap on the source
grid, 2000 x 2128 there) on a small image carrying the same AccessionNumber.  PixelMed's
validator runs on 966_fixed's SR from a real ``infer`` in ``test_real_outputs.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.outputs.identity import left_out_of
from chexnet_dicom.outputs.sc import build_sc
from chexnet_dicom.outputs.sr import build_sr
from chexnet_dicom.outputs.write import write_dataset
from tests.helpers.outputs import dciodvfy_errors, make_card, make_dx, make_result, real_source

ACCESSION = Tag("AccessionNumber")
PROBS = np.linspace(0.1, 0.9, len(LABELS))


def _check_recorded(path: Path, source: Dataset, raw: bytes, keywords: set[str]) -> None:
    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert "AccessionNumber" in ds and not ds.AccessionNumber  # type 2: present, empty
    items = {
        int(item.NonconformingModifiedAttributesSequence[0].SelectorAttribute): item
        for item in ds.OriginalAttributesSequence
    }
    assert set(items) == {int(Tag(kw)) for kw in keywords}
    item = items[int(ACCESSION)]
    (entry,) = item.NonconformingModifiedAttributesSequence
    assert bytes(entry.NonconformingDataElementValue).rstrip(b" ") == raw.rstrip(b" ")
    assert entry.SelectorValueNumber == 0
    (modified,) = item.ModifiedAttributesSequence
    assert "AccessionNumber" in modified and not modified.AccessionNumber
    assert item.ReasonForTheAttributeModification == "CORRECT"
    assert item.ModifyingSystem.startswith("chexnet-dicom ")
    assert item.AttributeModificationDateTime == f"{ds.ContentDate}{ds.ContentTime}"
    errors, _ = dciodvfy_errors(path)
    assert errors == [], (path.name, errors)


def test_966_fixed_sr_records_its_accession_number_and_birth_date(tmp_path: Path) -> None:
    source = real_source("966_fixed.dcm")
    raw = bytes(source.get_item(ACCESSION).value)  # the bytes as stored in the file
    assert len(str(source.AccessionNumber)) == 56
    card = make_card()
    path = write_dataset(build_sr([make_result(source, card, PROBS)], card), tmp_path / "sr.dcm")
    _check_recorded(path, source, raw, {"AccessionNumber", "PatientBirthDate"})


def test_an_sc_records_an_over_long_accession_number(tmp_path: Path) -> None:
    source = make_dx(rows=64, cols=64)
    source.AccessionNumber = "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f"  # 56 characters
    card = make_card()
    heat = np.zeros((len(LABELS), 64, 64), np.float32)
    heat[:, 20:40, 20:40] = 1.0
    sc = build_sc(make_result(source, card, PROBS, heat=heat), card)
    path = write_dataset(sc, tmp_path / "sc.dcm")
    _check_recorded(path, source, source.AccessionNumber.encode("ascii"), {"AccessionNumber"})


def test_nothing_is_recorded_when_every_value_is_kept() -> None:
    source = Dataset()
    source.AccessionNumber, source.PatientID, source.StudyID = "A" * 17, "P\x01", ""
    source.StudyDescription = "valid, but not every result copies it"
    kept = Dataset()
    assert left_out_of(kept, source) == ["PatientID", "AccessionNumber"]  # COPIED_IDENTITY order
    source.AccessionNumber, source.PatientID = "A123", "P1"
    assert left_out_of(kept, source) == []  # valid values a result leaves out are not modifications
    sr = build_sr([make_result(make_dx(), make_card(), PROBS)], make_card())
    assert "OriginalAttributesSequence" not in sr  # a clean source: nothing to record
