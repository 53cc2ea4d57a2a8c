"""``benchmarks/localisation.py``: box parsing and scaling, pointing, baselines, bookkeeping.

The scoring is checked with synthetic heatmaps whose peak is placed inside or outside a
known box (including a point that is inside the box only if the 1024-pixel coordinates
were *not* scaled to the 512-pixel image), and the core function runs end to end on
real NIH pairs with a seeded network.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from chexnet_dicom.model.card import ModelCard, save_bundle
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.network import build_network
from chexnet_dicom.model.predictor import available_cpus
from chexnet_dicom.model.torch_backend import TorchPredictor
from tests.helpers.shared import REPO


def _load() -> ModuleType:
    name = "chexdcm_bench_localisation"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "localisation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


loc = _load()


def _maps(shape: tuple[int, int], peaks: dict[str, tuple[int, int]]) -> np.ndarray:
    """(14, rows, cols) maps: a smooth bump at ``peaks[finding]``, a weaker one elsewhere."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    maps = np.zeros((len(LABELS), *shape), dtype=np.float32)
    for i, name in enumerate(LABELS):
        r, c = peaks.get(name, (shape[0] - 40, 40))
        maps[i] = np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 12.0**2))
    return maps


def test_read_boxes_maps_names_and_keeps_original_coordinates(nih_dir: Path) -> None:
    boxes = loc.read_boxes(nih_dir / "BBox_List_2017.csv.gz")
    assert len(boxes) == 984  # the official list
    assert {b.finding for b in boxes} <= set(LABELS)
    assert "Infiltration" in {b.finding for b in boxes}  # "Infiltrate" in the file
    xs = np.array([b.box for b in boxes])
    assert (
        xs.min() >= 0 and (xs[:, 0] + xs[:, 2]).max() <= 1024 + 1 and (xs[:, 1] + xs[:, 3]).max() <= 1024 + 1
    )


def test_box_scaling_and_pointing_with_known_peaks() -> None:
    shape = (512, 512)
    # box in original 1024 px: x 200..300, y 200..300 -> x 100..150, y 100..150 on 512 px
    pair = loc.BoxPair("a.png", "Mass", (200.0, 200.0, 100.0, 100.0))
    assert loc.scale_box(pair.box, shape) == (100.0, 100.0, 150.0, 150.0)
    other = loc.BoxPair("b.png", "Mass", (600.0, 600.0, 200.0, 100.0))
    pairs = [pair, loc.BoxPair("c.png", "Nodule", (200.0, 200.0, 100.0, 100.0)), other]
    heat = {
        "a.png": loc.Heatmaps(_maps(shape, {"Mass": (125, 125)})),  # inside the scaled box
        # inside the *unscaled* box (250, 250) but outside the scaled one: must miss
        "c.png": loc.Heatmaps(_maps(shape, {"Nodule": (250, 250), "Mass": (125, 125)})),
        # 8 px right of the scaled box (x1 = 400): a miss, a hit with a 32-px (16 on 512) margin
        "b.png": loc.Heatmaps(_maps(shape, {"Mass": (320, 408)})),
    }
    res = loc.score(pairs, heat, pairs, margin=32.0)
    assert [r.point for r in res] == [(125.0, 125.0), (250.0, 250.0), (320.0, 408.0)]
    assert [r.hit for r in res] == [True, False, False]
    assert [r.hit_margin for r in res] == [True, False, True]
    # the centre (255.5, 255.5) is in no box; uniform = box area share
    assert all(r.baseline["centre"] == 0.0 for r in res)
    assert res[0].baseline["uniform"] == pytest.approx(50 * 50 / 512**2)
    assert res[0].baseline_margin["uniform"] == pytest.approx(82 * 82 / 512**2)
    # leave-the-image-out prior of "Mass" for a.png is b.png's box and vice versa
    assert res[0].baseline["prior-mode"] == 0.0 and res[0].baseline["prior-mean"] == 0.0
    # c.png's Nodule has no other Nodule box: the priors fall back to the centre
    assert res[1].baseline["prior-mean"] == res[1].baseline["centre"]

    summ = loc.summarise(res)
    assert set(summ) == {"Mass", "Nodule", "overall"}
    assert (summ["overall"].n, summ["overall"].hits, summ["overall"].hits_margin) == (3, 1, 2)
    assert (summ["Mass"].n, summ["Mass"].hits) == (2, 1) and summ["Nodule"].hits == 0
    lines = loc.report(res, 32.0)
    assert any("overall pointing-game hit rate: 0.333 (1/3" in line for line in lines)


def test_peak_ignores_pixels_the_network_did_not_see() -> None:
    maps = np.full((4, 4), -1.0)
    maps[0, 0] = 5.0  # outside the crop: never the answer
    maps[2, 1] = -0.5
    valid = np.zeros((4, 4), dtype=bool)
    valid[1:3, 1:3] = True
    assert loc.peak(maps, valid) == (2.0, 1.0)
    assert loc.peak(maps) == (0.0, 0.0)


def test_prior_mode_points_where_other_boxes_overlap() -> None:
    shape = (512, 512)
    boxes = [
        loc.BoxPair("x.png", "Effusion", (0.0, 800.0, 400.0, 200.0)),
        loc.BoxPair("y.png", "Effusion", (100.0, 850.0, 400.0, 100.0)),
        loc.BoxPair("z.png", "Effusion", (600.0, 0.0, 100.0, 100.0)),
    ]
    target = loc.BoxPair("t.png", "Effusion", (200.0, 880.0, 100.0, 40.0))
    pts = loc.prior_points(target, boxes, shape)
    r, c = pts["prior-mode"]
    # covered by x and y: x 50..200, y 425..475 on 512 px
    assert 425 <= r + 0.5 <= 475 and 50 <= c + 0.5 <= 200
    assert loc.inside(pts["prior-mode"], loc.scale_box(target.box, shape))


