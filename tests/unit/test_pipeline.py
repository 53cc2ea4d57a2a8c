"""The one analysis path: scan -> read/render -> predict -> heatmaps on the source grid -> outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from chexnet_dicom.dicom import synth
from chexnet_dicom.model.cam import cam_to_image_grid, to_display
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.torch_backend import TorchPredictor
from chexnet_dicom.pipeline import Analyzer, StudyResult, study_ref, study_summary
from chexnet_dicom.transforms import prepare_model_input
from tests.model.test_torch_backend import make_bundle

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
#: Files written for the study of :func:`write_study` (two frontal images).
EXPECTED_OUTPUTS = ["preview-1-1.png", "preview-2-1.png", "result.json", "sc-1-1.dcm", "sc-2-1.dcm", "sr.dcm"]


def write_study(folder: Path) -> dict[str, Path]:
    """A synthetic study: a PA (non-square), a lateral, a second PA (rotated header) and junk."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    pa = synth.make_dataset(synth.chest_phantom((300, 260), seed=1), study_uid=STUDY_UID, seed=1)
    synth.write(pa, files.setdefault("pa", folder / "a_pa.dcm"))
    lat = synth.make_dataset(
        synth.chest_phantom((280, 240), seed=2, view="lateral"),
        study_uid=STUDY_UID,
        view_position="LL",
        patient_orientation=("A", "F"),
        series_number=2,
        seed=2,
    )
    synth.write(lat, files.setdefault("lateral", folder / "b_lateral.dcm"))
    pa2 = synth.make_dataset(
        synth.chest_phantom((240, 240), seed=3), study_uid=STUDY_UID, series_number=3, seed=3
    )
    synth.write(pa2, files.setdefault("pa2", folder / "c_pa2.dcm"))
    junk = folder / "notes.txt"
    junk.write_text("not a DICOM file\n")
    files["junk"] = junk
    return files


@pytest.fixture(scope="module")
def card_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def analyzer(card_path: Path) -> Analyzer:
    return Analyzer(TorchPredictor.from_card(card_path, device="cpu", precision="fp32"))


@pytest.fixture(scope="module")
def analysed(analyzer: Analyzer, tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyResult, list, dict]:
    files = write_study(tmp_path_factory.mktemp("study"))
    results, orphans = analyzer.analyse_paths([files["pa"].parent])
    assert len(results) == 1
    return results[0], orphans, files


def test_study_is_scanned_gated_and_analysed(analysed: tuple[StudyResult, list, dict]) -> None:
    result, orphans, _ = analysed
    assert result.ref == study_ref(STUDY_UID) and STUDY_UID not in result.ref
    assert [Path(im.path).name for im in result.images] == ["a_pa.dcm", "c_pa2.dcm"]
    assert [(Path(s.path).name, s.reason) for s in result.skipped] == [("b_lateral.dcm", "VIEW_NOT_FRONTAL")]
    assert result.skipped[0].dataset is not None  # the SR can list it
    assert [(Path(o.path).name, o.reason) for o in orphans] == [("notes.txt", "NOT_DICOM")]
    assert set(result.timings) >= {"read", "predict"} and all(v >= 0 for v in result.timings.values())


def test_predictions_equal_the_predictor_on_the_shared_model_input(
    analyzer: Analyzer, analysed: tuple[StudyResult, list, dict]
) -> None:
    result, _, _ = analysed
    im = result.images[0]
    pre = analyzer.card.preprocessing
    direct = analyzer.predictor.predict(
        prepare_model_input(im.display.image, resize=pre.resize, input_size=pre.input_size)
    )
    np.testing.assert_allclose(im.prediction.probabilities, direct.probabilities, atol=1e-6)
    assert im.display.source_shape == (300, 260)


def test_heatmaps_lie_on_the_source_grid_on_the_fixed_scale(
    analyzer: Analyzer, analysed: tuple[StudyResult, list, dict]
) -> None:
    result, _, _ = analysed
    im = result.images[0]
    assert im.heatmaps is not None and im.heatmaps.shape == (14, 300, 260) and im.heatmaps.dtype == np.float32
    assert im.heatmaps.min() >= 0.0 and im.heatmaps.max() <= 1.0
    # Same values as mapping the CAMs by hand (no per-image normalisation anywhere).
    assert im.prediction.cams is not None
    manual = im.display.to_source_grid(
        to_display(cam_to_image_grid(im.prediction.cams, analyzer.card.preprocessing, im.display.image.shape))
    )
    np.testing.assert_allclose(im.heatmaps, np.clip(manual, 0, 1), atol=1e-6)
    # A weak map stays weak: the maximum is not stretched to 1 for every finding.
    assert len({round(float(m.max()), 4) for m in im.heatmaps}) > 3


