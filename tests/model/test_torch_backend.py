"""TorchPredictor: loading, batching, precision, TenCrop, NaN guard, bf16 accuracy bound."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from chexnet_dicom.errors import ConfigError, InferenceError, WeightsError
from chexnet_dicom.model.card import ModelCard, Preprocessing, save_bundle
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.network import build_network
from chexnet_dicom.model.predictor import available_cpus
from chexnet_dicom.model.torch_backend import (
    TorchPredictor,
    choose_runtime,
    cpu_has_native_bf16,
    tune_threads,
)
from chexnet_dicom.transforms import prepare_model_input
from tests.helpers.bundles import SMALL, make_bundle, synthetic_images
from tests.helpers.shared import shared_path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def fp32(bundle: Path) -> TorchPredictor:
    return TorchPredictor.from_card(bundle, device="cpu", precision="fp32", threads=min(2, available_cpus()))


def test_probabilities_equal_naive_eager_pytorch(bundle: Path, fp32: TorchPredictor) -> None:
    from chexnet_dicom.model.card import load_bundle

    net, card = load_bundle(bundle)
    inputs = [prepare_model_input(im, resize=80, input_size=64) for im in synthetic_images(3)]
    with torch.no_grad():
        naive = torch.sigmoid(net(torch.from_numpy(np.stack(inputs)))).double().numpy()
    preds = fp32.predict_many(inputs)
    for p, ref in zip(preds, naive, strict=True):
        np.testing.assert_allclose(p.probabilities, ref, atol=2e-6)
        assert p.probabilities.dtype == np.float64 and p.probabilities.shape == (14,)
        np.testing.assert_allclose(p.thresholds, [card.threshold(n) for n in LABELS])
        assert p.model_name == "test-chexnet" and p.weights_sha256 == card.weights_sha256
        assert p.precision == "fp32" and p.device == "cpu" and p.labels == LABELS
        assert p.cams is not None and p.cams.shape == (14, 2, 2)
    # CAMs are in cam_scale units: mean * scale + bias = logit.
    logit = np.log(preds[0].probabilities / (1 - preds[0].probabilities))
    np.testing.assert_allclose(preds[0].cams.mean(axis=(1, 2)) * 2.0 + fp32.head_bias, logit, atol=1e-4)


def test_batching_does_not_change_results(bundle: Path, fp32: TorchPredictor) -> None:
    inputs = [prepare_model_input(im, resize=80, input_size=64) for im in synthetic_images(5, seed=9)]
    batched = TorchPredictor.from_card(bundle, device="cpu", precision="fp32", batch_size=2).predict_many(
        inputs
    )
    single = [fp32.predict(x) for x in inputs]
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        np.testing.assert_allclose(a.cams, b.cams, atol=1e-4)
    assert len({tuple(np.round(p.probabilities, 6)) for p in single}) == 5  # inputs are not ignored
    assert fp32.predict_many([]) == []
    without = fp32.predict(inputs[0], cams=False)
    assert without.cams is None
    np.testing.assert_allclose(without.probabilities, single[0].probabilities, atol=1e-6)


def test_tencrop_averages_the_probabilities_of_the_ten_crops(bundle: Path, fp32: TorchPredictor) -> None:
    from chexnet_dicom.model.card import load_bundle

    image = synthetic_images(1, seed=11)[0]
    x10 = prepare_model_input(image, resize=80, input_size=64, tta="tencrop")
    tta = TorchPredictor.from_card(bundle, device="cpu", precision="fp32", tta="tencrop")
    pred = tta.predict(x10)
    net, _ = load_bundle(bundle)
    with torch.no_grad():
        crops = torch.sigmoid(net(torch.from_numpy(x10))).double().numpy()
    np.testing.assert_allclose(pred.probabilities, crops.mean(axis=0), atol=2e-6)
    assert pred.cams is not None and pred.cams.shape == (10, 14, 2, 2)
    with pytest.raises(InferenceError, match="shape"):
        fp32.predict(x10)  # a TenCrop input to a centre-crop predictor
    with pytest.raises(InferenceError, match="shape"):
        tta.predict(x10[0])


def test_non_finite_input_or_output_raises_inference_error(bundle: Path, fp32: TorchPredictor) -> None:
    x = prepare_model_input(synthetic_images(1)[0], resize=80, input_size=64)
    bad = x.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(InferenceError, match="NaN"):
        fp32.predict(bad)
    from chexnet_dicom.model.card import load_bundle

    net, card = load_bundle(bundle)
    with torch.no_grad():
        net.features.denseblock4.denselayer16.layers.conv2.weight[0, 0, 0, 0] = float("inf")
    broken = TorchPredictor(net, card, device="cpu", precision="fp32")
    with pytest.raises(InferenceError, match="NaN/Inf"):
        broken.predict(x)


def test_the_callers_network_is_not_modified(bundle: Path) -> None:
    from chexnet_dicom.model.card import load_bundle

    net, card = load_bundle(bundle)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    TorchPredictor(net, card, device="cpu", precision="bf16")
    for k, v in net.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
    assert net.features.conv0.weight.is_contiguous()


def test_bf16_stays_within_0_005_of_fp32_on_a_fixed_real_image_set(tmp_path: Path) -> None:
    """The accuracy bound of the reduced-precision path, at the real 224 input size."""
    nih = shared_path("nih", "images")
    files = sorted(nih.glob("*.png"))[:8]
    assert len(files) == 8
    images = [np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0 for f in files]
    card_path = make_bundle(tmp_path, preprocessing=Preprocessing(), seed=3)
    inputs = [prepare_model_input(im) for im in images]
    ref = TorchPredictor.from_card(card_path, device="cpu", precision="fp32").predict_many(inputs)
    low = TorchPredictor.from_card(card_path, device="cpu", precision="bf16").predict_many(inputs)
    diff = max(float(np.abs(a.probabilities - b.probabilities).max()) for a, b in zip(ref, low, strict=True))
    assert diff <= 0.005, f"bf16 max probability difference {diff:.4f} > 0.005"
    assert low[0].precision == "bf16"
    spread = np.ptp(np.stack([p.probabilities for p in ref]), axis=0).max()
    assert spread > 10 * max(diff, 1e-4)  # the images are told apart far beyond the bf16 error
    cam_diff = max(float(np.abs(a.cams - b.cams).max()) for a, b in zip(ref, low, strict=True))
    cam_range = max(float(np.abs(a.cams).max()) for a in ref)
    assert cam_diff <= 0.05 * cam_range


def test_runtime_choice_follows_the_hardware() -> None:
    cpu = choose_runtime("cpu", "auto")
    assert cpu.device == "cpu" and cpu.channels_last
    assert cpu.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        assert not cpu_has_native_bf16()
    assert choose_runtime("cpu", "fp32").precision == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        choose_runtime("cpu", "fp16")
    with pytest.raises(ConfigError, match="device"):
        choose_runtime("tpu", "auto")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda"):
            choose_runtime("cuda", "auto")


def test_thread_tuning_and_bad_settings(bundle: Path) -> None:
    before = torch.get_num_threads()
    try:
        assert tune_threads(1) == 1
        assert tune_threads(None) == available_cpus()
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError):
        tune_threads(0)
    with pytest.raises(ConfigError, match="batch_size"):
        TorchPredictor.from_card(bundle, device="cpu", batch_size=0)
    with pytest.raises(ConfigError, match="optimise"):
        TorchPredictor.from_card(bundle, device="cpu", optimise="onnx")  # type: ignore[arg-type]


def test_saving_the_same_network_twice_gives_identical_bytes(tmp_path: Path) -> None:
    """A re-export must reproduce the card's sha256 (safetensors orders metadata by a random hash)."""
    torch.manual_seed(3)
    net = build_network().eval()
    card = ModelCard(name="det", version="0.0.1", preprocessing=SMALL)
    hashes = {
        ModelCard.read(save_bundle(net, card, tmp_path / str(i), "det", dtype=torch.float16)).weights_sha256
        for i in range(8)
    }
    assert len(hashes) == 1


