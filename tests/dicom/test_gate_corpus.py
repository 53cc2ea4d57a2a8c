"""The acceptance gate: every file of the real corpus, and synthetic headers per rule."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from chexnet_dicom.dicom import gate, reasons
from chexnet_dicom.dicom.check import check_file
from chexnet_dicom.dicom.flags import (
    FLAG_BODY_PART_UNKNOWN,
    FLAG_FOR_PROCESSING,
    FLAG_SECONDARY_CAPTURE,
    FLAG_VIEW_UNKNOWN,
)
from chexnet_dicom.dicom.gate import gate_header
from chexnet_dicom.dicom.read import read_dataset
from chexnet_dicom.dicom.reasons import (
    BODY_PART,
    COLOR,
    CORRUPT_HEADER,
    CORRUPT_PIXELS,
    ERROR_REASONS,
    MODALITY,
    MULTIFRAME,
    NOT_DICOM,
    NOT_HUMAN,
    NOT_IMAGE,
    REASON_PRECEDENCE,
    TOO_LARGE,
    UNSUPPORTED_CODEC,
    VIEW_NOT_FRONTAL,
)
from chexnet_dicom.testing import synth

MiB = 1024 * 1024


def _code(value: str, scheme: str, meaning: str) -> Sequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return Sequence([item])


# file -> (status, reason, message fragment, view evidence for accepted files)
EXPECTED: dict[str, tuple[str, str | None, str, str]] = {
    # chest/: all accepted
    "chest/966_fixed.dcm": ("accepted", None, "frontal chest radiograph (DX", "ViewPosition:PA"),
    "chest/CR-MONO1-10-chest.dcm": ("accepted", None, "frontal chest radiograph (CR", "ViewPosition:PA"),
    "chest/DX_J2K_0Padding.dcm": ("accepted", None, "body part none", "PatientOrientation:H\\L"),
    "chest/RG1_J2KI.dcm": ("accepted", None, "BodyPartExamined:CHEST", "ViewPosition:PA"),
    "chest/nih_gcloud_no_finding.dcm": ("accepted", None, "view none", "none"),
    "chest/siim_6904.dcm": ("accepted", None, "BodyPartExamined:CHEST", "ViewPosition:PA"),
    "chest/siim_6904_fake_monochrome1.dcm": ("accepted", None, "(CR;", "ViewPosition:PA"),
    # other_xray/: projection radiographs that are not frontal human chests
    "other_xray/CR-ModalitySequenceLUT.dcm": ("skipped", BODY_PART, "SeriesDescription:TEETH", ""),
    "other_xray/CR_Kakadu_J2K.dcm": ("skipped", BODY_PART, "BodyPartExamined:HAND", ""),
    "other_xray/CR_cspine_6154.dcm": ("skipped", BODY_PART, "BodyPartExamined:CSPINE", ""),
    "other_xray/DX_dog_lateral_thorax.dcm": ("skipped", NOT_HUMAN, "names an animal (CANINE)", ""),
    "other_xray/MG_OutOfBoundsOverlay.dcm": ("skipped", MODALITY, "Mammography", ""),
    "other_xray/RG2_hip_JLSL.dcm": ("skipped", BODY_PART, "BodyPartExamined:HIP", ""),
    "other_xray/RG3_tibia_J2KR.dcm": ("skipped", BODY_PART, "BodyPartExamined:EXTREMITY", ""),
    # non_xray/
    "non_xray/CT_small.dcm": ("skipped", MODALITY, "CT Image Storage (Modality CT)", ""),
    "non_xray/ExplVR_BigEnd.dcm": ("skipped", MODALITY, "Ultrasound Image Storage (Modality US)", ""),
    "non_xray/HTJ2KLossless_08_RGB.dcm": ("skipped", MODALITY, "Secondary Capture (Modality missing)", ""),
    "non_xray/MR_multiframe_emri_small.dcm": ("skipped", MODALITY, "Enhanced MR Image Storage", ""),
    "non_xray/MR_small.dcm": ("skipped", MODALITY, "MR Image Storage (Modality MR)", ""),
    "non_xray/NM_jpeg_xl_unsupported.dcm": ("skipped", MODALITY, "Secondary Capture (Modality NM)", ""),
    "non_xray/RTImageStorage.dcm": ("skipped", MODALITY, "RT Image Storage (Modality RTIMAGE)", ""),
    "non_xray/SCImageStorage_Deflated.dcm": ("skipped", MODALITY, "Secondary Capture (Modality OT)", ""),
    "non_xray/SC_rgb.dcm": ("skipped", MODALITY, "Secondary Capture (Modality OT)", ""),
    "non_xray/examples_palette.dcm": ("skipped", MODALITY, "Ultrasound Image Storage (Modality US)", ""),
    "non_xray/image_dfl.dcm": ("skipped", MODALITY, "Secondary Capture (Modality OT)", ""),
    "non_xray/liver_1frame.dcm": ("skipped", MODALITY, "Segmentation Storage (Modality SEG)", ""),
    "non_xray/test-SR.dcm": ("skipped", NOT_IMAGE, "no Rows/Columns (Modality SR)", ""),
    "non_xray/waveform_ecg.dcm": ("skipped", NOT_IMAGE, "no Rows/Columns (Modality ECG)", ""),
    # broken/: a typed error, or a header skip when the header already rules the file out
    "broken/966_broken_codestream.dcm": ("error", CORRUPT_PIXELS, "could not be decoded", "ViewPosition:PA"),
    "broken/MR_truncated.dcm": ("skipped", MODALITY, "MR Image Storage", ""),
    "broken/badVR.dcm": ("error", CORRUPT_HEADER, "NumberOfFrames is not an integer ('1A')", ""),
    "broken/emri_small_jpeg_2k_lossless_too_short.dcm": (
        "skipped",
        MODALITY,
        "Enhanced MR Image Storage",
        "",
    ),
    "broken/genFile_bad_jpeg.dcm": ("skipped", MODALITY, "no Modality and a SOP class that is not CR/DX", ""),
    "broken/meta_missing_tsyntax.dcm": ("skipped", NOT_IMAGE, "no Rows/Columns", ""),
    "broken/no_meta.dcm": ("error", NOT_DICOM, "do not start with a DICOM element", ""),
    "broken/rtplan_truncated.dcm": (
        "error",
        CORRUPT_HEADER,
        "declares 976 bytes but the file ends after 711",
        "",
    ),
}


def test_table_lists_every_corpus_file(shared_dicom: Path) -> None:
    present = {p.relative_to(shared_dicom).as_posix() for p in shared_dicom.glob("*/*") if p.is_file()}
    assert present == set(EXPECTED), "update EXPECTED for added/removed corpus files"


def _measured(fn: Any) -> tuple[Any, float, int]:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        result = fn()
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, elapsed, peak


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_header_gate(shared_dicom: Path, name: str) -> None:
    """Header-only check: the expected outcome with bounded time (a hang-catcher) and a few MB."""
    status, reason, fragment, view = EXPECTED[name]
    result, elapsed, peak = _measured(lambda: check_file(shared_dicom / name, decode=False))
    if reason == CORRUPT_PIXELS:  # found only by decoding: the header gate accepts it
        assert (result.status, result.reason) == ("accepted", None)
    else:
        assert (result.status, result.reason) == (status, reason), result.message
        assert fragment in result.message
    if status == "accepted":
        assert result.view_evidence == view
    assert elapsed < 30.0, f"{name}: {elapsed:.2f} s"  # a hang-catcher, not a speed claim
    assert peak < 16 * MiB, f"{name}: {peak / MiB:.1f} MiB"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if e[0] != "skipped"))
def test_corpus_check_with_decode(shared_dicom: Path, name: str) -> None:
    """Accepted files decode; the broken codestream becomes a typed pixel error."""
    status, reason, fragment, view = EXPECTED[name]
    result, elapsed, peak = _measured(lambda: check_file(shared_dicom / name))
    assert (result.status, result.reason) == (status, reason), result.message
    assert fragment in result.message
    if view:
        assert result.view_evidence == view
    if status == "accepted":
        assert result.decode_path
    # generous hang/memory bounds (decode time belongs to dicom.decode; see the report)
    assert elapsed < 60.0, f"{name}: {elapsed:.2f} s"  # a hang-catcher, not a speed claim
    assert peak < 300 * MiB, f"{name}: {peak / MiB:.1f} MiB"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_accepted_flags(shared_dicom: Path) -> None:
    nih = check_file(shared_dicom / "chest" / "nih_gcloud_no_finding.dcm", decode=False)
    assert {FLAG_VIEW_UNKNOWN, FLAG_BODY_PART_UNKNOWN, FLAG_SECONDARY_CAPTURE} <= set(nih.flags)
    pad = check_file(shared_dicom / "chest" / "DX_J2K_0Padding.dcm", decode=False)
    assert FLAG_BODY_PART_UNKNOWN in pad.flags and FLAG_VIEW_UNKNOWN not in pad.flags
    cr = check_file(shared_dicom / "chest" / "CR-MONO1-10-chest.dcm", decode=False)
    assert cr.flags == ()


def _header(shared_dicom: Path, name: str) -> Dataset:
    return read_dataset(shared_dicom / name, stop_before_pixels=True)


def test_dog_is_also_lateral_and_cspine_also_not_frontal(shared_dicom: Path) -> None:
    """Behind the first reason, the real headers carry the other evidence too."""
    dog = _header(shared_dicom, "other_xray/DX_dog_lateral_thorax.dcm")
    dog.AcquisitionDeviceProcessingDescription = "LATERAL THORAX 0-15cm"
    del dog.PerformedProtocolCodeSequence
    d = gate_header(dog)
    assert (d.reason, d.view_evidence) == (VIEW_NOT_FRONTAL, "AcquisitionDeviceProcessingDescription:LATERAL")
    spine = _header(shared_dicom, "other_xray/CR_cspine_6154.dcm")
    spine.BodyPartExamined = "CHEST"
    spine.SeriesDescription = "Chest"
    spine.StudyDescription = "Chest"
    d = gate_header(spine)
    assert (d.reason, d.view_evidence) == (VIEW_NOT_FRONTAL, "ViewPosition:LL")


def test_real_jpeg_xl_header_is_unsupported_codec(shared_dicom: Path) -> None:
    ds = _header(shared_dicom, "non_xray/NM_jpeg_xl_unsupported.dcm")
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    d = gate_header(ds)
    assert d.reason == UNSUPPORTED_CODEC and "JPEG XL" in d.message


# --------------------------------------------------------------------------------------
# Synthetic headers, one rule at a time
# --------------------------------------------------------------------------------------


def _chest(**kw: Any) -> Dataset:
    ds = synth.make_dataset(synth.chest_phantom((32, 32), seed=3), **kw)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    return ds


def test_plain_chest_accepted() -> None:
    d = gate_header(_chest())
    assert d.accepted and d.reason is None and d.view_evidence == "ViewPosition:PA"
    assert d.body_part_evidence == "BodyPartExamined:CHEST"


@pytest.mark.parametrize(
    ("edit", "reason", "evidence"),
    [
        ({"ViewPosition": "LL"}, VIEW_NOT_FRONTAL, "ViewPosition:LL"),
        ({"ViewPosition": "RLD"}, VIEW_NOT_FRONTAL, "ViewPosition:RLD"),
        ({"ViewPosition": "LATERAL"}, VIEW_NOT_FRONTAL, "ViewPosition:LATERAL"),
        ({"ViewPosition": None, "SeriesDescription": "Chest Lat"}, VIEW_NOT_FRONTAL, "SeriesDescription:LAT"),
        ({"ViewPosition": None, "ProtocolName": "THORAX OBLIQUE"}, VIEW_NOT_FRONTAL, "ProtocolName:OBLIQUE"),
        (
            {"ViewPosition": None, "PatientOrientation": ["A", "F"]},
            VIEW_NOT_FRONTAL,
            "PatientOrientation:A\\F",
        ),
        (
            {"ViewPosition": None, "PatientOrientation": ["P", "FL"]},
            VIEW_NOT_FRONTAL,
            "PatientOrientation:P\\FL",
        ),
        ({"ViewPosition": None, "PatientOrientation": ["H", "R"]}, None, "PatientOrientation:H\\R"),
        ({"ViewPosition": None, "StudyDescription": "XR CHEST AP PORTABLE"}, None, "StudyDescription:AP"),
        ({"ViewPosition": None, "ImageLaterality": "B"}, None, "ImageLaterality:B"),
        ({"ViewPosition": None, "SeriesDescription": "LL nodule follow-up"}, None, "none"),
    ],
)
def test_view_evidence(edit: dict[str, Any], reason: str | None, evidence: str) -> None:
    ds = _chest(view_code=False, patient_orientation=None, study_description="CHEST PA AND LAT")
    ds.SeriesDescription = "chest"
    for key, value in edit.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    d = gate_header(ds)
    assert d.reason == reason, d.message
    assert d.view_evidence == evidence


def test_view_code_sequence_when_view_position_missing() -> None:
    ds = _chest(view_position="LL", view_code=True)
    del ds.ViewPosition
    assert "ViewCodeSequence" in ds
    d = gate_header(ds)
    assert d.reason == VIEW_NOT_FRONTAL and d.view_evidence.startswith("ViewCodeSequence:")
    ds = _chest(view_position="PA", view_code=True)
    del ds.ViewPosition
    d = gate_header(ds)
    assert d.accepted and d.view_evidence.startswith("ViewCodeSequence:")


def test_no_view_evidence_is_accepted_and_flagged() -> None:
    ds = _chest(
        view_position=None, view_code=False, patient_orientation=None, study_description="CHEST 2 VIEWS"
    )
    ds.ImageLaterality = "U"
    d = gate_header(ds)
    assert d.accepted and FLAG_VIEW_UNKNOWN in d.flags and d.view_evidence == "none"


@pytest.mark.parametrize(
    ("edit", "reason", "fragment"),
    [
        ({"BodyPartExamined": "SKULL"}, BODY_PART, "BodyPartExamined:SKULL"),
        (
            {"BodyPartExamined": None, "AnatomicRegionSequence": None, "SeriesDescription": "R HAND 3 VIEWS"},
            BODY_PART,
            "SeriesDescription:HAND",
        ),
        (
            {
                "BodyPartExamined": None,
                "AnatomicRegionSequence": None,
                "SeriesDescription": "x",
                "StudyDescription": "XR C-SPINE",
            },
            BODY_PART,
            "StudyDescription:CSPINE",
        ),
        (
            {"BodyPartExamined": None, "AnatomicRegionSequence": _code("T-15460", "SRT", "Knee")},
            BODY_PART,
            "T-15460",
        ),
        ({"BodyPartExamined": "THORACIC SPINE"}, BODY_PART, "BodyPartExamined:SPINE"),
        ({"PatientSpeciesDescription": "Canis lupus familiaris"}, NOT_HUMAN, "PatientSpeciesDescription"),
        ({"PatientBreedDescription": "Beagle"}, NOT_HUMAN, "breed"),
        ({"SeriesDescription": "FELINE THORAX VD"}, NOT_HUMAN, "FELINE"),
        ({"Modality": "MG"}, MODALITY, "Modality MG"),
        ({"PhotometricInterpretation": "RGB", "SamplesPerPixel": 3}, COLOR, "PhotometricInterpretation RGB"),
        ({"PhotometricInterpretation": "PALETTE COLOR"}, COLOR, "PALETTE COLOR"),
        ({"NumberOfFrames": 3}, MULTIFRAME, "3 frames"),
        ({"Rows": None}, NOT_IMAGE, "no Rows/Columns"),
        ({"Rows": 0}, CORRUPT_HEADER, "Rows or Columns is 0"),
        ({"Rows": 60000, "Columns": 60000}, TOO_LARGE, "Rows 60000 exceeds the cap"),
    ],
)
def test_header_rules(edit: dict[str, Any], reason: str, fragment: str) -> None:
    ds = _chest()
    for key, value in edit.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    d = gate_header(ds)
    assert (d.accepted, d.reason) == (False, reason)
    assert fragment in d.message


def test_human_species_accepted() -> None:
    ds = _chest()
    ds.PatientSpeciesDescription = "Homo sapiens"
    assert gate_header(ds).accepted


def test_secondary_capture_rules() -> None:
    sc = _chest(modality="SC", modality_value="OT", body_part=None, study_description="CHEST XRAY PA")
    d = gate_header(sc)
    assert d.accepted and FLAG_SECONDARY_CAPTURE in d.flags
    sc = _chest(modality="SC", modality_value="OT", body_part=None, study_description="scanned document")
    sc.SeriesDescription = "page 1"
    assert gate_header(sc).reason == MODALITY
    sc = _chest(modality="SC", modality_value="OT", body_part=None, study_description="CT CHEST screenshot")
    assert gate_header(sc).reason == MODALITY
    sc = _chest(modality="SC", modality_value="DX", body_part=None)
    assert gate_header(sc).accepted


def test_for_processing_flag() -> None:
    d = gate_header(_chest(presentation_intent="FOR PROCESSING"))
    assert d.accepted and FLAG_FOR_PROCESSING in d.flags


def test_unsupported_codec_is_a_skip_before_decoding(tmp_path: Path) -> None:
    ds = _chest()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.110"  # JPEG XL lossless
    d = gate_header(ds)
    assert (d.accepted, d.reason) == (False, UNSUPPORTED_CODEC)


def test_precedence_first_failing_check_wins() -> None:
    """Break two rules at once: the reason is the earlier one in REASON_PRECEDENCE."""
    breakers: dict[str, dict[str, Any]] = {
        NOT_IMAGE: {"Columns": None},
        MODALITY: {"Modality": "CT"},
        COLOR: {"PhotometricInterpretation": "RGB", "SamplesPerPixel": 3},
        MULTIFRAME: {"NumberOfFrames": 2},
        NOT_HUMAN: {"PatientSpeciesDescription": "Felis catus"},
        BODY_PART: {"BodyPartExamined": "KNEE"},
        VIEW_NOT_FRONTAL: {"ViewPosition": "LL"},
    }
    order = [r for r in REASON_PRECEDENCE if r in breakers]
    assert order == list(breakers)
    for i, first in enumerate(order):
        for second in order[i + 1 :]:
            ds = _chest()
            for edit in (breakers[second], breakers[first]):
                for key, value in edit.items():
                    if value is None:
                        delattr(ds, key)
                    else:
                        setattr(ds, key, value)
            assert gate_header(ds).reason == first, (first, second)


def test_reason_table_is_consistent() -> None:
    assert len(set(REASON_PRECEDENCE)) == len(REASON_PRECEDENCE)
    for code in REASON_PRECEDENCE:
        assert getattr(reasons, code) == code
        assert f"``{code}``" in (gate.__doc__ or "")
    assert set(REASON_PRECEDENCE) <= set(reasons.REASONS)
    assert {NOT_DICOM, CORRUPT_HEADER, TOO_LARGE, CORRUPT_PIXELS} <= ERROR_REASONS
    for code, (status, _meaning) in reasons.REASONS.items():
        assert getattr(reasons, code) == code and reasons.status_for(code) == status


def test_skipped_files_are_never_pixel_decoded(tmp_path: Path) -> None:
    """A lateral file with garbage pixel data is skipped (not an error); a frontal one errors."""
    for view, expected in (("LL", ("skipped", VIEW_NOT_FRONTAL)), ("PA", ("error", CORRUPT_PIXELS))):
        ds = synth.encode(_chest(view_position=view, view_code=False), "1.2.840.10008.1.2.4.90")
        ds.PixelData = ds.PixelData[:40] + b"\x00" * 64 + ds.PixelData[-32:]
        path = tmp_path / f"{view}.dcm"
        synth.write(ds, path)
        result = check_file(path)
        assert (result.status, result.reason) == expected, result.message


def test_accepted_file_decodes_to_display_image(tmp_path: Path) -> None:
    ds = synth.encode(_chest(), "1.2.840.10008.1.2.5")
    path = tmp_path / "ok.dcm"
    synth.write(ds, path)
    result = check_file(path, target_size=None)
    assert result.status == "accepted" and result.decode_path
    assert "32x32" in result.message


def test_gate_takes_dataset_without_file_meta() -> None:
    ds = Dataset()
    ds.update(_chest())
    ds.ViewCodeSequence = Sequence([])
    assert gate_header(ds).accepted