def test_study_summary_is_the_maximum_over_images(analysed: tuple[StudyResult, list, dict]) -> None:
    result, _, _ = analysed
    probs = np.stack([im.prediction.probabilities for im in result.images])
    assert set(result.summary) == set(LABELS)
    for k, name in enumerate(LABELS):
        entry = result.summary[name]
        assert entry["probability"] == pytest.approx(probs[:, k].max())
        assert entry["image_index"] == int(np.argmax(probs[:, k]))
        assert entry["present"] == (entry["probability"] >= entry["threshold"])
    assert study_summary([]) == {}
    d = result.to_dict()
    assert (
        d["study"] == result.ref and len(d["images"]) == 2 and d["skipped"][0]["reason"] == "VIEW_NOT_FRONTAL"
    )


def test_outputs_are_written_and_reference_the_source(
    analyzer: Analyzer, analysed: tuple[StudyResult, list, dict], tmp_path: Path
) -> None:
    result, _, files = analysed
    written = analyzer.write(result, tmp_path / result.ref)
    names = sorted(p.name for p in written)
    assert names == EXPECTED_OUTPUTS
    src = pydicom.dcmread(files["pa"])
    sr = pydicom.dcmread(tmp_path / result.ref / "sr.dcm")
    assert sr.StudyInstanceUID == src.StudyInstanceUID and sr.PatientID == src.PatientID
    sc = pydicom.dcmread(tmp_path / result.ref / "sc-1-1.dcm")
    assert (sc.Rows, sc.Columns) == (300, 260)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    png = np.asarray(Image.open(tmp_path / result.ref / "preview-1-1.png"))
    np.testing.assert_array_equal(png, sc.pixel_array)
    assert "write" in result.timings
    sidecar = json.loads((tmp_path / result.ref / "result.json").read_text())
    for entry, im in zip(sidecar["images"], result.images, strict=True):
        assert entry["probabilities"] == pytest.approx(im.prediction.as_dict())
    # Deterministic: writing again gives the same UIDs.
    again = analyzer.write(result, tmp_path / "again")
    sr2 = pydicom.dcmread(next(p for p in again if p.name == "sr.dcm"))
    assert sr2.SOPInstanceUID == sr.SOPInstanceUID


def test_without_sc_a_preview_is_still_written(
    analyzer: Analyzer, analysed: tuple[StudyResult, list, dict], tmp_path: Path
) -> None:
    result, _, _ = analysed
    written = analyzer.write(result, tmp_path, sc=False)
    assert sorted(p.name for p in written) == ["preview-1-1.png", "preview-2-1.png", "result.json", "sr.dcm"]
    rgb = np.asarray(Image.open(tmp_path / "preview-1-1.png"))
    assert rgb.shape == (*result.images[0].display.image.shape, 3)


def test_a_study_with_nothing_analysable_still_gets_an_sr(analyzer: Analyzer, tmp_path: Path) -> None:
    lat = synth.make_dataset(
        synth.chest_phantom((200, 180), seed=4, view="lateral"),
        view_position="LL",
        patient_orientation=("A", "F"),
        seed=4,
    )
    (tmp_path / "in").mkdir()
    synth.write(lat, tmp_path / "in" / "lat.dcm")
    results, _ = analyzer.analyse_paths([tmp_path / "in"])
    assert len(results) == 1 and results[0].images == [] and results[0].summary == {}
    written = analyzer.write(results[0], tmp_path / "out")
    assert [p.name for p in written] == ["sr.dcm", "result.json"]
    sidecar = json.loads((tmp_path / "out" / "result.json").read_text())
    assert sidecar["images"] == [] and sidecar["skipped"][0]["reason"] == "VIEW_NOT_FRONTAL"


@pytest.mark.slow
def test_real_chest_files_give_heatmaps_on_their_native_grid(analyzer: Analyzer, shared_dicom: Path) -> None:
    """The real corpus: every frontal chest is analysed, maps land on (Rows, Columns), lies are flagged."""
    chest = shared_dicom / "chest"
    fake_name = "siim_6904_fake_monochrome1.dcm"  # same SOP Instance UID as siim_6904.dcm
    results, orphans = analyzer.analyse_paths([chest])
    assert orphans == []
    analysed = {Path(im.path).name: im for r in results for im in r.images}
    skipped = [(Path(s.path).name, s.reason) for r in results for s in r.skipped]
    assert skipped == [(fake_name, "DUPLICATE_INSTANCE")]
    assert sorted(analysed) == sorted(p.name for p in chest.glob("*.dcm") if p.name != fake_name)
    (fake_result,), _ = analyzer.analyse_paths([chest / fake_name])
    (fake,) = fake_result.images
    for name, im in [*analysed.items(), (fake_name, fake)]:
        ds = pydicom.dcmread(chest / name, stop_before_pixels=True, force=True)
        assert im.heatmaps is not None and im.heatmaps.shape == (14, int(ds.Rows), int(ds.Columns)), name
        assert np.isfinite(im.prediction.probabilities).all()
    # The header that lies about MONOCHROME1 is noticed, corrected and recorded with the result.
    assert "content-inverted" in fake.flags
    np.testing.assert_allclose(
        fake.prediction.probabilities, analysed["siim_6904.dcm"].prediction.probabilities, atol=0.01
    )


