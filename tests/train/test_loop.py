"""Training loop: input equivalence, schedules, augmentation, resume, cache, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from chexnet_dicom.config import AugmentConfig, load_train_config
from chexnet_dicom.errors import ConfigError
from chexnet_dicom.train.augment import augment_batch, epoch_schedule, step_generator
from chexnet_dicom.train.cache import ImageCache, build_cache, quantise
from chexnet_dicom.train.data import nih_records, read_training_image
from chexnet_dicom.train.datasets import load_dataset, to_model_input
from chexnet_dicom.train.fit import fit
from chexnet_dicom.transforms import prepare_model_input, resize_image
from tests.helpers.shared import REPO
from tests.helpers.train import make_nih_dataset, tiny_recipe


def test_torch_input_matches_prepare_model_input() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((70, 90)).astype(np.float32)
    resized = resize_image(image, 40)
    ours = to_model_input(torch.from_numpy(resized.copy())[None], 32)[0].numpy()
    ref = prepare_model_input(image, resize=40, input_size=32)
    assert ours.shape == ref.shape == (3, 32, 32)
    assert np.abs(ours - ref).max() < 1e-5


def test_epoch_schedule_covers_and_splits_ranks() -> None:
    steps = epoch_schedule(37, epoch=3, seed=5, batch_size=4, world=2)
    flat = np.concatenate([np.concatenate(s) for s in steps])
    assert len(flat) == len(set(flat.tolist())) == 37  # last global batch 5 -> 3 + 2, kept
    assert all(len(s) == 2 for s in steps)
    assert [len(p) for p in steps[0]] == [4, 4]
    # the same per-rank batches for every call; a different order next epoch
    again = epoch_schedule(37, epoch=3, seed=5, batch_size=4, world=2)
    assert all(
        np.array_equal(a, b) for s, t in zip(steps, again, strict=True) for a, b in zip(s, t, strict=True)
    )
    other = epoch_schedule(37, epoch=4, seed=5, batch_size=4, world=2)
    assert not np.array_equal(steps[0][0], other[0][0])
    # a final batch that would give a rank a single image is dropped
    short = epoch_schedule(17, epoch=0, seed=0, batch_size=4, world=2)
    assert sum(len(p) for s in short for p in s) == 16


def test_augmentation_is_deterministic_and_bounded() -> None:
    x = torch.rand(6, 40, 40)
    cfg = AugmentConfig(
        hflip=0.5, rotate_deg=7, scale=(0.9, 1.1), translate=0.05, brightness=0.1, contrast=0.2
    )
    a = augment_batch(x, cfg, step_generator(1, 2, 3, 0))
    b = augment_batch(x, cfg, step_generator(1, 2, 3, 0))
    c = augment_batch(x, cfg, step_generator(1, 2, 3, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    # flip only: every image is either itself or its mirror
    f = augment_batch(x, AugmentConfig(hflip=0.5), step_generator(0, 0, 0, 0))
    for i in range(6):
        assert torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(-1))


def test_cache_stores_quantised_resized_display_images(tmp_path: Path) -> None:
    images, labels = make_nih_dataset(tmp_path, n=5, size=40)
    recs = nih_records(images, labels)
    cache = build_cache(recs, tmp_path / "c", size=24, dtype="uint8")
    assert len(cache) == 5 and cache.array.dtype == np.uint8 and cache.array.shape == (5, 24, 24)
    for r in recs:
        ref = quantise(resize_image(read_training_image(r.path), 24), "uint8")
        assert np.array_equal(cache.array[cache.row(r.key)], ref)
    mtime = (tmp_path / "c" / "images.npy").stat().st_mtime_ns
    build_cache(recs, tmp_path / "c", size=24, dtype="uint8")  # same fingerprint: reused
    assert (tmp_path / "c" / "images.npy").stat().st_mtime_ns == mtime
    wide = build_cache(recs, tmp_path / "c", size=24, dtype="uint16")  # different spec: rebuilt
    assert wide.array.dtype == np.uint16
    assert np.abs(wide.image(0) - ImageCache(tmp_path / "c").image(0)).max() == 0
    assert (
        np.abs(wide.image(0) - resize_image(read_training_image(recs[0].path), 24)).max()
        <= 0.5 / 65535 + 1e-7
    )


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    p = tmp_path / "r.toml"
    p.write_text("[train]\nepochs = 2\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(p)
    p.write_text("[augment]\nhflip = 2.0\n")
    with pytest.raises(ConfigError):
        load_train_config(p)


def test_recipes_in_pipelines_load() -> None:
    demo = load_train_config(REPO / "pipelines" / "demo_nih500.toml")
    assert demo.train.batch_size == 16 and demo.train.lr == 1e-3 and demo.train.plateau_factor == 0.1
    assert demo.augment.hflip == 0.5 and demo.output.stem == "chexnet_demo"
    full = load_train_config(REPO / "pipelines" / "train_chexnet_nih.toml")
    assert full.preprocessing.resize == 256 and full.preprocessing.input_size == 224


def _params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_resume_is_exact(tmp_path: Path) -> None:
    images, labels = make_nih_dataset(tmp_path, n=20, size=40)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    cfg_a = load_train_config(tiny_recipe(a_dir, images, labels, epochs=2))
    res = fit(cfg_a, progress=False)
    assert res.epochs_done == 2
    cfg_b1 = load_train_config(tiny_recipe(b_dir, images, labels, epochs=1))
    fit(cfg_b1, progress=False)
    cfg_b2 = load_train_config(tiny_recipe(b_dir, images, labels, epochs=2))
    res_b = fit(cfg_b2, resume=b_dir / "run" / "last.pt", progress=False)
    assert res_b.epochs_done == 2
    pa, pb = _params(a_dir / "run" / "last.pt"), _params(b_dir / "run" / "last.pt")
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    ca = torch.load(a_dir / "run" / "last.pt", weights_only=True)
    cb = torch.load(b_dir / "run" / "last.pt", weights_only=True)
    assert ca["scheduler"] == cb["scheduler"]
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    rows_a = list(csv.DictReader((a_dir / "run" / "log.csv").open()))
    rows_b = list(csv.DictReader((b_dir / "run" / "log.csv").open()))
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]
    assert [r["val_loss"] for r in rows_a] == [r["val_loss"] for r in rows_b]
    assert json.loads((a_dir / "run" / "config.json").read_text())["train"]["epochs"] == 2


def test_cli_trains_and_exports_a_loadable_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.metrics import roc_auc_score

    from chexnet_dicom.cli import main
    from chexnet_dicom.model.card import load_bundle
    from chexnet_dicom.model.labels import LABELS

    images, labels = make_nih_dataset(tmp_path, n=30, size=40)
    recipe = tiny_recipe(tmp_path, images, labels, epochs=1)
    export = tmp_path / "bundle"
    code = main(
        [
            "train",
            "--config",
            str(recipe),
            "--no-progress",
            "--set",
            f"output.export_dir={export}",
            "--set",
            "output.stem=tiny",
            "--set",
            "output.bootstrap=50",
        ]
    )
    assert code == 0
    assert "epoch 1:" in capsys.readouterr().out
    _net, card = load_bundle(export / "tiny.card.json")
    assert card.weights_dtype == "float16" and card.preprocessing.resize == 36
    assert card.cam_scale > 0
    assert all(op.method == "youden:validation" for op in card.operating_points.values())
    split = card.training["split"]
    assert sum(split["sizes"].values()) == 30 and set(split["positives"]) == {"train", "validation", "test"}
    rows = list(csv.DictReader((export / "tiny.test_predictions.csv").open()))
    assert len(rows) == split["sizes"]["test"]
    per_class = card.metrics["test"]["per_class"]
    for name in LABELS:  # the card's test AUROC is recomputable from the predictions file
        y = [int(r[f"label_{name}"]) for r in rows]
        if 0 < sum(y) < len(y):
            auc = roc_auc_score(y, [float(r[name]) for r in rows])
            assert per_class[name]["auroc"] == pytest.approx(auc, abs=1e-4)
        else:
            assert per_class[name]["auroc"] is None
    # re-exporting the finished run gives the same weights and the same numbers
    again = tmp_path / "again"
    args = ["train", "--config", str(recipe), "--export-only", "--set", "output.stem=tiny"]
    assert main([*args, "--set", f"output.export_dir={again}", "--set", "output.bootstrap=50"]) == 0
    _net2, card2 = load_bundle(again / "tiny.card.json")
    assert card2.weights_sha256 == card.weights_sha256
    assert card2.metrics == card.metrics and card2.operating_points == card.operating_points


def test_cli_config_errors_exit_2(tmp_path: Path) -> None:
    from chexnet_dicom.cli import main

    images, labels = make_nih_dataset(tmp_path, n=6, size=16)
    recipe = tiny_recipe(tmp_path, images, labels)
    assert main(["train", "--config", str(recipe), "--set", "train.nonsense=1"]) == 2
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2


def test_fit_on_dicom_folder_with_uint16_cache_and_bf16(tmp_path: Path) -> None:
    from chexnet_dicom.testing import synth

    folder = tmp_path / "dicom"
    folder.mkdir()
    rows = ["SOPInstanceUID,PatientID,Finding Labels"]
    for i in range(16):
        ds = synth.make_dataset(
            synth.chest_phantom(48, seed=i), patient_id=f"P{i}", seed=i, study_key=f"s{i}", bits_stored=12
        )
        synth.write(ds, folder / f"{i}.dcm")
        rows.append(f"{ds.SOPInstanceUID},P{i},{'Effusion' if i % 3 == 0 else 'No Finding'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    recipe = tiny_recipe(
        tmp_path,
        folder,
        tmp_path / "labels.csv",
        epochs=3,
        precision="bf16",
        channels_last="on",
        max_minutes=0.001,
    )
    text = recipe.read_text().replace('format = "nih"', 'format = "dicom"\ncache_dtype = "uint16"')
    recipe.write_text(text)
    cfg = load_train_config(recipe)
    res = fit(cfg, progress=False)
    # the time budget stops the run after the first epoch; losses are finite under bf16
    assert res.epochs_done == 1 and res.stopped_by_budget
    assert np.isfinite(res.history[0]["train_loss"]) and np.isfinite(res.history[0]["val_loss"])
    cache = ImageCache(tmp_path / "cache" / "dicom-36-uint16")
    _, assign = load_dataset(cfg.data)
    # only training and validation images are cached: the held-out test set is never read
    assert cache.array.dtype == np.uint16 and len(cache) == sum(s != "test" for s in assign) < 16


def test_validation_on_cache_matches_inference_path(tmp_path: Path) -> None:
    from chexnet_dicom.model.card import Preprocessing
    from chexnet_dicom.model.network import build_network
    from chexnet_dicom.train.datasets import CachedImages
    from chexnet_dicom.train.export import predict_records
    from chexnet_dicom.train.fit import predict_cached

    images, labels = make_nih_dataset(tmp_path, n=6, size=64)
    recs = nih_records(images, labels)
    cache = build_cache(recs, tmp_path / "c", size=40, dtype="uint8")
    torch.manual_seed(0)
    net = build_network().eval()
    logits, _ = predict_cached(
        net,
        CachedImages(cache, np.arange(6), np.stack([r.labels for r in recs])),
        input_size=32,
        scale=1 / 255,
        device=torch.device("cpu"),
        batch_size=4,
        bf16=False,
        channels_last=False,
    )
    probs, cam_ref = predict_records(
        net, recs, Preprocessing(resize=40, input_size=32), cam_labels=np.ones((6, 14), np.float32)
    )
    # same network input up to the cache's 8-bit quantisation of the resized image
    assert np.abs(1 / (1 + np.exp(-logits)) - probs).max() < 1e-3  # a 44 px resize gives ~9e-3
    assert cam_ref is not None and cam_ref > 0


@pytest.mark.parametrize("policy", ["zeros", "ones"])
def test_fit_on_chexpert_style_csv(tmp_path: Path, policy: str) -> None:
    from PIL import Image

    from chexnet_dicom.testing.synth import chest_phantom

    lines = ["Path,Sex,Age,Frontal/Lateral,AP/PA,Cardiomegaly,Pleural Effusion,Edema"]
    for i in range(12):
        rel = f"train/patient{i // 2:05d}/study1/view{i % 2 + 1}_frontal.png"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        img = np.rint(chest_phantom(40, seed=i) * 255).astype(np.uint8)
        Image.fromarray(img, mode="L").save(tmp_path / rel)
        lines.append(f"{rel},F,50,Frontal,PA,{[1, 0, -1][i % 3]},{[0, -1, 1][i % 3]},")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    recipe = tiny_recipe(tmp_path, tmp_path, tmp_path / "train.csv", epochs=1)
    recipe.write_text(
        recipe.read_text().replace('format = "nih"', f'format = "chexpert"\nuncertain = "{policy}"')
    )
    cfg = load_train_config(recipe)
    records, _ = load_dataset(cfg.data)
    assert len({r.patient for r in records}) == 6
    card_idx = 1  # Cardiomegaly
    expected = [1.0, 0.0, 1.0 if policy == "ones" else 0.0]
    assert [records[i].labels[card_idx] for i in range(3)] == expected
    res = fit(cfg, progress=False)
    assert res.epochs_done == 1 and np.isfinite(res.history[0]["val_loss"])
