"""One reason code per defect: a bad Image Pixel integer gives CORRUPT_HEADER at every stage.

The same file goes through each stage that can meet the defect first: the scan (header
gate), ``check_file``, ``load_image``, ``decode_stored`` and ``render``.  Whichever meets
it, the reason is the same.  An attribute used only to order images never fails a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement

from chexnet_dicom.dicom.check import check_file
from chexnet_dicom.dicom.decode import StoredPixels, decode_stored
from chexnet_dicom.dicom.load import load_image
from chexnet_dicom.dicom.pixels import render
from chexnet_dicom.dicom.read import read_dataset
from chexnet_dicom.dicom.study import scan
from chexnet_dicom.errors import InputError
from chexnet_dicom.testing import synth

#: name -> (keyword, VR written, raw value): text under a wrong explicit VR, or out of range.
DEFECTS = {
    "rows-text": ("Rows", "LO", b"abc "),
    "columns-text": ("Columns", "IS", b"12x "),
    "frames-1A": ("NumberOfFrames", "IS", b"1A"),
    "bits-stored-0": ("BitsStored", "US", (0).to_bytes(2, "little")),
    "bits-stored-above-allocated": ("BitsStored", "US", (17).to_bytes(2, "little")),
    "bits-allocated-text": ("BitsAllocated", "CS", b"SIXTEEN "),
    "pixel-representation-2": ("PixelRepresentation", "US", (2).to_bytes(2, "little")),
    "rows-two-values": ("Rows", "IS", b"64\\64 "),
}


def _file(path: Path, keyword: str, vr: str, raw: bytes) -> Path:
    ds = synth.make_dataset(synth.chest_phantom((64, 64), seed=9), bits_stored=12, seed=9)
    tag = tag_for_keyword(keyword)
    assert tag is not None
    value = raw + b" " if len(raw) % 2 else raw
    ds[tag] = RawDataElement(pydicom.tag.Tag(tag), vr, len(value), value, 0, False, True)  # type: ignore[assignment]
    synth.write(ds, path)
    return path


def _reason(fn: object) -> str:
    try:
        fn()  # type: ignore[operator]
    except InputError as exc:
        return exc.reason
    return "no error"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_every_stage_gives_the_same_reason(defect: str, tmp_path: Path) -> None:
    keyword, vr, raw = DEFECTS[defect]
    path = _file(tmp_path / "bad.dcm", keyword, vr, raw)
    found = scan([path])
    stages = {
        "scan": next((s.reason for s in found.unassigned), "no error"),
        "check": check_file(path).reason,
        "load_image": _reason(lambda: load_image(path)),
    }
    # the later stages on a dataset that reached them (a caller holding a parsed dataset)
    try:
        ds = read_dataset(path)
    except InputError as exc:
        stages["read"] = exc.reason
    else:
        stages["decode_stored"] = _reason(lambda: decode_stored(ds))
        stored = StoredPixels(array=np.zeros((64, 64), np.uint16))
        stages["render"] = _reason(lambda: render(ds, stored))
    assert set(stages.values()) == {"CORRUPT_HEADER"}, stages


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("raw", [b"abc ", b"1.5 ", b"-3"])
def test_an_attribute_used_only_for_ordering_never_fails_a_file(raw: bytes, tmp_path: Path) -> None:
    path = _file(tmp_path / "ok.dcm", "InstanceNumber", "IS", raw)
    (study,) = scan([path]).studies
    assert [i.path for i in study.selected] == [str(path)] and study.selected[0].instance_number is None
    assert check_file(path).status == "accepted"
    assert load_image(path).display.image.shape == (64, 64)
