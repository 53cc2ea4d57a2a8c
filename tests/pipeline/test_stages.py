"""The analysis path as stages: scan -> load_image -> predict (batches across studies) -> assemble
-> build_outputs (pure) -> write_outputs (atomic); results_for_paths streams them."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.load import load_image
from chexnet_dicom.dicom.study import scan
from chexnet_dicom.errors import OutputError
from chexnet_dicom.model.cam import cam_to_image_grid
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.torch_backend import TorchPredictor
from chexnet_dicom.outputs import build_outputs, write_outputs
from chexnet_dicom.outputs.write import earlier_sr
from chexnet_dicom.pipeline import analysis_preprocessing, load_for_model, model_input, results_for_paths
from chexnet_dicom.results import StudyResult, study_ref
from chexnet_dicom.transforms import prepare_model_input
from tests.helpers.bundles import make_bundle
from tests.helpers.studies import (
    STUDY_UID,
    is_expected_outputs,
    overlay_file,
    write_single_image_study,
    write_study,
)


@pytest.fixture(scope="module")
def card_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def predictor(card_path: Path) -> TorchPredictor:
    return TorchPredictor.from_card(card_path, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    write_study(folder)
    return folder


@pytest.fixture(scope="module")
def analysed(predictor: TorchPredictor, study_dir: Path) -> StudyResult:
    (result,) = results_for_paths([study_dir], predictor)
    return result


class CountingPredictor(TorchPredictor):
    """The real predictor, recording the size of every batch it is given."""

    calls: list[int]

    def predict_many(self, model_inputs, *, cams=True):  # type: ignore[no-untyped-def]
        self.calls.append(len(model_inputs))
        return super().predict_many(model_inputs, cams=cams)


class FailingPredictor(CountingPredictor):
    """The real predictor with a fault injected: NaN logits for images darker than a level."""

    def _run(self, x, *, cams):  # type: ignore[no-untyped-def]
        logits, maps, *features = super()._run(x, cams=cams)
        dark = x.reshape(len(x), -1).mean(axis=1) < -1.2
        logits = logits.copy()
        logits[dark] = np.nan
        return (logits, maps, *features)


def test_study_is_scanned_gated_and_analysed(analysed: StudyResult, study_dir: Path) -> None:
    result = analysed
    assert result.ref == study_ref(STUDY_UID) and STUDY_UID not in result.ref
    assert not result.failed
    assert [Path(im.path).name for im in result.images] == ["a_pa.dcm", "c_pa2.dcm"]
    assert [(Path(s.path).name, s.reason) for s in result.skipped] == [("b_lateral.dcm", "VIEW_NOT_FRONTAL")]
    assert result.skipped[0].dataset is not None  # the SR can list it, from the scan's one read
    found = scan([study_dir])
    assert [(Path(o.path).name, o.reason) for o in found.unassigned] == [("notes.txt", "NOT_DICOM")]
    # both stages were timed: reading two files and predicting take measurable time
    assert set(result.timings) >= {"read", "predict"} and all(0 < v < 600 for v in result.timings.values())
    # the analysed image's header carries no pixel data: results stay small
    assert "PixelData" not in result.images[0].dataset


def test_predictions_equal_the_predictor_on_the_shared_model_input(
    predictor: TorchPredictor, analysed: StudyResult
) -> None:
    im = analysed.images[0]
    pre = predictor.card.preprocessing
    direct = predictor.predict(
        prepare_model_input(im.display.image, resize=pre.resize, input_size=pre.input_size)
    )
    np.testing.assert_allclose(im.prediction.probabilities, direct.probabilities, atol=1e-6)
    assert im.display.source_shape == (300, 260)


def test_heatmaps_are_mapped_lazily_to_the_source_grid_as_relative_evidence(
    predictor: TorchPredictor, analysed: StudyResult
) -> None:
    im = analysed.images[0]
    fresh = type(im)(im.path, im.dataset, im.display, im.prediction, im.preprocessing)
    assert fresh._maps == {}  # nothing is mapped until an output asks for it
    assert im.prediction.cams is not None
    for k in range(len(LABELS)):
        heat = fresh.heatmap(k)
        assert heat is not None and heat.shape == (300, 260) and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() <= 1.0
        # by hand: the class activation above the image's own mean, over its maximum
        cam = im.prediction.cams[k].astype(np.float64)
        grid = np.clip((cam - cam.mean()) / (cam - cam.mean()).max(), 0, 1)
        manual = im.display.to_source_grid(
            np.clip(
                cam_to_image_grid(grid[None], predictor.card.preprocessing, im.display.image.shape)[0], 0, 1
            )
        )
        np.testing.assert_allclose(heat, manual, atol=1e-5)
        # the strongest feature cell is where the map peaks; below-average cells draw nothing
        assert heat.max() > 0.5 and (heat == 0).mean() > 0.05
    assert set(fresh._maps) == set(range(len(LABELS)))


def test_study_summary_is_the_maximum_over_images(analysed: StudyResult) -> None:
    probs = np.stack([im.prediction.probabilities for im in analysed.images])
    summary = analysed.summary
    assert set(summary) == set(LABELS)
    for k, name in enumerate(LABELS):
        entry = summary[name]
        assert entry.probability == pytest.approx(probs[:, k].max())
        assert entry.image_index == int(np.argmax(probs[:, k]))
        assert entry.present == (entry.probability >= entry.threshold)
    d = analysed.to_dict()
    assert (
        d["study"] == analysed.ref
        and len(d["images"]) == 2
        and d["skipped"][0]["reason"] == "VIEW_NOT_FRONTAL"
    )
    assert d["summary"]["Hernia"]["probability"] == summary["Hernia"].probability


def test_outputs_are_built_without_io_and_written_atomically(
    analysed: StudyResult, study_dir: Path, tmp_path: Path
) -> None:
    before = json.dumps(analysed.to_dict(), sort_keys=True)
    outputs = build_outputs(analysed)
    assert json.dumps(analysed.to_dict(), sort_keys=True) == before  # the result is not changed
    assert is_expected_outputs(outputs.names)
    assert list(tmp_path.iterdir()) == []  # building wrote nothing
    written = write_outputs(outputs, tmp_path / "out")
    assert is_expected_outputs([p.name for p in written])
    assert written[-1].name == "result.json"  # the sidecar last: its presence means the set is complete
    src = pydicom.dcmread(study_dir / "a_pa.dcm")
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    assert sr.StudyInstanceUID == src.StudyInstanceUID and sr.PatientID == src.PatientID
    sc = pydicom.dcmread(overlay_file(tmp_path / "out", 1))
    assert sc.Rows >= 300 and sc.Columns > 260  # the source grid, with the legend panel to its right
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    png = np.asarray(Image.open(overlay_file(tmp_path / "out", 1, "preview")))
    np.testing.assert_array_equal(png, sc.pixel_array)
    sidecar = json.loads((tmp_path / "out" / "result.json").read_text())
    for entry, im in zip(sidecar["images"], analysed.images, strict=True):
        assert entry["probabilities"] == pytest.approx(im.prediction.as_dict())
    # a retry builds the same objects: same UIDs, same files, nothing appended
    again = build_outputs(analysed)
    assert again.sr is not None and outputs.sr is not None
    assert again.sr.SOPInstanceUID == outputs.sr.SOPInstanceUID
    assert [d.SOPInstanceUID for _, d in again.overlays] == [d.SOPInstanceUID for _, d in outputs.overlays]
    write_outputs(again, tmp_path / "out")
    assert is_expected_outputs([p.name for p in (tmp_path / "out").iterdir()])


def test_a_study_that_gained_images_gets_a_new_sr_listing_the_earlier_one(
    predictor: TorchPredictor, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    write_single_image_study(folder / "a.dcm", 11, study_uid=STUDY_UID, series_number=1)
    (first,) = results_for_paths([folder], predictor)
    out = tmp_path / "out"
    write_outputs(build_outputs(first), out)
    old_uid = pydicom.dcmread(out / "sr.dcm").SOPInstanceUID
    assert earlier_sr(out, first) == []  # the same instances: the same document, no predecessor
    write_single_image_study(folder / "late.dcm", 12, study_uid=STUDY_UID, series_number=2)
    (second,) = results_for_paths([folder], predictor)
    previous = earlier_sr(out, second)
    assert [p.SOPInstanceUID for p in previous] == [old_uid]
    write_outputs(build_outputs(second, previous=previous), out)
    new = pydicom.dcmread(out / "sr.dcm")
    assert new.SOPInstanceUID != old_uid
    pred = new.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == old_uid
    assert is_expected_outputs([p.name for p in out.glob("sc-*.dcm")], ["sc-1-*.dcm", "sc-2-*.dcm"])


def test_without_sc_a_preview_is_still_written(analysed: StudyResult, tmp_path: Path) -> None:
    from chexnet_dicom.config import OutputOptions

    written = write_outputs(build_outputs(analysed, OutputOptions(sc=False)), tmp_path)
    patterns = ["preview-1-*.png", "preview-2-*.png", "result.json", "sr.dcm"]
    assert is_expected_outputs([p.name for p in written], patterns)
    rgb = np.asarray(Image.open(overlay_file(tmp_path, 1, "preview")))
    rows, cols = analysed.images[0].display.source_shape
    assert rgb.shape[0] >= rows and rgb.shape[1] > cols and rgb.shape[2] == 3  # image area and legend panel


def test_a_study_with_nothing_analysable_still_gets_an_sr(predictor: TorchPredictor, tmp_path: Path) -> None:
    from chexnet_dicom.testing import synth

    lat = synth.make_dataset(
        synth.chest_phantom((200, 180), seed=4, view="lateral"),
        view_position="LL",
        patient_orientation=("A", "F"),
        seed=4,
    )
    (tmp_path / "in").mkdir()
    synth.write(lat, tmp_path / "in" / "lat.dcm")
    (result,) = results_for_paths([tmp_path / "in"], predictor)
    assert result.images == () and result.summary == {} and not result.failed
    written = write_outputs(build_outputs(result), tmp_path / "out")
    assert [p.name for p in written] == ["sr.dcm", "result.json"]
    sidecar = json.loads((tmp_path / "out" / "result.json").read_text())
    assert sidecar["images"] == [] and sidecar["skipped"][0]["reason"] == "VIEW_NOT_FRONTAL"


def test_batches_span_studies_and_results_stream(card_path: Path, tmp_path: Path) -> None:
    for i in range(5):
        write_single_image_study(tmp_path / f"s{i}" / "x.dcm", 100 + i, study_date=f"2024010{i + 1}")
    counting = CountingPredictor.from_card(card_path, device="cpu", precision="fp32", batch_size=4)
    counting.calls = []
    progress: list[int] = []
    seen_when_yielded: list[int] = []
    refs = []
    for result in results_for_paths([tmp_path], counting, progress=lambda d, t: progress.append(d)):
        seen_when_yielded.append(len(progress))
        refs.append(result.ref)
        assert len(result.images) == 1
    assert counting.calls == [4, 1]  # one batch of four studies' images, then the last
    assert seen_when_yielded[0] == 4  # the first studies come out before the fifth is read
    assert len(refs) == 5 and len(set(refs)) == 5
    # results do not depend on the batch composition
    one = CountingPredictor.from_card(card_path, device="cpu", precision="fp32", batch_size=1)
    one.calls = []
    again = list(results_for_paths([tmp_path], one))
    assert one.calls == [1] * 5
    batched = list(results_for_paths([tmp_path], counting))
    for a, b in zip(batched, again, strict=True):
        np.testing.assert_allclose(
            a.images[0].prediction.probabilities, b.images[0].prediction.probabilities, atol=1e-6
        )


def test_a_model_failure_stays_with_its_study(card_path: Path, tmp_path: Path) -> None:
    write_single_image_study(tmp_path / "a" / "x.dcm", 201, study_date="20240101")
    dark = write_single_image_study(tmp_path / "b" / "x.dcm", 202, study_date="20240102")
    write_single_image_study(tmp_path / "c" / "x.dcm", 203, study_date="20240103")
    ds = pydicom.dcmread(dark)
    ds.PixelData = (np.zeros((200, 180), np.uint16)).tobytes()  # a black image: NaN by the injected fault
    ds.save_as(dark)
    failing = FailingPredictor.from_card(card_path, device="cpu", precision="fp32", batch_size=8)
    failing.calls = []
    results = list(results_for_paths([tmp_path], failing))
    assert [r.failed for r in results] == [False, True, False]
    failure = results[1].failure
    assert failure is not None and failure.reason == "INFERENCE_FAILED" and failure.stage == "predict"
    assert "NaN" in failure.message and "Traceback" not in failure.message
    assert failing.calls[0] == 3  # one batch across the three studies, then one image at a time
    assert all(r.images for r in (results[0], results[2]))
    with pytest.raises(OutputError, match="failed"):
        build_outputs(results[1])


def test_load_image_runs_in_a_worker_process_and_gives_the_same_image(
    predictor: TorchPredictor, study_dir: Path
) -> None:
    pre = analysis_preprocessing(predictor)
    instance = scan([study_dir]).studies[0].selected[0]
    local = load_image(instance.scanned)
    local_model, local_x = load_for_model(instance.scanned, IngestConfig(), pre)
    with ProcessPoolExecutor(max_workers=1) as pool:
        from_path = pool.submit(load_image, instance.path).result()
        from_scan, x = pool.submit(load_for_model, instance.scanned, IngestConfig(), pre).result()
    np.testing.assert_array_equal(from_path.display.image, local.display.image)
    assert from_path.display.provenance == local.display.provenance
    assert from_path.dataset.SOPInstanceUID == local.dataset.SOPInstanceUID
    np.testing.assert_array_equal(from_scan.display.image, local_model.display.image)
    np.testing.assert_array_equal(x, local_x)
    np.testing.assert_array_equal(x, model_input(local_model.display.image, pre))
    assert pickle.loads(pickle.dumps(local)).dataset.SOPInstanceUID == local.dataset.SOPInstanceUID
    # and the whole stream with decode workers equals the in-process one
    (pooled,) = results_for_paths([study_dir], predictor, workers=2)
    (inproc,) = results_for_paths([study_dir], predictor)
    for a, b in zip(pooled.images, inproc.images, strict=True):
        np.testing.assert_array_equal(a.display.image, b.display.image)
        np.testing.assert_allclose(a.prediction.probabilities, b.prediction.probabilities, atol=1e-7)
