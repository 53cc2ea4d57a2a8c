"""The real chest corpus through the stages: native-grid heatmaps, lying headers, valid outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from chexnet_dicom.config import OutputOptions
from chexnet_dicom.model.torch_backend import TorchPredictor
from chexnet_dicom.outputs import build_outputs, write_outputs
from chexnet_dicom.pipeline import results_for_paths
from tests.helpers.bundles import make_bundle
from tests.helpers.outputs import dciodvfy_errors
from tests.helpers.studies import overlay_file


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> TorchPredictor:
    return TorchPredictor.from_card(
        make_bundle(tmp_path_factory.mktemp("bundle")), device="cpu", precision="fp32"
    )


@pytest.mark.slow
def test_real_chest_files_give_heatmaps_on_their_native_grid(
    predictor: TorchPredictor, shared_dicom: Path
) -> None:
    """Every frontal chest is analysed, maps land on (Rows, Columns), lies are flagged."""
    chest = shared_dicom / "chest"
    fake_name = "siim_6904_fake_monochrome1.dcm"  # same SOP Instance UID as siim_6904.dcm
    results = list(results_for_paths([chest], predictor))
    analysed = {Path(im.path).name: im for r in results for im in r.images}
    skipped = [(Path(s.path).name, s.reason) for r in results for s in r.skipped]
    assert skipped == [(fake_name, "DUPLICATE_INSTANCE")]
    assert sorted(analysed) == sorted(p.name for p in chest.glob("*.dcm") if p.name != fake_name)
    (fake_result,) = results_for_paths([chest / fake_name], predictor)
    (fake,) = fake_result.images
    for name, im in [*analysed.items(), (fake_name, fake)]:
        ds = pydicom.dcmread(chest / name, stop_before_pixels=True, force=True)
        k = int(np.argmax(im.prediction.probabilities))
        assert im.heatmap(k).shape == (int(ds.Rows), int(ds.Columns)), name
        assert np.isfinite(im.prediction.probabilities).all()
    assert "content-inverted" in fake.flags
    np.testing.assert_allclose(
        fake.prediction.probabilities, analysed["siim_6904.dcm"].prediction.probabilities, atol=0.01
    )


def test_every_real_chest_study_is_written_validly(
    predictor: TorchPredictor, shared_dicom: Path, tmp_path: Path
) -> None:
    """Real headers carry invalid values (966_fixed: an anonymiser's hash as PatientBirthDate,
    a 56-character AccessionNumber); they must not lose the result or make it invalid."""
    chest = shared_dicom / "chest"
    results = list(results_for_paths([chest], predictor))
    assert len(results) >= 6 and not any(r.failed for r in results)
    for result in results:
        out = tmp_path / result.ref
        written = write_outputs(build_outputs(result, OutputOptions(sc_compression="jpeg2000")), out)
        sc_name = overlay_file(out, 1).name
        assert {p.name for p in written} >= {"sr.dcm", sc_name, "result.json"}, result.ref
        source = pydicom.dcmread(result.images[0].path, stop_before_pixels=True, force=True)
        for name in ("sr.dcm", sc_name):
            errors, _warnings = dciodvfy_errors(out / name)
            assert errors == [], (Path(result.images[0].path).name, name, errors)
            back = pydicom.dcmread(out / name)
            assert back.StudyInstanceUID == source.StudyInstanceUID
            assert str(back.get("PatientID") or "") == str(source.get("PatientID") or "")
    # the source with invalid values: they are left empty in the outputs, the source file unchanged
    bad = chest / "966_fixed.dcm"
    (res,) = [r for r in results if Path(r.images[0].path).name == "966_fixed.dcm"]
    sr = pydicom.dcmread(tmp_path / res.ref / "sr.dcm")
    assert sr.PatientBirthDate == "" and sr.AccessionNumber == ""
    assert len(str(pydicom.dcmread(bad, stop_before_pixels=True).PatientBirthDate)) == 56
    # non-ASCII text without a Specific Character Set (DX_J2K_0Padding: Windows-1251 bytes):
    # the results decode it (charset-normalizer) and declare UTF-8, ISO_IR 192
    (res,) = [r for r in results if Path(r.images[0].path).name == "DX_J2K_0Padding.dcm"]
    src = pydicom.dcmread(chest / "DX_J2K_0Padding.dcm", stop_before_pixels=True)
    assert "SpecificCharacterSet" not in src
    source_name = src.get_item(0x00100010).value.rstrip(b" ").decode("cp1251")
    for name in ("sr.dcm", overlay_file(tmp_path / res.ref, 1).name):
        out_ds = pydicom.dcmread(tmp_path / res.ref / name)
        assert out_ds.SpecificCharacterSet == "ISO_IR 192"
        raw = out_ds.get_item(0x00100010).value  # the stored bytes, undecoded
        assert isinstance(raw, bytes) and raw.rstrip(b" ").decode("utf-8") == source_name
        assert str(out_ds.PatientName) == source_name


def test_real_lying_header_is_flagged_and_corrected(predictor: TorchPredictor, shared_dicom: Path) -> None:
    """The MONOCHROME1 lie and a file with no preamble or meta."""
    chest = shared_dicom / "chest"
    results = list(results_for_paths([chest / "siim_6904.dcm", chest / "CR-MONO1-10-chest.dcm"], predictor))
    honest = {Path(im.path).name: im for r in results for im in r.images}
    assert sorted(honest) == ["CR-MONO1-10-chest.dcm", "siim_6904.dcm"]
    (fake_result,) = results_for_paths([chest / "siim_6904_fake_monochrome1.dcm"], predictor)
    (fake,) = fake_result.images
    assert "content-inverted" in fake.flags and "content-inverted" not in honest["siim_6904.dcm"].flags
    np.testing.assert_allclose(
        fake.prediction.probabilities, honest["siim_6904.dcm"].prediction.probabilities, atol=0.01
    )
