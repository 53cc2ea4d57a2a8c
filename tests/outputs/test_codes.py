"""Every standard code we write exists in pydicom's PS3.16 dictionaries, verbatim."""

from __future__ import annotations

import pytest
from pydicom.sr.codedict import codes

from chexnet_dicom.model.labels import (
    DISPLAY_NAMES,
    FINDING_CODES,
    LABELS,
    PRIVATE_SCHEME,
    SNOMED_BEYOND_PS316,
    label_index,
)
from chexnet_dicom.outputs import codes as cc


def _standard(scheme: str) -> dict[str, set[str]]:
    """code value -> meanings, for one scheme of pydicom's dictionary."""
    collection = getattr(codes, scheme)
    out: dict[str, set[str]] = {}
    for keyword in collection.dir():
        code = getattr(collection, keyword)
        out.setdefault(code.value, set()).add(code.meaning)
    return out


STANDARD = {scheme: _standard(scheme) for scheme in ("SCT", "DCM", "UCUM")}


def test_every_finding_has_a_code_in_label_order() -> None:
    assert list(FINDING_CODES) == list(LABELS)
    assert len({(c.scheme, c.value) for c in FINDING_CODES.values()}) == len(LABELS)


@pytest.mark.parametrize("label", LABELS)
def test_finding_code_is_standard_and_verbatim_or_private(label: str) -> None:
    code = FINDING_CODES[label]
    if code.scheme == PRIVATE_SCHEME:
        assert code.scheme.startswith("99"), "private designators start with 99 (PS3.3 8.2)"
        assert len(code.value) <= 16 and not code.value.isdigit(), "private values must not look like SCT/DCM"
        return
    assert code.scheme in STANDARD, code
    if code.scheme == "SCT" and code.value in SNOMED_BEYOND_PS316:  # documented SNOMED CT concepts
        assert code.value not in STANDARD["SCT"], "now in PS3.16: take it from pydicom's dictionary"
        assert code.meaning == SNOMED_BEYOND_PS316[code.value]
        return
    assert code.value in STANDARD[code.scheme], f"{code} is not in pydicom's {code.scheme} dictionary"
    assert code.meaning in STANDARD[code.scheme][code.value], (code, STANDARD[code.scheme][code.value])


def test_private_findings_really_have_no_standard_code_in_pydicom() -> None:
    """A private code is only allowed when pydicom's dictionaries have no such concept."""
    meanings = {m.lower() for scheme in ("SCT", "DCM") for ms in STANDARD[scheme].values() for m in ms}
    private = [c for c in FINDING_CODES.values() if c.scheme == PRIVATE_SCHEME]
    assert len(private) == 2
    for code in private:
        assert code.meaning.lower() not in meanings, f"{code.meaning} has a standard code: use it"


def test_standard_findings_count() -> None:
    assert sum(c.scheme != PRIVATE_SCHEME for c in FINDING_CODES.values()) == 12


@pytest.mark.parametrize(
    "concept",
    [
        cc.PROBABILITY,
        cc.PROBABILITY_UNIT,
        cc.PRESENT,
        cc.ABSENT,
        cc.PROCEDURE_REPORTED,
        cc.OUTLINE,
        cc.BOUNDED_BY,
    ],
    ids=lambda c: c.meaning,
)
def test_other_standard_concepts_are_in_pydicom(concept: object) -> None:
    scheme, value, meaning = concept.scheme_designator, concept.value, concept.meaning  # type: ignore[attr-defined]
    assert meaning in STANDARD[scheme][value]


def test_qualitative_evaluations_concept_is_the_tid1500_row12_code() -> None:
    # Not in pydicom's dictionary (no UMLS entry); PS3.16 TID 1500 row 12.
    assert (cc.QUALITATIVE_EVALUATIONS.value, cc.QUALITATIVE_EVALUATIONS.scheme_designator) == (
        "C0034375",
        "UMLS",
    )
    assert cc.QUALITATIVE_EVALUATIONS.meaning == "Qualitative Evaluations"


def test_private_scheme_is_declared() -> None:
    assert cc.PRIVATE_SCHEME_ITEM.CodingSchemeDesignator == PRIVATE_SCHEME
    assert cc.NOT_ANALYSED.scheme_designator == PRIVATE_SCHEME


def test_unknown_finding_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no code"):
        cc.finding_concept("Fracture")


def test_each_finding_has_one_display_spelling_its_code_meaning() -> None:
    """Legend, table, series descriptions and SR text share one spelling per finding."""
    for label in LABELS:
        assert DISPLAY_NAMES[label] == FINDING_CODES[label].meaning == cc.finding_concept(label).meaning
        # machine key, old display form and the display name all find the finding
        for name in (label, label.replace("_", " "), DISPLAY_NAMES[label], DISPLAY_NAMES[label].upper()):
            assert label_index(name) == LABELS.index(label)
    assert DISPLAY_NAMES["Pleural_Thickening"] == "Pleural thickening"
    assert DISPLAY_NAMES["Effusion"] == "Pleural effusion"
    with pytest.raises(KeyError, match="unknown finding"):
        label_index("Pleural")