def test_pointing_game_on_real_pairs_with_a_seeded_network(nih_dir: Path, tmp_path: Path) -> None:
    boxes = loc.read_boxes(nih_dir / "BBox_List_2017.csv.gz")
    present = {p.name for p in (nih_dir / "images").iterdir()}
    pairs = [b for b in boxes if b.image in present][:3]
    assert len(pairs) == 3
    with torch.random.fork_rng():
        torch.manual_seed(7)
        net = build_network().eval()
    card = save_bundle(
        net, ModelCard(name="seeded-loc", version="0"), tmp_path, "seeded", dtype=torch.float32
    )
    predictor = TorchPredictor.from_card(
        card, device="cpu", precision="fp32", threads=min(2, available_cpus())
    )
    res = loc.pointing_game(predictor, pairs, nih_dir / "images", boxes, margin=32.0)
    assert [(r.image, r.finding) for r in res] == [(p.image, p.finding) for p in pairs]
    hm = loc.model_heatmaps(predictor, nih_dir / "images" / pairs[0].image)
    assert hm.maps.shape == (14, 512, 512) and hm.valid is not None
    # the centre crop (224 of 256) covers the middle 7/8 of the image, not the border
    assert hm.valid[256, 256] and not hm.valid[5, 5] and 0.7 < hm.valid.mean() < 0.8
    for r in res:
        assert hm.valid is not None
        assert 0 <= r.point[0] < 512 and 0 <= r.point[1] < 512
        assert r.hit == loc.inside(r.point, r.rect) and (r.hit_margin or not r.hit)
        assert r.probability is not None and 0.0 < r.probability < 1.0
        assert all(0.0 <= v <= 1.0 for v in r.baseline.values()) and set(r.baseline) == set(loc.BASELINES)
        x0, y0, x1, y1 = r.rect
        assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512  # scaled to the 512-px image
    # the point is the arg-max of that finding's map over the pixels the network saw
    first = res[0]
    i = LABELS.index(first.finding)
    assert hm.maps[i][int(first.point[0]), int(first.point[1])] == pytest.approx(hm.maps[i][hm.valid].max())
    s = loc.summarise(res)["overall"]
    assert s.n == 3 and 0 <= s.hits <= s.hits_margin <= 3


def test_main_prints_report_and_writes_json(
    nih_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    boxes = loc.read_boxes(nih_dir / "BBox_List_2017.csv.gz")
    present = sorted({p.name for p in (nih_dir / "images").iterdir()} & {b.image for b in boxes})[:2]
    for name in present:
        (images / name).symlink_to(nih_dir / "images" / name)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        net = build_network().eval()
    card = save_bundle(
        net, ModelCard(name="seeded-loc", version="0"), tmp_path, "seeded", dtype=torch.float32
    )
    out = tmp_path / "loc.json"
    rc = loc.main(
        [
            "--weights",
            str(card),
            "--images",
            str(images),
            "--precision",
            "fp32",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    n = sum(b.image in present for b in boxes)
    assert f"pairs: {n} (image, box) pairs on 2 images" in text
    assert "overall pointing-game hit rate" in text and "vs centre" in text and "ratio" in text
    import json

    data = json.loads(out.read_text())
    assert len(data["pairs"]) == n and data["summary"]["overall"]["n"] == n
    assert loc.main(["--weights", str(tmp_path / "missing.card.json")]) == 2


def test_tencrop_heatmaps_cover_the_whole_image(nih_dir: Path, tmp_path: Path) -> None:
    """With TenCrop the four corner crops reach the border: every pixel may be pointed at."""
    from chexnet_dicom.model.card import Preprocessing

    with torch.random.fork_rng():
        torch.manual_seed(5)
        net = build_network().eval()
    card = ModelCard(name="seeded-loc", version="0", preprocessing=Preprocessing(resize=80, input_size=64))
    path = save_bundle(net, card, tmp_path, "small", dtype=torch.float32)
    image = sorted((nih_dir / "images").glob("*.png"))[0]
    centre = loc.model_heatmaps(
        TorchPredictor.from_card(path, device="cpu", precision="fp32", threads=1), image
    )
    tta = TorchPredictor.from_card(path, device="cpu", precision="fp32", threads=1, tta="tencrop")
    ten = loc.model_heatmaps(tta, image)
    assert centre.valid is not None and ten.valid is not None
    assert ten.maps.shape == centre.maps.shape == (14, 512, 512)
    assert ten.valid.all() and not centre.valid.all()
    assert ten.probabilities is not None and not np.allclose(ten.probabilities, centre.probabilities)


def test_plateau_ties_and_flat_maps() -> None:
    shape = (64, 64)
    plateau = np.zeros(shape)
    plateau[10:21, 30:41] = 1.0  # a flat-topped peak: the answer is its centre, not its corner
    assert loc.peak(plateau) == (15.0, 35.0)
    assert not loc.is_flat(plateau)
    flat = np.full((len(LABELS), *shape), 0.25, dtype=np.float32)
    assert loc.is_flat(flat[0]) and loc.peak(flat[0]) == (31.0, 31.0)
    # a box around the image centre: a flat map's tie point would land in it, but a
    # flat map points nowhere and counts as a miss
    pair = loc.BoxPair("f.png", "Edema", (448.0, 448.0, 128.0, 128.0))
    (res,) = loc.score([pair], {"f.png": loc.Heatmaps(flat)}, [pair])
    assert res.flat and not res.hit and not res.hit_margin
    assert res.baseline["centre"] == 1.0
    assert any("FLAT MAP" in line for line in loc.report([res], 32.0))
