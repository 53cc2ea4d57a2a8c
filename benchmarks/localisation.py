"""Localisation sanity: pointing-game hit rate of the model's heatmaps on NIH expert boxes.

For every (image, finding) pair of ``BBox_List_2017.csv.gz`` whose image is present in
the NIH folder, the class activation map of that finding (one forward pass, all 14
maps: :mod:`chexnet_dicom.model.cam`) is mapped back through the crop/resize inverse
(:func:`chexnet_dicom.model.cam.cam_to_image_grid`) onto the image grid; its arg-max
pixel *points*.  A hit is a point whose pixel centre lies inside the expert box
(boxes are given in the original 1024x1024 pixel coordinates and are scaled to the
image's size: x 0.5 for the 512x512 copies in ``../shared/data/nih/images``).  With
``--margin M`` (original pixels, default 32) a second, tolerant hit rate counts points
within ``M`` of the box, as in the pointing game of Zhang et al. (2016).  The arg-max
is taken over the pixels the network actually saw (the centre crop, or the union of
TenCrop crops); the border outside them is never chosen.

Baselines, measured in the same run on the same pairs (none looks at the image):

* ``centre``: the image centre;
* ``uniform``: a uniformly random point; its expected hit rate is the box's share of the
  image area (computed exactly, no sampling);
* ``prior-mode``: the most box-covered pixel of that finding over the *other* images of
  the full box list (leave the image out), i.e. where experts usually draw that finding;
* ``prior-mean``: the mean box centre of that finding over the other images.

The report prints per-finding and overall hit rates (with Wilson 95 % intervals: with
the 10 pairs of the 500-image subset these are wide), each baseline's rate and the
ratio model / baseline.  It is an honest number with no threshold to pass.

Usage::

    python benchmarks/localisation.py [--weights CARD] [--images DIR] [--boxes CSV]
        [--margin 32] [--threads 2] [--precision auto] [--tta none|tencrop] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from chexnet_dicom.model.labels import LABELS  # noqa: E402
from chexnet_dicom.model.torch_backend import TorchPredictor  # noqa: E402

SHARED_NIH = REPO.parent / "shared" / "data" / "nih"
#: Side of the original NIH images, the coordinate system of the box list.
ORIGINAL_SIDE = 1024
#: Box-list finding names that differ from the model's labels.
BOX_LABELS = {"Infiltrate": "Infiltration"}
BASELINES = ("centre", "uniform", "prior-mode", "prior-mean")

Point = tuple[float, float]  # (row, column) pixel index on the image grid
Rect = tuple[float, float, float, float]  # (x0, y0, x1, y1), continuous pixel coordinates


@dataclass(frozen=True)
class BoxPair:
    """One expert box: image file name, model label, box ``(x, y, w, h)`` in original pixels."""

    image: str
    finding: str
    box: tuple[float, float, float, float]


def read_boxes(path: str | Path) -> list[BoxPair]:
    """Read ``BBox_List_2017.csv(.gz)``: every row, finding names mapped to the model's labels."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    out = []
    with opener(p, "rt", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)  # header: Image Index, Finding Label, Bbox [x,y,w,h], ...
        for row in reader:
            if not row or not row[0].strip():
                continue
            finding = BOX_LABELS.get(row[1].strip(), row[1].strip())
            if finding not in LABELS:
                raise ValueError(f"box list names an unknown finding {row[1]!r}")
            x, y, w, h = (float(v) for v in row[2:6])
            out.append(BoxPair(row[0].strip(), finding, (x, y, w, h)))
    return out


def scale_box(box: Sequence[float], shape: tuple[int, int], original: int = ORIGINAL_SIDE) -> Rect:
    """Box ``(x, y, w, h)`` in ``original x original`` pixels -> ``(x0, y0, x1, y1)`` on ``shape``."""
    sy, sx = shape[0] / original, shape[1] / original
    x, y, w, h = box
    return (x * sx, y * sy, (x + w) * sx, (y + h) * sy)


def inside(point: Point, rect: Rect, margin: float = 0.0) -> bool:
    """True when the centre of pixel ``point`` lies in ``rect`` grown by ``margin`` pixels."""
    cy, cx = point[0] + 0.5, point[1] + 0.5
    x0, y0, x1, y1 = rect
    return x0 - margin <= cx <= x1 + margin and y0 - margin <= cy <= y1 + margin


