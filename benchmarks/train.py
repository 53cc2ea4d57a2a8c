"""Training throughput: preprocessing cache vs decoding on the fly, fp32 vs bf16 + channels_last.

Measures, in one run and on the same images (the NIH PNGs in ../shared/data/nih, cycled):

1. data loading alone (images/s a DataLoader delivers): cache memmap vs decode + resize
   per image (the naive baseline), ratio printed;
2. end-to-end training steps (load -> augment -> DenseNet-121 forward/backward -> Adam):
   from the cache vs decoding on the fly, fp32 vs bf16 autocast + channels_last, at the
   recipe's batch 16 and the throughput batch 256, ratios against fp32 / on-the-fly.

On CUDA it also samples GPU utilisation with ``nvidia-smi`` while the steps run.  On a
machine without a GPU it says so and measures the CPU (use small ``--size`` and
``--steps``: a 2-core box does a few images per second at 224 px).

Usage::

    python benchmarks/train.py                       # auto: CUDA if available
    python benchmarks/train.py --device cpu --size 96 --steps 3 --batches 16
    python benchmarks/train.py --device cuda --size 224 --steps 30 --batches 16,256 --workers 8
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chexnet_dicom.config import AugmentConfig  # noqa: E402
from chexnet_dicom.model.network import build_network  # noqa: E402
from chexnet_dicom.train.augment import augment_batch, step_generator  # noqa: E402
from chexnet_dicom.train.cache import build_cache  # noqa: E402
from chexnet_dicom.train.data import nih_records  # noqa: E402
from chexnet_dicom.train.datasets import CachedImages, DecodedImages, to_model_input  # noqa: E402


class GpuSampler:
    """Samples ``nvidia-smi`` GPU utilisation (%) in the background."""

    def __init__(self, index: int) -> None:
        self.values: list[float] = []
        self.index = index
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    [
                        "nvidia-smi",
                        f"--id={self.index}",
                        "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=False,
                )
                self.values.append(float(out.stdout.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.2)

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None


def _cycle_loader(ds: Dataset, batch: int, workers: int, pin: bool, seed: int = 0) -> Iterator:
    n = len(ds)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        if n < batch:
            order = rng.choice(n, size=batch)
        batches = [order[i : i + batch].tolist() for i in range(0, len(order) - batch + 1, batch)]
        loader = DataLoader(
            ds,
            batch_sampler=batches,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )
        yield from loader


def loader_rate(ds: Dataset, batch: int, n_batches: int, workers: int) -> float:
    it = _cycle_loader(ds, batch, workers, pin=False)
    next(it)
    t = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return batch * n_batches / (time.perf_counter() - t)


def train_rate(
    ds: Dataset,
    *,
    batch: int,
    steps: int,
    size: int,
    scale: float,
    device: torch.device,
    bf16: bool,
    channels_last: bool,
    workers: int,
) -> tuple[float, float | None]:
    torch.manual_seed(0)
    net = build_network().to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    aug = AugmentConfig(hflip=0.5, rotate_deg=5.0, scale=(0.9, 1.1), translate=0.05)
    it = _cycle_loader(ds, batch, workers, pin=device.type == "cuda")
    net.train()

    def step(i: int) -> None:
        x, y = next(it)
        img = x.to(device, non_blocking=True).float() * scale
        img = augment_batch(img, aug, step_generator(0, 0, i, 0))
        inp = to_model_input(img, size)
        if channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = net(inp)
        F.binary_cross_entropy_with_logits(out.float(), y.to(device)).backward()
        opt.step()

    for i in range(2):  # warm-up (cudnn autotune, allocator)
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    with GpuSampler(device.index or 0) if device.type == "cuda" else _Null() as sampler:
        t = time.perf_counter()
        for i in range(steps):
            step(i + 2)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t
    util = sampler.mean() if isinstance(sampler, GpuSampler) else None
    return batch * steps / elapsed, util


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _training_table(
    decoded: DecodedImages,
    cached: CachedImages,
    batches: list[int],
    *,
    steps: int,
    size: int,
    device: torch.device,
    workers: int,
) -> None:
    """Part 2: training-step throughput per batch size, data source and precision."""
    print("2) training steps (images/s)")
    print(f"   {'batch':>5} {'data':>8} {'precision':>16} {'img/s':>9} {'GPU util %':>10}  ratio")
    scale = 1.0 / 255.0
    for batch in batches:
        base: float | None = None
        results = {}
        for data_name, ds in (("decode", decoded), ("cache", cached)):
            for prec, bf16, cl in (("fp32", False, False), ("bf16+ch_last", True, True)):
                if data_name == "decode" and prec != "fp32":
                    continue
                rate, util = train_rate(
                    ds,
                    batch=batch,
                    steps=steps,
                    size=size,
                    scale=scale,
                    device=device,
                    bf16=bf16,
                    channels_last=cl,
                    workers=workers,
                )
                results[(data_name, prec)] = rate
                if base is None:
                    base = rate
                u = f"{util:10.0f}" if util is not None else f"{'n/a':>10}"
                print(
                    f"   {batch:5d} {data_name:>8} {prec:>16} {rate:9.1f} {u}  {rate / base:5.2f}x vs decode fp32"
                )
        if ("cache", "fp32") in results and ("cache", "bf16+ch_last") in results:
            r = results[("cache", "bf16+ch_last")] / results[("cache", "fp32")]
            print(f"   batch {batch}: bf16+channels_last vs fp32 (both cached): {r:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nih", default=str(REPO.parent / "shared" / "data" / "nih"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=0, help="input side (default 224 on CUDA, 96 on CPU)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per case (default 30 CUDA, 3 CPU)")
    ap.add_argument("--batches", default="", help="comma list (default 16,256 on CUDA, 16 on CPU)")
    ap.add_argument("--workers", type=int, default=-1, help="DataLoader workers (default 8 CUDA, 0 CPU)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--images", type=int, default=500, help="NIH images to use")
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device(
        "cuda" if (args.device == "auto" and cuda) else ("cpu" if args.device == "auto" else args.device)
    )
    torch.set_num_threads(args.threads)
    on_gpu = device.type == "cuda"
    size = args.size or (224 if on_gpu else 96)
    steps = args.steps or (30 if on_gpu else 3)
    batches = [int(b) for b in (args.batches or ("16,256" if on_gpu else "16")).split(",")]
    workers = args.workers if args.workers >= 0 else (8 if on_gpu else 0)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}")
    else:
        print("device: CPU (no CUDA GPU available here; the GPU path runs unchanged where one is)")
    resize = size * 8 // 7  # CheXNet: resize 256, crop 224
    recs = nih_records(Path(args.nih) / "images", Path(args.nih) / "labels.csv")[: args.images]
    tmp = Path(tempfile.mkdtemp(prefix="chexdcm-bench-"))
    try:
        t = time.perf_counter()
        cache = build_cache(recs, tmp / "cache", size=resize, dtype="uint8", workers=workers)
        build_s = time.perf_counter() - t
        labels = np.stack([r.labels for r in recs])
        cached = CachedImages(cache, np.arange(len(recs)), labels)
        decoded = DecodedImages(recs, resize, "uint8")
        print(f"images: {len(recs)} NIH PNGs (512 px) -> {resize} px; cache built in {build_s:.1f} s")
        print(f"threads {args.threads}, DataLoader workers {workers}, input {size} px, {steps} timed steps")
        print()
        print("1) data loading only (images/s)")
        nb = max(4, 256 // max(batches[0], 1))
        r_dec = loader_rate(decoded, batches[0], nb, workers)
        r_cache = loader_rate(cached, batches[0], nb, workers)
        print(f"   decode on the fly : {r_dec:10.1f}")
        print(f"   from cache        : {r_cache:10.1f}   ratio {r_cache / r_dec:6.1f}x")
        print()
        _training_table(decoded, cached, batches, steps=steps, size=size, device=device, workers=workers)
        if on_gpu:
            print("\ntarget on an H200: >= 2000 images/s at 224 px from the cache with high GPU utilisation")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