def test_every_real_chest_study_is_written_validly(
    analyzer: Analyzer, shared_dicom: Path, tmp_path: Path
) -> None:
    """Real headers carry invalid values (966_fixed: an anonymiser's hash as PatientBirthDate,
    a 56-character AccessionNumber); they must not lose the result or make it invalid."""
    from tests.outputs.helpers import dciodvfy_errors

    chest = shared_dicom / "chest"
    results, _ = analyzer.analyse_paths([chest])
    assert len(results) >= 6
    for result in results:
        out = tmp_path / result.ref
        written = analyzer.write(result, out, sc_compression="jpeg2000")
        assert {p.name for p in written} >= {"sr.dcm", "sc-1-1.dcm", "result.json"}, result.ref
        source = pydicom.dcmread(result.images[0].path, stop_before_pixels=True, force=True)
        for name in ("sr.dcm", "sc-1-1.dcm"):
            errors, _warnings = dciodvfy_errors(out / name)
            assert errors == [], (Path(result.images[0].path).name, name, errors)
            back = pydicom.dcmread(out / name)
            assert back.StudyInstanceUID == source.StudyInstanceUID
            assert str(back.get("PatientID") or "") == str(source.get("PatientID") or "")
    # the source with invalid values: they are left empty in the outputs, the source file unchanged
    bad = shared_dicom / "chest" / "966_fixed.dcm"
    (res,) = [r for r in results if Path(r.images[0].path).name == "966_fixed.dcm"]
    sr = pydicom.dcmread(tmp_path / res.ref / "sr.dcm")
    assert sr.PatientBirthDate == "" and sr.AccessionNumber == ""
    assert len(str(pydicom.dcmread(bad, stop_before_pixels=True).PatientBirthDate)) == 56
    # non-ASCII text without a Specific Character Set (DX_J2K_0Padding: Windows-1251 bytes):
    # the results declare ISO_IR 100 and carry the source's very bytes
    (res,) = [r for r in results if Path(r.images[0].path).name == "DX_J2K_0Padding.dcm"]
    src = pydicom.dcmread(chest / "DX_J2K_0Padding.dcm", stop_before_pixels=True)
    assert "SpecificCharacterSet" not in src
    for name in ("sr.dcm", "sc-1-1.dcm"):
        out_ds = pydicom.dcmread(tmp_path / res.ref / name)
        assert out_ds.SpecificCharacterSet == "ISO_IR 100"
        raw = out_ds.get_item(0x00100010).value  # the stored bytes, undecoded
        assert isinstance(raw, bytes) and not raw.isascii()
        assert raw.rstrip(b" ") in (chest / "DX_J2K_0Padding.dcm").read_bytes()  # the source's bytes
        assert str(out_ds.PatientName) == str(src.PatientName)


def test_real_lying_header_is_flagged_and_corrected(analyzer: Analyzer, shared_dicom: Path) -> None:
    """Quick subset of the above: the MONOCHROME1 lie and a file with no preamble or meta."""
    chest = shared_dicom / "chest"
    files = [chest / "siim_6904.dcm", chest / "CR-MONO1-10-chest.dcm"]
    results, _ = analyzer.analyse_paths(files)
    honest = {Path(im.path).name: im for r in results for im in r.images}
    assert sorted(honest) == ["CR-MONO1-10-chest.dcm", "siim_6904.dcm"]
    (fake_result,), _ = analyzer.analyse_paths([chest / "siim_6904_fake_monochrome1.dcm"])
    (fake,) = fake_result.images
    assert "content-inverted" in fake.flags and "content-inverted" not in honest["siim_6904.dcm"].flags
    np.testing.assert_allclose(
        fake.prediction.probabilities, honest["siim_6904.dcm"].prediction.probabilities, atol=0.01
    )
    for im in [*honest.values(), fake]:
        ds = pydicom.dcmread(im.path, stop_before_pixels=True, force=True)
        assert im.heatmaps is not None and im.heatmaps.shape == (14, int(ds.Rows), int(ds.Columns))


def test_chunked_reading_gives_the_same_results_and_reports_progress(
    card_path: Path, analysed: tuple[StudyResult, list, dict]
) -> None:
    result, _, files = analysed
    one_by_one = Analyzer(TorchPredictor.from_card(card_path, device="cpu", precision="fp32", batch_size=1))
    calls: list[tuple[int, int]] = []
    (again,), _ = one_by_one.analyse_paths([files["pa"].parent], progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]
    for a, b in zip(result.images, again.images, strict=True):
        np.testing.assert_allclose(a.prediction.probabilities, b.prediction.probabilities, atol=1e-6)