def peak(heatmap: np.ndarray, valid: np.ndarray | None = None) -> Point:
    """Arg-max pixel (row, column) of a 2-D map, restricted to ``valid`` pixels.

    Ties (a plateau) resolve to the tied pixel nearest the plateau's centroid, never
    to the first pixel in memory order (which would always point top-left).
    """
    h = np.asarray(heatmap, dtype=np.float64)
    if valid is not None:
        h = np.where(valid, h, -np.inf)
    if not np.isfinite(h).any():
        raise ValueError("heatmap has no valid finite pixel")
    rows, cols = np.nonzero(h == np.nanmax(h))
    k = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    return (float(rows[k]), float(cols[k]))


def is_flat(heatmap: np.ndarray, valid: np.ndarray | None = None, rtol: float = 1e-6) -> bool:
    """True when a map is constant over ``valid`` (it localises nothing: a 1x1 feature grid)."""
    h = np.asarray(heatmap, dtype=np.float64)
    v = h[valid] if valid is not None else h.ravel()
    span = float(v.max() - v.min())
    return span <= rtol * max(1e-12, float(np.abs(v).max()))


def uniform_hit_rate(rect: Rect, shape: tuple[int, int], margin: float = 0.0) -> float:
    """Probability that a uniformly random pixel centre falls in ``rect`` grown by ``margin``."""
    x0, y0, x1, y1 = rect
    w = max(0.0, min(x1 + margin, shape[1]) - max(x0 - margin, 0.0))
    h = max(0.0, min(y1 + margin, shape[0]) - max(y0 - margin, 0.0))
    return w * h / (shape[0] * shape[1])


def prior_points(pair: BoxPair, all_boxes: Iterable[BoxPair], shape: tuple[int, int]) -> dict[str, Point]:
    """Leave-the-image-out priors of ``pair.finding``: mode of box coverage and mean box centre."""
    others = [b for b in all_boxes if b.finding == pair.finding and b.image != pair.image]
    if not others:
        centre = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
        return {"prior-mode": centre, "prior-mean": centre}
    diff = np.zeros((shape[0] + 1, shape[1] + 1), dtype=np.int64)
    centres = []
    for b in others:
        x0, y0, x1, y1 = scale_box(b.box, shape)
        centres.append(((y0 + y1) / 2, (x0 + x1) / 2))
        # pixels whose centre lies in the box: ceil(v - 0.5) .. floor(v1 - 0.5)
        r0, r1 = max(0, math.ceil(y0 - 0.5)), min(shape[0] - 1, math.floor(y1 - 0.5))
        c0, c1 = max(0, math.ceil(x0 - 0.5)), min(shape[1] - 1, math.floor(x1 - 0.5))
        if r0 > r1 or c0 > c1:
            continue
        diff[r0, c0] += 1
        diff[r0, c1 + 1] -= 1
        diff[r1 + 1, c0] -= 1
        diff[r1 + 1, c1 + 1] += 1
    cover = diff.cumsum(axis=0).cumsum(axis=1)[: shape[0], : shape[1]]
    my, mx = np.mean(centres, axis=0)
    return {
        "prior-mode": peak(cover),  # the most-covered pixel (ties: nearest their centroid)
        "prior-mean": (float(np.floor(my)), float(np.floor(mx))),
    }


@dataclass
class PairResult:
    """Outcome of one (image, finding) pair."""

    image: str
    finding: str
    rect: Rect
    point: Point
    hit: bool
    hit_margin: bool
    flat: bool  # the map was constant: no point, counted as a miss
    probability: float | None
    baseline: dict[str, float] = field(default_factory=dict)  # strict hit (0/1, or expectation)
    baseline_margin: dict[str, float] = field(default_factory=dict)


@dataclass
class Heatmaps:
    """The 14 maps of one image on its image grid and the pixels the network saw."""

    maps: np.ndarray  # (14, rows, cols)
    valid: np.ndarray | None = None  # (rows, cols) bool
    probabilities: np.ndarray | None = None  # (14,)


