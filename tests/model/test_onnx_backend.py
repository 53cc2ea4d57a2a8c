"""ONNX Runtime backend: equal to the torch float32 reference, checked and cached exports, selection."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexnet_dicom.errors import ConfigError, InferenceError, ModelError, WeightsError
from chexnet_dicom.model import backends, onnx_backend, predictor
from chexnet_dicom.model.backends import load_predictor
from chexnet_dicom.model.card import Preprocessing
from chexnet_dicom.model.onnx_backend import OrtPredictor, onnx_model_bytes
from chexnet_dicom.model.resolve import DEMO_CARD
from chexnet_dicom.model.torch_backend import TorchPredictor
from chexnet_dicom.transforms import prepare_model_input
from tests.helpers.bundles import make_bundle, synthetic_images
from tests.helpers.shared import REPO, shared_path

pytest.importorskip("onnxruntime")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("CHEXDCM_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("ort-bundle"), seed=4)


def _max_diff(a: list, b: list, attr: str) -> float:
    return max(float(np.abs(getattr(x, attr) - getattr(y, attr)).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("tta", ["none", "tencrop"])
def test_probabilities_and_maps_equal_the_torch_fp32_reference(bundle: Path, cache: Path, tta: str) -> None:
    ort_p = load_predictor(bundle, backend="onnxruntime", tta=tta, batch_size=3)
    ref = TorchPredictor.from_card(bundle, device="cpu", precision="fp32", tta=tta)  # type: ignore[arg-type]
    assert isinstance(ort_p, OrtPredictor) and ort_p.backend == "onnxruntime" and ort_p.precision == "fp32"
    pre = ref.card.preprocessing
    inputs = [
        prepare_model_input(im, resize=pre.resize, input_size=pre.input_size, tta=tta)
        for im in synthetic_images(5)
    ]
    a, b = ort_p.predict_many(inputs), ref.predict_many(inputs)
    assert _max_diff(a, b, "probabilities") <= 1e-4
    assert _max_diff(a, b, "cams") <= 1e-4 * max(1.0, max(float(np.abs(p.cams).max()) for p in b))
    assert a[0].backend == "onnxruntime" and b[0].backend == "torch"
    assert a[0].cams.shape == b[0].cams.shape
    np.testing.assert_array_equal(ort_p.head_bias, ref.head_bias)
    # without maps: the same probabilities, no maps
    c = ort_p.predict_many(inputs, cams=False)
    assert c[0].cams is None and _max_diff(a, c, "probabilities") <= 1e-6


def test_demo_weights_on_real_images_match_torch(cache: Path) -> None:
    files = sorted(shared_path("nih", "images").glob("*.png"))[:8]
    assert len(files) == 8
    ort_p = load_predictor(DEMO_CARD, backend="onnxruntime")
    ref = TorchPredictor.from_card(DEMO_CARD, device="cpu", precision="fp32")
    pre = ref.card.preprocessing
    inputs = [
        prepare_model_input(
            np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0,
            resize=pre.resize,
            input_size=pre.input_size,
        )
        for f in files
    ]
    a, b = ort_p.predict_many(inputs), ref.predict_many(inputs)
    diff = _max_diff(a, b, "probabilities")
    assert diff <= 1e-4, f"ONNX Runtime differs from torch fp32 by {diff:.2e}"
    spread = np.ptp(np.stack([p.probabilities for p in b]), axis=0).max()
    assert spread > 100 * max(diff, 1e-6)  # the images are told apart far beyond the backend difference


def test_export_is_cached_with_a_record_and_reused(bundle: Path, cache: Path) -> None:
    model, card, source = onnx_model_bytes(bundle)
    assert source == "exported"
    (record_path,) = (cache / "onnx").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["weights_sha256"] == card.weights_sha256 and record["input_size"] == 64
    assert record["max_abs_difference_to_torch"] <= onnx_backend.EXPORT_TOLERANCE
    again, _, source2 = onnx_model_bytes(bundle)
    assert source2 == "cache" and again == model
    assert "graph: cache" in load_predictor(bundle, backend="onnxruntime").runtime.reason


def test_a_damaged_cached_graph_is_exported_again_never_run(bundle: Path, cache: Path) -> None:
    model, _, _ = onnx_model_bytes(bundle)
    (graph,) = (cache / "onnx").glob("*.onnx")
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    fresh, _, source = onnx_model_bytes(bundle)
    assert source == "exported" and fresh == model and graph.read_bytes() == model
    graph.write_bytes(model[:1000])  # truncated
    assert onnx_model_bytes(bundle)[2] == "exported"


def test_an_unwritable_cache_still_runs(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CHEXDCM_CACHE", str(blocker))
    _, _, source = onnx_model_bytes(bundle)
    assert source.startswith("exported (not cached")
    pred = load_predictor(bundle, backend="onnxruntime")
    assert pred.predict(np.zeros((3, 64, 64), dtype=np.float32)).probabilities.shape == (14,)


def test_an_export_that_disagrees_with_torch_is_refused(
    bundle: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_backend, "EXPORT_TOLERANCE", 0.0)  # the real difference is ~1e-6, never 0
    with pytest.raises(ModelError, match="disagrees with PyTorch"):
        onnx_model_bytes(bundle)
    assert not list((cache / "onnx").glob("*.onnx"))  # nothing unchecked is cached


def test_non_finite_input_is_refused(bundle: Path, cache: Path) -> None:
    pred = load_predictor(bundle, backend="onnxruntime")
    x = np.zeros((3, 64, 64), dtype=np.float32)
    x[0, 1, 2] = np.nan
    with pytest.raises(InferenceError, match="NaN"):
        pred.predict(x)
    with pytest.raises(InferenceError, match="shape"):
        pred.predict(np.zeros((3, 32, 32), dtype=np.float32))
    # ONNX Runtime's own (untyped) failures become typed errors
    with pytest.raises(InferenceError, match="ONNX Runtime failed"):
        pred._run(np.zeros((1, 3, 32, 32), dtype=np.float32), cams=True)
    with pytest.raises(ModelError, match="cannot load the graph"):
        onnx_backend._session(b"not an onnx graph", 1)


def test_backend_selection(bundle: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not predictor.cuda_may_be_present():
        assert load_predictor(bundle).backend == "onnxruntime"
    assert load_predictor(bundle, backend="torch").backend == "torch"
    assert load_predictor(bundle, precision="bf16").backend == "torch"  # only torch runs bf16
    with pytest.raises(ConfigError, match="onnxruntime backend"):
        load_predictor(bundle, backend="onnxruntime", precision="bf16")
    with pytest.raises(ConfigError, match="onnxruntime backend"):
        load_predictor(bundle, backend="onnxruntime", device="cuda")
    with pytest.raises(ConfigError, match="backend must be"):
        load_predictor(bundle, backend="tensorrt")
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    monkeypatch.setattr(backends, "cuda_may_be_present", lambda: False)
    assert load_predictor(bundle).backend == "torch"  # falls back when ONNX Runtime is missing


def test_cache_key_includes_the_input_size(tmp_path: Path, cache: Path) -> None:
    """The same weights at two input sizes are two graphs, each exported and each reused."""
    small = make_bundle(tmp_path / "a", preprocessing=Preprocessing(resize=40, input_size=32), seed=4)
    large = make_bundle(tmp_path / "b", preprocessing=Preprocessing(resize=80, input_size=64), seed=4)
    assert onnx_model_bytes(small)[2] == "exported" and onnx_model_bytes(large)[2] == "exported"
    assert sorted(p.name.split("-")[1] for p in (cache / "onnx").glob("*.onnx")) == ["s32", "s64"]
    assert onnx_model_bytes(small)[2] == "cache" and onnx_model_bytes(large)[2] == "cache"
    x = np.zeros((3, 32, 32), dtype=np.float32)
    assert load_predictor(small, backend="onnxruntime").predict(x).cams.shape == (14, 1, 1)


def test_unverified_weights_never_use_or_fill_the_cache(bundle: Path, tmp_path: Path, cache: Path) -> None:
    """``verify=False`` with a weights file that does not match its card must not poison the cache."""
    other = make_bundle(tmp_path / "other", seed=9)
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(bundle, swapped / bundle.name)
    shutil.copy(other.parent / "tiny.safetensors", swapped / "tiny.safetensors")
    onnx_model_bytes(bundle)  # the genuine graph is cached under the card's hash
    model, _, source = onnx_model_bytes(swapped / bundle.name, verify=False)
    assert source.startswith("exported (not cached")
    assert len(list((cache / "onnx").glob("*.onnx"))) == 1
    genuine, _, source = onnx_model_bytes(bundle)
    assert source == "cache" and genuine != model
    with pytest.raises(WeightsError, match="corrupt or was tampered"):
        load_predictor(swapped / bundle.name, backend="onnxruntime")
    with pytest.raises(WeightsError, match="corrupt or was tampered"):
        load_predictor(swapped / bundle.name)  # auto never falls back past corrupt weights


def test_a_failed_export_falls_back_to_torch_only_when_chosen_automatically(
    bundle: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object) -> tuple[bytes, str]:
        raise ModuleNotFoundError("No module named 'onnxscript'")

    monkeypatch.setattr(onnx_backend, "_export_bytes", broken)
    with pytest.raises(ModelError, match=r"ONNX export failed.*ModuleNotFoundError"):
        load_predictor(bundle, backend="onnxruntime")
    if not predictor.cuda_may_be_present():
        pred = load_predictor(bundle)
        assert pred.backend == "torch"
        assert "running the torch predictor" in caplog.text
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    with pytest.raises(ConfigError, match="needs the onnxruntime and onnx packages"):
        load_predictor(bundle, backend="onnxruntime")


def test_warm_cli_run_imports_neither_torch_nor_monai(bundle: Path, tmp_path: Path) -> None:
    """The second ``chexdcm infer`` finds the graph in the cache and never loads torch or MONAI."""
    from tests.helpers.studies import write_study

    study = tmp_path / "study"
    write_study(study)
    env = {**os.environ, "CHEXDCM_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    runs = []
    for k in range(2):
        cmd = [sys.executable, "-X", "importtime", "-m", "chexnet_dicom", "infer", str(study)]
        cmd += ["--weights", str(bundle), "--out", str(tmp_path / f"out{k}"), "--no-sc"]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        runs.append((proc.stderr, imported))
    (first, first_mods), (second, second_mods) = runs
    assert "graph: exported" in first and "torch" in first_mods
    assert "graph: cache" in second
    assert "onnxruntime" in second_mods and "torch" not in second_mods and "monai" not in second_mods
    a = json.loads((tmp_path / "out0" / "result.json").read_text())
    b = json.loads((tmp_path / "out1" / "result.json").read_text())
    assert a == b  # identical results (and UIDs) from the exporting and the cached run


def test_export_is_deterministic(bundle: Path) -> None:
    """Concurrent first runs may each export and write the cache: they must write the same bytes."""
    first, record = onnx_backend.export_onnx(bundle)
    second, _ = onnx_backend.export_onnx(bundle)
    assert first == second and record["sha256"] == onnx_backend._sha256(second)
