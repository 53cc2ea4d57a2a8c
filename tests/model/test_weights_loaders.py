"""Foreign checkpoint loaders: each format reproduces an independent reference forward pass.

Fixtures are built from the committed key lists in ``chexnet_dicom/model/data/keys/``
(generated from the DenseNet-121 architecture by ``tests/model/checkpoint_fixtures.py``,
never from the loader's key map) and saved the way the published files were.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from pathlib import Path

import pytest
import torch

from chexnet_dicom.cli import main
from chexnet_dicom.errors import WeightsError
from chexnet_dicom.model.card import IMAGENET_MEAN, IMAGENET_STD, ModelCard, load_bundle
from chexnet_dicom.model.network import head
from chexnet_dicom.model.registry import DEFAULT_CHECKPOINT, REGISTRY, HashSpec, git_blob_sha1
from chexnet_dicom.model.resolve import resolve_weights
from chexnet_dicom.model.weights import (
    fetch,
    import_checkpoint,
    load_checkpoint,
    network_from_torchvision_state,
)
from tests.helpers.checkpoints import (
    KEYS_DIR,
    SPECS,
    densenet121_spec,
    format_spec,
    random_state,
    read_spec,
    reference_forward,
    save_legacy,
    save_reproduce_checkpoint,
    serve_directory,
)

ATOL = 1e-5
ARNOWENG_PREFIX = "module.densenet121."


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="module")
def arnoweng(ckpt_dir: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = random_state(read_spec("arnoweng_chexnet_state_dict.tsv"), seed=1)
    # PyTorch 0.3, legacy serialization, storages saved from GPU memory (DataParallel training)
    return save_legacy({"state_dict": sd}, ckpt_dir / "model.pth.tar", torch03=True, cuda=True), sd


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


# ------------------------------------------------------------------ the committed key lists


@pytest.mark.parametrize("name", sorted(SPECS))
def test_committed_key_lists_match_the_architecture_generator(name: str) -> None:
    assert (KEYS_DIR / name).read_text(encoding="utf-8") == format_spec(densenet121_spec(**SPECS[name]))


@pytest.mark.parametrize(
    ("blocks", "published"),
    # torchvision's documented num_params of DenseNet121/169/201_Weights.IMAGENET1K_V1
    [((6, 12, 24, 16), 7_978_856), ((6, 12, 32, 32), 14_149_480), ((6, 12, 48, 32), 20_013_928)],
)
def test_generator_reproduces_torchvision_published_parameter_counts(
    blocks: tuple[int, ...], published: int
) -> None:
    entries = densenet121_spec(dotted=True, counters=False, head="imagenet", blocks=blocks)
    learnable = [s for k, s, _ in entries if not k.endswith(("running_mean", "running_var"))]
    assert sum(math.prod(s) for s in learnable) == published


def test_published_layout_counts() -> None:
    legacy = read_spec("torchvision_densenet121_imagenet.tsv")
    # 120 convolutions, 121 BatchNorms x 4 tensors, Linear weight + bias; no counters in 2017.
    assert len(legacy) == 120 + 121 * 4 + 2
    assert sum(k.endswith("norm.1.weight") for k, _, _ in legacy) == sum((6, 12, 24, 16))
    assert len(read_spec("torchvision_densenet121_current.tsv")) == 120 + 121 * 5 + 2


# ------------------------------------------------------------------ formats vs reference


def test_arnoweng_legacy_torch03_matches_reference(
    arnoweng: tuple[Path, dict[str, torch.Tensor]], image: torch.Tensor
) -> None:
    path, sd = arnoweng
    assert not zipfile.is_zipfile(path)  # legacy serialization, like the published file
    net, fmt = load_checkpoint(path, "arnoweng")
    assert fmt == "arnoweng"
    assert not net.training
    with torch.no_grad():
        _, ref = reference_forward(sd, image, dotted=True, prefix=ARNOWENG_PREFIX)
        out = net(image)
    assert ref is not None
    assert out.shape == (1, 14)
    assert _max_diff(out, ref) <= ATOL
    assert float(ref.abs().max()) > 0.05  # a meaningful comparison, not zeros against zeros


@pytest.mark.parametrize(
    ("list_name", "dotted", "zip_format"),
    [
        ("torchvision_densenet121_imagenet.tsv", True, False),
        ("torchvision_densenet121_current.tsv", False, True),
    ],
)
def test_torchvision_imagenet_features_match_reference_and_head_is_dropped(
    ckpt_dir: Path, image: torch.Tensor, list_name: str, dotted: bool, zip_format: bool
) -> None:
    sd = random_state(read_spec(list_name), seed=2)
    path = ckpt_dir / f"imagenet-{dotted}.pth"
    if zip_format:
        torch.save(sd, path)
    else:
        save_legacy(sd, path, torch03=True)
    net, fmt = load_checkpoint(path)
    assert fmt == "torchvision-imagenet"
    with torch.no_grad():
        ref, _ = reference_forward(sd, image, dotted=dotted)
        feats = net.features(image)  # type: ignore[operator]
    assert _max_diff(feats, ref) <= ATOL
    assert tuple(head(net).weight.shape) == (14, 1024)


@pytest.mark.parametrize("torch03", [True, False], ids=["pytorch0.3", "pytorch0.4"])
def test_reproduce_chexnet_whole_model_pickle_matches_reference(
    ckpt_dir: Path, image: torch.Tensor, torch03: bool
) -> None:
    spec = read_spec("reproduce_chexnet_model.tsv")
    if not torch03:  # PyTorch >= 0.4 adds BatchNorm counters to the same layout
        spec = densenet121_spec(dotted=True, counters=True, head="chexnet")
    sd = random_state(spec, seed=3)
    path = save_reproduce_checkpoint(ckpt_dir / f"checkpoint-{torch03}", sd, torch03=torch03)
    net, fmt = load_checkpoint(path)
    assert fmt == "reproduce-chexnet"
    with torch.no_grad():
        _, ref = reference_forward(sd, image, dotted=True)
        out = net(image)
    assert ref is not None
    assert _max_diff(out, ref) <= ATOL


# ------------------------------------------------------------------ import into the own format


def test_import_arnoweng_bundle_round_trip(
    arnoweng: tuple[Path, dict[str, torch.Tensor]], image: torch.Tensor, tmp_path: Path
) -> None:
    path, sd = arnoweng
    result = import_checkpoint(path, tmp_path, source_url="https://example.invalid/model.pth.tar")
    net, card = load_bundle(result.card_path)
    with torch.no_grad():
        _, ref = reference_forward(sd, image, dotted=True, prefix=ARNOWENG_PREFIX)
        out = net(image)
    assert ref is not None
    assert _max_diff(out, ref) <= ATOL  # fp32 storage keeps the imported values
    pre = card.preprocessing
    assert (pre.resize, pre.input_size, pre.tta) == (256, 224, "tencrop")
    assert (pre.mean, pre.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert result.sha256 in card.source
    assert card.training["imported_file"]["git_blob_sha1"] == result.git_blob_sha1
    assert ModelCard.read(result.card_path).weights_dtype == "float32"


def test_import_reproduce_records_its_preprocessing(ckpt_dir: Path, tmp_path: Path) -> None:
    sd = random_state(read_spec("reproduce_chexnet_model.tsv"), seed=4)
    path = save_reproduce_checkpoint(ckpt_dir / "checkpoint-import", sd, torch03=True)
    card = ModelCard.read(import_checkpoint(path, tmp_path, fmt="reproduce-chexnet").card_path)
    assert (card.preprocessing.resize, card.preprocessing.input_size, card.preprocessing.tta) == (
        224,
        224,
        "none",
    )


# ------------------------------------------------------------------ mismatches are errors


def _arnoweng_variant(ckpt_dir: Path, name: str, edit: object) -> Path:
    sd = random_state(read_spec("arnoweng_chexnet_state_dict.tsv"), seed=5)
    edit(sd)  # type: ignore[operator]
    return save_legacy({"state_dict": sd}, ckpt_dir / name, torch03=True)


def _torchvision_state(edit: object) -> dict[str, torch.Tensor]:
    spec = [
        (k.removeprefix(ARNOWENG_PREFIX), s, d) for k, s, d in read_spec("arnoweng_chexnet_state_dict.tsv")
    ]
    sd = dict(random_state(spec, seed=6))
    edit(sd)  # type: ignore[operator]
    return sd


def test_wrong_label_count_is_an_error(ckpt_dir: Path) -> None:
    def fifteen(sd: dict[str, torch.Tensor]) -> None:
        sd[ARNOWENG_PREFIX + "classifier.0.weight"] = torch.randn(15, 1024)
        sd[ARNOWENG_PREFIX + "classifier.0.bias"] = torch.randn(15)

    with pytest.raises(WeightsError, match=r"head has 15 outputs.*14"):
        load_checkpoint(_arnoweng_variant(ckpt_dir, "fifteen.pth.tar", fifteen))


def test_missing_tensor_is_an_error_not_a_random_layer(ckpt_dir: Path) -> None:
    def drop(sd: dict[str, torch.Tensor]) -> None:
        del sd[ARNOWENG_PREFIX + "features.denseblock3.denselayer7.conv.2.weight"]

    with pytest.raises(WeightsError, match=r"1 missing.*denseblock3\.denselayer7\.layers\.conv2\.weight"):
        load_checkpoint(_arnoweng_variant(ckpt_dir, "missing.pth.tar", drop))


def test_mis_shaped_tensor_is_an_error() -> None:
    def reshape(sd: dict[str, torch.Tensor]) -> None:
        sd["features.transition2.conv.weight"] = torch.randn(256, 512, 3, 3)

    with pytest.raises(WeightsError, match=r"wrong shape.*transition2"):
        network_from_torchvision_state(_torchvision_state(reshape), "sequential")


def test_unknown_key_is_an_error() -> None:
    def extra(sd: dict[str, torch.Tensor]) -> None:
        sd["features.denseblock4.denselayer17.conv.1.weight"] = torch.randn(128, 1024, 1, 1)

    with pytest.raises(WeightsError, match=r"1 unexpected.*denselayer17"):
        network_from_torchvision_state(_torchvision_state(extra), "sequential")


def test_key_outside_densenet_is_an_error() -> None:
    def extra(sd: dict[str, torch.Tensor]) -> None:
        sd["fc.weight"] = torch.randn(14, 1024)

    with pytest.raises(WeightsError, match=r"'fc.weight' has no place in DenseNet-121"):
        network_from_torchvision_state(_torchvision_state(extra), "sequential")


def test_mixed_key_styles_are_an_error() -> None:
    def mixed(sd: dict[str, torch.Tensor]) -> None:
        sd["features.denseblock1.denselayer1.norm1.weight"] = sd[
            "features.denseblock1.denselayer1.norm.1.weight"
        ]

    with pytest.raises(WeightsError, match="twice"):
        network_from_torchvision_state(_torchvision_state(mixed), "sequential")


def test_non_finite_weights_are_an_error() -> None:
    def nan(sd: dict[str, torch.Tensor]) -> None:
        sd["features.norm5.running_var"][3] = float("nan")

    with pytest.raises(WeightsError, match="NaN"):
        network_from_torchvision_state(_torchvision_state(nan), "sequential")


def test_declared_format_must_match(arnoweng: tuple[Path, dict[str, torch.Tensor]]) -> None:
    with pytest.raises(WeightsError, match="format 'arnoweng', not 'reproduce-chexnet'"):
        load_checkpoint(arnoweng[0], "reproduce-chexnet")
    with pytest.raises(WeightsError, match="unknown checkpoint format"):
        load_checkpoint(arnoweng[0], "keras")


# ------------------------------------------------------------------ fetch + CLI end to end


@pytest.mark.network
def test_fetch_downloads_verifies_converts_and_resolves(
    arnoweng: tuple[Path, dict[str, torch.Tensor]],
    image: torch.Tensor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, sd = arnoweng
    monkeypatch.setenv("CHEXDCM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CHEXDCM_WEIGHTS", raising=False)
    real = REGISTRY[DEFAULT_CHECKPOINT]
    blob = git_blob_sha1(path)
    with serve_directory(path.parent) as base:
        entry = dataclasses.replace(
            real, url=f"{base}/{path.name}", hash=HashSpec("git-blob-sha1", blob), max_bytes=64 << 20
        )
        monkeypatch.setitem(REGISTRY, entry.name, entry)
        raw, card_path = fetch(entry.name)
    assert raw.read_bytes() == path.read_bytes()
    assert card_path is not None
    assert resolve_weights()[0] == card_path
    net, card = load_bundle(card_path)
    assert card.training["imported_file"]["git_blob_sha1"] == blob
    with torch.no_grad():
        _, ref = reference_forward(sd, image, dotted=True, prefix=ARNOWENG_PREFIX)
        assert ref is not None
        assert _max_diff(net(image), ref) <= ATOL
    # a second fetch is offline (server gone) and reuses the verified bundle
    assert fetch(entry.name) == (raw, card_path)


def test_cli_import_and_info(
    arnoweng: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = arnoweng
    out = tmp_path / "bundle"
    assert main(["weights", "import", "arnoweng", str(path), "--out", str(out), "--dtype", "float16"]) == 0
    card_path = out / "chexnet-arnoweng.card.json"
    assert ModelCard.read(card_path).weights_dtype == "float16"
    capsys.readouterr()
    assert main(["weights", "info", str(card_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "bundle" and info["preprocessing"]["tta"] == "tencrop"
    assert main(["weights", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["serialization"]) == ("arnoweng", "legacy")
    assert info["git_blob_sha1"] == git_blob_sha1(path)
    # tampering with the bundle's tensors is caught by info (sha256 in the card)
    tensors = out / "chexnet-arnoweng.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-10] ^= 0xFF
    tensors.write_bytes(bytes(data))
    assert main(["weights", "info", str(card_path)]) == 1
    assert "tampered" in capsys.readouterr().err
    assert main(["weights", "import", "keras", str(path), "--out", str(out)]) == 1
