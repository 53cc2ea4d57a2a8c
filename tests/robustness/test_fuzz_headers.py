"""Property test: whatever bytes a source carries in its patient/study text, results are written and valid.

Real headers break the rules (an anonymiser's hash as a birth date, Windows-1251 names
without a Specific Character Set, "MALE" as PatientSex, unknown character set terms).
Each example writes a small chest DX whose chosen attributes hold arbitrary raw bytes,
runs it through the analysis path and requires that the study's SR (and the overlay,
when the image was analysed) are written and pass ``dciodvfy`` with zero errors.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement

from chexnet_dicom.model.backends import load_predictor
from chexnet_dicom.model.predictor import PredictorBase
from chexnet_dicom.outputs import build_outputs, write_outputs
from chexnet_dicom.pipeline import results_for_paths
from chexnet_dicom.testing import synth
from tests.helpers.bundles import make_bundle
from tests.helpers.outputs import dciodvfy_errors
from tests.helpers.shared import require_tool

#: Attributes copied from the source into results (patient, study, series text).
FUZZED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "StudyDescription",
    "InstitutionName",
    "Manufacturer",
)

# Raw values: printable ASCII, Latin-1/Windows-1251 high bytes, backslashes (multi-values),
# control characters and the odd NUL, up to twice the longest VR.
_byte = st.one_of(
    st.integers(0x20, 0x7E),
    st.integers(0xA0, 0xFF),
    st.integers(0x80, 0x9F),
    st.sampled_from([0x5C, 0x00, 0x0A]),
)
_value = st.lists(_byte, max_size=130).map(bytes)
_charset = st.sampled_from(
    [b"", b"ISO_IR 100", b"ISO_IR 192", b"ISO_IR 144", b"ISO_IR 999", b"GB18030", b"\\ISO 2022 IR 87"]
)
_fields = st.dictionaries(st.sampled_from(FUZZED), _value, min_size=1, max_size=6)

_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> PredictorBase:
    require_tool("dciodvfy")
    card = make_bundle(tmp_path_factory.mktemp("fuzz-bundle"))
    return load_predictor(card, device="cpu")


def _write_source(path: Path, fields: dict[str, bytes], charset: bytes) -> None:
    ds = synth.make_dataset(synth.chest_phantom(128, seed=3), seed=3, patient_name="Doe^Jane")
    values = dict(fields)
    if "SpecificCharacterSet" in values:
        values["SpecificCharacterSet"] = charset
    for keyword, raw in values.items():
        tag = tag_for_keyword(keyword)
        assert tag is not None
        value = raw + b" " if len(raw) % 2 else raw  # even length, as the encoding requires
        ds[tag] = RawDataElement(  # type: ignore[assignment]
            pydicom.tag.Tag(tag), dictionary_VR(tag), len(value), value, 0, False, True
        )
    synth.write(ds, path)


def _exercise(predictor: PredictorBase, folder: Path, fields: dict[str, bytes], charset: bytes) -> None:
    folder.mkdir(parents=True)
    _write_source(folder / "a.dcm", fields, charset)
    results = list(results_for_paths([folder], predictor))
    assert len(results) == 1 and not results[0].failed, results[0].failure
    out = folder / "out"
    written = write_outputs(build_outputs(results[0]), out)
    names = {p.name for p in written}
    assert "sr.dcm" in names, names  # the study always gets its SR
    if results[0].images:
        assert any(n.startswith("sc-1-") and n.endswith(".dcm") for n in names)
    for path in written:
        if path.suffix == ".dcm":
            errors, _warnings = dciodvfy_errors(path)
            assert errors == [], (path.name, fields, charset, errors)


@settings(max_examples=15, derandomize=True, **_COMMON)  # type: ignore[arg-type]
@given(fields=_fields, charset=_charset)
def test_arbitrary_header_text_still_gives_valid_results(
    predictor: PredictorBase,
    tmp_path_factory: pytest.TempPathFactory,
    fields: dict[str, bytes],
    charset: bytes,
) -> None:
    _exercise(predictor, tmp_path_factory.mktemp("fuzz") / "study", fields, charset)


@pytest.mark.slow
@settings(max_examples=300, **_COMMON)  # type: ignore[arg-type]
@given(fields=_fields, charset=_charset)
def test_arbitrary_header_text_still_gives_valid_results_slow(
    predictor: PredictorBase,
    tmp_path_factory: pytest.TempPathFactory,
    fields: dict[str, bytes],
    charset: bytes,
) -> None:
    _exercise(predictor, tmp_path_factory.mktemp("fuzz") / "study", fields, charset)