def score(
    pairs: Sequence[BoxPair],
    heatmaps: Mapping[str, Heatmaps],
    all_boxes: Sequence[BoxPair],
    *,
    margin: float = 32.0,
) -> list[PairResult]:
    """Point with each pair's finding map and score it and the baselines.

    Parameters
    ----------
    pairs
        The pairs to score (their images must be in ``heatmaps``).
    heatmaps
        Image name -> its maps on the image grid.
    all_boxes
        The full box list (for the leave-the-image-out priors).
    margin
        Tolerance in original (1024) pixels for the tolerant hit.
    """
    out = []
    for pair in pairs:
        hm = heatmaps[pair.image]
        shape = (int(hm.maps.shape[-2]), int(hm.maps.shape[-1]))
        rect = scale_box(pair.box, shape)
        m = margin * shape[1] / ORIGINAL_SIDE
        idx = LABELS.index(pair.finding)
        flat = is_flat(hm.maps[idx], hm.valid)
        point = peak(hm.maps[idx], hm.valid)
        points = {"centre": ((shape[0] - 1) / 2, (shape[1] - 1) / 2), **prior_points(pair, all_boxes, shape)}
        base = {name: float(inside(p, rect)) for name, p in points.items()}
        base_m = {name: float(inside(p, rect, m)) for name, p in points.items()}
        base["uniform"] = uniform_hit_rate(rect, shape)
        base_m["uniform"] = uniform_hit_rate(rect, shape, m)
        prob = None if hm.probabilities is None else float(hm.probabilities[idx])
        out.append(
            PairResult(
                image=pair.image,
                finding=pair.finding,
                rect=rect,
                point=point,
                hit=not flat and inside(point, rect),
                hit_margin=not flat and inside(point, rect, m),
                flat=flat,
                probability=prob,
                baseline=base,
                baseline_margin=base_m,
            )
        )
    return out


def model_heatmaps(predictor: TorchPredictor, image: Path) -> Heatmaps:
    """Production path: load -> prepare_model_input (card preprocessing) -> predict -> CAMs on the image grid."""
    from chexnet_dicom.model.cam import cam_to_image_grid
    from chexnet_dicom.transforms import load_chest_image, prepare_model_input

    pre = predictor.card.preprocessing
    if predictor.tta != pre.tta:
        pre = dataclasses.replace(pre, tta="tencrop" if predictor.tta == "tencrop" else "none")
    disp = load_chest_image(image, target_size=pre.resize)
    x = prepare_model_input(
        disp.image, resize=pre.resize, input_size=pre.input_size, tta=pre.tta, mean=pre.mean, std=pre.std
    )
    pred = predictor.predict(x, cams=True)
    assert pred.cams is not None
    shape = (int(disp.image.shape[0]), int(disp.image.shape[1]))
    maps = cam_to_image_grid(pred.cams, pre, shape)
    seen = cam_to_image_grid(np.ones_like(pred.cams[..., :1, :, :]), pre, shape)[0] > 0.5
    return Heatmaps(maps, seen, np.asarray(pred.probabilities))


def pointing_game(
    predictor: TorchPredictor,
    pairs: Sequence[BoxPair],
    images: Path,
    all_boxes: Sequence[BoxPair],
    *,
    margin: float = 32.0,
) -> list[PairResult]:
    """Core of the benchmark: heatmaps of every image of ``pairs`` (one pass each), then :func:`score`."""
    heatmaps = {name: model_heatmaps(predictor, images / name) for name in sorted({p.image for p in pairs})}
    return score(pairs, heatmaps, all_boxes, margin=margin)


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


@dataclass
class Summary:
    """Hit counts of the model and the baselines over a group of pairs."""

    n: int
    hits: int
    hits_margin: int
    baseline: dict[str, float]
    baseline_margin: dict[str, float]

    @property
    def rate(self) -> float:
        return self.hits / self.n if self.n else float("nan")

    @property
    def rate_margin(self) -> float:
        return self.hits_margin / self.n if self.n else float("nan")


def summarise(results: Sequence[PairResult]) -> dict[str, Summary]:
    """Per-finding summaries plus ``"overall"`` (hits are counts, baselines mean rates)."""
    groups: dict[str, list[PairResult]] = {}
    for r in results:
        groups.setdefault(r.finding, []).append(r)
    out = {}
    for name, rs in [*sorted(groups.items()), ("overall", list(results))]:
        n = len(rs)
        out[name] = Summary(
            n,
            sum(r.hit for r in rs),
            sum(r.hit_margin for r in rs),
            {b: float(np.mean([r.baseline[b] for r in rs])) if n else float("nan") for b in BASELINES},
            {b: float(np.mean([r.baseline_margin[b] for r in rs])) if n else float("nan") for b in BASELINES},
        )
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else ("inf" if a > 0 else "n/a")