def test_a_tampered_bundle_is_refused(tmp_path: Path) -> None:
    card_path = make_bundle(tmp_path)
    card = ModelCard.read(card_path)
    weights = card_path.parent / card.weights_file
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        TorchPredictor.from_card(card_path)
    bad_card = dataclasses.replace(card, cam_scale=0.0)
    with pytest.raises(ConfigError, match="cam_scale"):
        TorchPredictor(build_network(), bad_card, device="cpu")


@pytest.mark.gpu
def test_cuda_matches_cpu_fp32(bundle: Path, fp32: TorchPredictor) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = prepare_model_input(synthetic_images(1)[0], resize=80, input_size=64)
    gpu = TorchPredictor.from_card(bundle, device="cuda")
    assert gpu.precision in ("bf16", "fp32")
    np.testing.assert_allclose(gpu.predict(x).probabilities, fp32.predict(x).probabilities, atol=0.005)


@pytest.mark.slow
def test_torch_compile_matches_eager(bundle: Path, fp32: TorchPredictor) -> None:
    """The optional compiled path (long-running processes) gives the eager results."""
    x = prepare_model_input(synthetic_images(1, seed=21)[0], resize=80, input_size=64)
    compiled = TorchPredictor.from_card(bundle, device="cpu", precision="fp32", optimise="compile")
    ref = fp32.predict(x)
    got = compiled.predict(x)
    np.testing.assert_allclose(got.probabilities, ref.probabilities, atol=1e-5)
    np.testing.assert_allclose(got.cams, ref.cams, atol=1e-4)
