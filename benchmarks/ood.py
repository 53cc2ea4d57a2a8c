#!/usr/bin/env python
"""Out-of-distribution detection benchmark: AUROC and FPR95 per method and per shift.

Usage::

    .venv/bin/python benchmarks/ood.py [--card CARD] [--shift-images N] [--ship]

* Reference: the card's own training split (``pipelines/splits/nih500_split.csv``: the
  ``train`` images fit the feature mean and Ledoit-Wolf covariance, the ``validation``
  images set each method's threshold at 95% of them below it).
* In-distribution: the ``test`` split of the NIH images (never trained on).
* Out-of-distribution, each case apart: the real non-chest radiographs of
  ``../shared/data/dicom/other_xray`` (read without the gate), and synthetic shifts of
  the held-out NIH images at three severities (inversion, rotation, crop and zoom,
  Gaussian noise, blur, contrast compression, JPEG quality).
* Near inputs: the seven real chest files of ``../shared/data/dicom/chest`` with their
  scores and flags (not counted as OOD).

Scores are computed from one forward pass of the default CPU predictor (pooled features
and logits), exactly as every front door computes them.  ``--ship`` writes the fitted
reference into the card it benchmarks (the demo bundle by default).
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chexnet_dicom.model.backends import load_predictor  # noqa: E402
from chexnet_dicom.model.ood import METHODS, OodReference, attach_reference, detection_metrics, fit_reference  # noqa: E402
from chexnet_dicom.model.resolve import DEMO_CARD  # noqa: E402
from chexnet_dicom.train.data import read_training_image  # noqa: E402
from chexnet_dicom.train.ood_calibration import (  # noqa: E402
    attach_drift_reference,
    drift_observations,
    features_and_logits,
    features_and_logits_of,
    predict_images,
)

Shift = Callable[[np.ndarray], np.ndarray]


def _shared() -> Path:
    for root in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if root.is_dir():
            return root
    raise SystemExit("shared data not found (../shared/data)")


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _back(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float32) / 255.0


def _crop(frac: float) -> Shift:
    def f(img: np.ndarray) -> np.ndarray:
        h, w = img.shape
        ch, cw = max(8, int(h * frac)), max(8, int(w * frac))
        top, left = (h - ch) // 3, (w - cw) // 2  # off-centre, as a zoomed detail view
        return _back(_pil(img[top : top + ch, left : left + cw]).resize((w, h), Image.BILINEAR))

    return f


def _noise(sigma: float) -> Shift:
    def f(img: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(int(img.sum() * 1000) % (2**32))
        return np.clip(img + rng.normal(0, sigma, img.shape), 0, 1).astype(np.float32)

    return f


def _blur(radius: float) -> Shift:
    return lambda img: _back(_pil(img).filter(ImageFilter.GaussianBlur(radius)))


def _contrast(c: float) -> Shift:
    return lambda img: (0.5 + (img - 0.5) * c).astype(np.float32)


def _jpeg(q: int) -> Shift:
    def f(img: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        _pil(img).save(buf, format="JPEG", quality=q)
        return _back(Image.open(io.BytesIO(buf.getvalue())).convert("L"))

    return f


def _invert(a: float) -> Shift:
    return lambda img: ((1 - a) * img + a * (1 - img)).astype(np.float32)


def _rotate(deg: int) -> Shift:
    if deg % 90 == 0:
        return lambda img: np.ascontiguousarray(np.rot90(img, k=deg // 90))
    return lambda img: _back(_pil(img).rotate(deg, resample=Image.BILINEAR))


#: shift -> severities (mild, moderate, highest), image sides of 512 px
SHIFTS: dict[str, list[tuple[str, Shift]]] = {
    "inversion": [("blend 0.7", _invert(0.7)), ("blend 0.85", _invert(0.85)), ("full", _invert(1.0))],
    "rotation": [("30 deg", _rotate(30)), ("90 deg", _rotate(90)), ("180 deg", _rotate(180))],
    "crop+zoom": [("70%", _crop(0.7)), ("50%", _crop(0.5)), ("30%", _crop(0.3))],
    "gaussian noise": [("sd 0.05", _noise(0.05)), ("sd 0.1", _noise(0.1)), ("sd 0.2", _noise(0.2))],
    "blur": [("r 2", _blur(2)), ("r 5", _blur(5)), ("r 10", _blur(10))],
    "contrast compression": [("x0.5", _contrast(0.5)), ("x0.25", _contrast(0.25)), ("x0.1", _contrast(0.1))],
    "jpeg": [("q 50", _jpeg(50)), ("q 25", _jpeg(25)), ("q 10", _jpeg(10))],
}


def _scores(ref: OodReference, feats: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for m in METHODS:
        s = ref.scores(m, feats, logits)
        assert s is not None
        out[m] = s
    return out


def _ship_drift(card: Path, data: Path, keys: list[str], preds: list, split: Path) -> None:
    """Write the drift reference of the reference images (train and validation) into ``card``."""
    entry = attach_drift_reference(
        card,
        drift_observations([data / "nih" / "images" / k for k in keys], preds),
        source=f"{split.name}: train and validation",
    )
    print(f"shipped {entry['file']} sha256 {entry['sha256']} ({entry['size']} images) into {card}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--card", type=Path, default=DEMO_CARD)
    ap.add_argument("--split", type=Path, default=REPO / "pipelines" / "splits" / "nih500_split.csv")
    ap.add_argument("--shift-images", type=int, default=40, help="held-out images per synthetic shift")
    ap.add_argument("--ship", action="store_true", help="write the fitted reference into --card")
    args = ap.parse_args(argv)
    data = _shared()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        card = args.card
        if not args.ship:  # calibrate a copy: the benchmark never changes the card it reads
            for f in args.card.parent.glob(args.card.name.removesuffix(".card.json") + ".*"):
                shutil.copy2(f, tmp)
            card = Path(tmp) / args.card.name
        pred = load_predictor(card, batch_size=8)
        size = pred.card.preprocessing.resize
        with args.split.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        by = {s: [r["key"] for r in rows if r["split"] == s] for s in ("train", "validation", "test")}

        def nih(keys: list[str]) -> list[np.ndarray]:
            return [read_training_image(data / "nih" / "images" / k) for k in keys]

        fit_preds = predict_images(pred, nih(by["train"]))
        val_preds = predict_images(pred, nih(by["validation"]))
        fit_f, _ = features_and_logits_of(fit_preds)
        val_f, val_l = features_and_logits_of(val_preds)
        ref = fit_reference(
            fit_f, val_f, val_l, images={"source": f"{args.split.name}: train (fit), validation (threshold)"}
        )
        if args.ship:
            ref = attach_reference(card, ref)
            print(f"shipped {ref.file} sha256 {ref.sha256} into {card}")
            _ship_drift(card, data, [*by["train"], *by["validation"]], [*fit_preds, *val_preds], args.split)
        test_imgs = nih(by["test"])
        in_s = _scores(ref, *features_and_logits(pred, test_imgs))
        cases: list[tuple[str, dict[str, np.ndarray], int]] = []
        other, failed = [], []
        for f in sorted((data / "dicom" / "other_xray").glob("*.dcm")):
            try:
                other.append(read_training_image(f, target_size=size))
            except Exception as exc:  # a file the renderer refuses is reported, not scored
                failed.append(f"{f.name}: {type(exc).__name__}")
        cases.append(
            (
                "non-chest radiographs (other_xray)",
                _scores(ref, *features_and_logits(pred, other)),
                len(other),
            )
        )
        base = test_imgs[: args.shift_images]
        for name, levels in SHIFTS.items():
            for level, fn in levels:
                imgs = [fn(im) for im in base]
                cases.append((f"{name} {level}", _scores(ref, *features_and_logits(pred, imgs)), len(imgs)))
        chest_files = sorted((data / "dicom" / "chest").glob("*.dcm"))
        chest = _scores(
            ref, *features_and_logits(pred, [read_training_image(f, target_size=size) for f in chest_files])
        )

    print(
        f"model {pred.card.name} {pred.card.version}; backend {pred.backend}; "
        f"reference fit on {ref.images['fit']} train images, thresholds on {ref.images['validation']} "
        f"validation images; in-distribution: {len(test_imgs)} held-out test images"
    )
    print(
        "thresholds (95% of validation below): " + ", ".join(f"{m} {ref.thresholds[m]:.4g}" for m in METHODS)
    )
    print(
        "in-distribution test images flagged: "
        + ", ".join(f"{m} {np.mean(in_s[m] >= ref.thresholds[m]):.1%}" for m in METHODS)
    )
    head = f"| {'case':<40} | {'n':>3} | " + " | ".join(f"{m} AUROC / FPR95" for m in METHODS) + " |"
    print(head)
    print("|" + "---|" * (2 + len(METHODS)))
    for name, sc, n in cases:
        cells = []
        for m in METHODS:
            auroc, fpr = detection_metrics(in_s[m], sc[m])
            cells.append(f"{auroc:.3f} / {fpr:.3f}")
        print(f"| {name:<40} | {n:>3} | " + " | ".join(cells) + " |")
    if failed:
        print("not rendered (not scored): " + "; ".join(failed))
    print("\nnear inputs (real chest radiographs from other sources; not counted as OOD):")
    print(f"| {'file':<34} | " + " | ".join(f"{m} (flag)" for m in METHODS) + " |")
    print("|" + "---|" * (1 + len(METHODS)))
    for i, f in enumerate(chest_files):
        cells = [
            f"{chest[m][i]:.4g} ({'OOD' if chest[m][i] >= ref.thresholds[m] else 'in'})" for m in METHODS
        ]
        print(f"| {f.name:<34} | " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