def report(results: Sequence[PairResult], margin: float) -> list[str]:
    """Readable lines: per-pair points, per-finding and overall rates, baselines and ratios."""
    lines = ["per pair (point = arg-max of the finding's CAM, row/col on the image grid):"]
    for r in results:
        prob = "" if r.probability is None else f"p={r.probability:.3f} "
        lines.append(
            f"  {r.image:<18} {r.finding:<14} {prob}point=({r.point[0]:.0f},{r.point[1]:.0f}) "
            f"box=({r.rect[0]:.0f},{r.rect[1]:.0f})-({r.rect[2]:.0f},{r.rect[3]:.0f}) "
            f"hit={'yes' if r.hit else 'no'} hit+{margin:g}px={'yes' if r.hit_margin else 'no'}"
            + (" FLAT MAP (no point; a miss)" if r.flat else "")
        )
    summ = summarise(results)
    head = f"  {'finding':<14} {'n':>3} {'model':>13} {'+margin':>13}  " + "  ".join(
        f"{b:>10}" for b in BASELINES
    )
    lines += ["", f"hit rates (strict; +margin = within {margin:g} original pixels):", head]
    for name, s in summ.items():
        lines.append(
            f"  {name:<14} {s.n:>3} {s.hits:>3}/{s.n:<3}={s.rate:.2f} {s.hits_margin:>3}/{s.n:<3}={s.rate_margin:.2f}  "
            + "  ".join(f"{s.baseline[b]:>10.2f}" for b in BASELINES)
        )
    o = summ["overall"]
    lo, hi = wilson(o.hits, o.n)
    lo_m, hi_m = wilson(o.hits_margin, o.n)
    lines += [
        "",
        f"overall pointing-game hit rate: {o.rate:.3f} ({o.hits}/{o.n}, Wilson 95% CI {lo:.2f}-{hi:.2f}); "
        f"with margin: {o.rate_margin:.3f} ({o.hits_margin}/{o.n}, CI {lo_m:.2f}-{hi_m:.2f})",
    ]
    flat = sum(r.flat for r in results)
    if flat:
        lines.append(
            f"  {flat} of {o.n} maps were flat (a 1x1 feature grid localises nothing): counted as misses"
        )
    for b in BASELINES:
        lines.append(
            f"  vs {b:<10} baseline {o.baseline[b]:.3f} -> ratio {_ratio(o.rate, o.baseline[b])}; "
            f"with margin {o.baseline_margin[b]:.3f} -> ratio {_ratio(o.rate_margin, o.baseline_margin[b])}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--weights", default=None, help="model card, folder or registry name (default: resolve)"
    )
    parser.add_argument("--images", type=Path, default=SHARED_NIH / "images")
    parser.add_argument("--boxes", type=Path, default=SHARED_NIH / "BBox_List_2017.csv.gz")
    parser.add_argument("--margin", type=float, default=32.0, help="tolerance in original 1024-px units")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--tta", default=None, choices=("none", "tencrop"), help="override the card's test-time augmentation"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the per-pair results here")
    args = parser.parse_args(argv)

    from chexnet_dicom.errors import ChexDicomError
    from chexnet_dicom.model.resolve import resolve_weights

    try:
        card_path, reason = resolve_weights(args.weights)
        t0 = time.perf_counter()
        predictor = TorchPredictor.from_card(
            card_path, device=args.device, precision=args.precision, threads=args.threads, tta=args.tta
        )
    except ChexDicomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.boxes.is_file() or not args.images.is_dir():
        print(f"error: box list {args.boxes} or image folder {args.images} not found", file=sys.stderr)
        return 2
    all_boxes = read_boxes(args.boxes)
    present = {p.name for p in args.images.iterdir()}
    pairs = [b for b in all_boxes if b.image in present]
    card = predictor.card
    print(f"weights: {card.name} {card.version} ({reason}); card {card_path}")
    print(
        f"runtime: {predictor.precision} on {predictor.device}, {predictor.threads} threads; preprocessing "
        f"resize {card.preprocessing.resize} crop {card.preprocessing.input_size} tta {predictor.tta}"
    )
    print(
        f"pairs: {len(pairs)} (image, box) pairs on {len({p.image for p in pairs})} images "
        f"of {args.images} (of {len(all_boxes)} boxes in the list)"
    )
    if not pairs:
        print("error: no image of the box list is in the image folder", file=sys.stderr)
        return 1
    results = pointing_game(predictor, pairs, args.images, all_boxes, margin=args.margin)
    for line in report(results, args.margin):
        print(line)
    print(f"time: {time.perf_counter() - t0:.1f} s")
    if args.json is not None:
        payload = {
            "weights": {"name": card.name, "version": card.version, "sha256": card.weights_sha256},
            "margin": args.margin,
            "pairs": [asdict(r) for r in results],
            "summary": {
                k: {**asdict(v), "rate": v.rate, "rate_margin": v.rate_margin}
                for k, v in summarise(results).items()
            },
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
