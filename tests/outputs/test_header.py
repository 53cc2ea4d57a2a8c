"""Copying real source headers into outputs: invalid values and character sets."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from chexnet_dicom.outputs.charset import settle_character_set
from chexnet_dicom.outputs.header import evidence_header, sanitize_copied
from tests.helpers.outputs import make_dx


def _header(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"PatientName": "Doe^John"}, None),  # ASCII: nothing to declare
        ({"PatientName": "Müller^Jörg"}, "ISO_IR 100"),  # Latin-1 text, undeclared
        ({"PatientName": "山田^太郎"}, "ISO_IR 192"),  # not Latin-1: UTF-8
        ({"PatientName": "Müller^Jörg", "SpecificCharacterSet": "ISO_IR 100"}, None),  # declared
        ({"PatientName": "Müller^Jörg", "SpecificCharacterSet": "ISO_IR 999"}, "ISO_IR 100"),  # unknown
        ({"PatientName": "Doe^John", "SpecificCharacterSet": "ISO_IR 999"}, None),  # unknown, ASCII
    ],
)
def test_undeclared_or_unknown_character_sets_are_declared(values: dict, expected: str | None) -> None:
    ds = _header(**values)
    declared_before = values.get("SpecificCharacterSet")
    assert settle_character_set(ds) == expected
    if expected is not None:
        assert ds.SpecificCharacterSet == expected
    elif declared_before in (None, "ISO_IR 999"):
        assert "SpecificCharacterSet" not in ds  # an unknown term is never passed on
    else:
        assert ds.SpecificCharacterSet == declared_before


def test_invalid_values_are_emptied_or_dropped_but_uids_are_kept() -> None:
    ds = _header(
        PatientBirthDate="d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f",  # type 2
        AccessionNumber="x" * 56,  # SH is at most 16 characters; type 2
        PatientAge="62",  # AS needs a unit; optional
        StudyInstanceUID="1.2.826.0.1.3680043.9.5208.00899525621963905141",  # leading zero: invalid UI
    )
    changed = sanitize_copied(ds)
    assert sorted(changed) == ["AccessionNumber", "PatientAge", "PatientBirthDate"]
    assert not ds.PatientBirthDate and not ds.AccessionNumber and "PatientAge" not in ds
    assert "PatientBirthDate" in ds and "AccessionNumber" in ds  # type 2: present, empty
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.9.5208.00899525621963905141"


def test_the_evidence_header_never_changes_the_source() -> None:
    src = make_dx(rows=64, cols=64)
    src.PatientBirthDate = "not-a-date"
    src.PatientSex = "MALE"  # valid CS, but not an enumerated value: highdicom refuses it
    src.PatientName = "Müller^Jörg"
    if "SpecificCharacterSet" in src:
        del src.SpecificCharacterSet
    header = evidence_header(src)
    assert not header.PatientBirthDate and header.SpecificCharacterSet == "ISO_IR 100"
    assert "PatientSex" in header and not header.PatientSex
    assert src.PatientBirthDate == "not-a-date" and "SpecificCharacterSet" not in src
    assert src.PatientSex == "MALE"
    assert "PixelData" not in header


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (["", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 87"]),  # empty value 1 = default repertoire
        ("ISO 2022 IR 100", "ISO_IR 192"),  # valid DICOM, but highdicom refuses a lone extension
        ("", None),  # present but empty: undeclared, and the text is ASCII
    ],
)
def test_character_set_forms_highdicom_refuses_are_made_writable(declared: object, expected: object) -> None:
    ds = _header(PatientName="Doe^John", SpecificCharacterSet=declared)
    settle_character_set(ds)
    if expected is None:
        assert "SpecificCharacterSet" not in ds
    else:
        got = ds.SpecificCharacterSet
        assert (list(got) if not isinstance(got, str) else got) == expected


def test_undeclared_windows_1251_is_decoded_and_written_as_utf8() -> None:
    import pydicom

    from tests.helpers.shared import shared_path

    src = pydicom.dcmread(
        shared_path("dicom", "chest", "DX_J2K_0Padding.dcm"), stop_before_pixels=True, force=True
    )
    assert "SpecificCharacterSet" not in src
    header = evidence_header(src)
    assert header.SpecificCharacterSet == "ISO_IR 192"
    family = str(header.PatientName).split("^")[0]
    assert family == bytes(src.PatientName.original_string).split(b"^")[0].decode("cp1251")
    assert all("\u0400" <= ch <= "\u04ff" for ch in family)  # readable Cyrillic, no mojibake


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Müller^Jürgen".encode("latin-1"), None),  # short Latin-1: any code page fits, not confident
        ("Емельянова^Антонина".encode(), "utf_8"),
        (b"plain", None),
    ],
)
def test_detect_encoding_is_conservative(raw: bytes, expected: str | None) -> None:
    from chexnet_dicom.outputs.charset import detect_encoding

    assert detect_encoding([raw]) == expected
