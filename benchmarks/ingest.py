"""DICOM file -> 224x224 model tensor throughput: the project's path against a naive one.

Both paths run in the same process, on the same files, with the same thread count:

* **project** (``fast``): :func:`chexnet_dicom.transforms.load_chest_image` with
  ``target_size`` = ``decode_target_size(resize)``, as in production (safe read, header caps, reduced-resolution
  decode where the codec allows it, grey-scale pipeline), then
  :func:`~chexnet_dicom.transforms.prepare_model_input`, then ``torch.from_numpy``;
* **project, fast path off** (``full``): the same with ``PixelPolicy(fast_path=False)``;
* **naive**: ``pydicom.dcmread`` + ``Dataset.pixel_array`` (full resolution, default
  plugins), the same grey-scale rendering (:func:`chexnet_dicom.dicom.pixels.render`)
  and the same resize/crop/normalisation.

Files: generated 2048x2048 12-bit chest phantoms (:mod:`chexnet_dicom.testing.synth`) as
JPEG 2000 lossless and lossy, JPEG-LS lossless, RLE and uncompressed; and the real chest
corpus in ``../shared/data/dicom/chest`` when present.  For each group it prints files/s
of each path (the paths take turns within every repeat), the speed-up ratios, the
ratio of the decode stage alone (read + decode to stored values: the project's safe
reader and fastest plugin against ``dcmread`` + ``pixel_array``), the mean absolute
model-input difference against the naive path (fraction of the input's value range),
and for the real files how often the fast path fell back to a full decode.

Usage::

    python benchmarks/ingest.py [--files 4] [--repeat 2] [--threads 1] [--size 2048]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import torch  # noqa: E402
from pydicom.uid import (  # noqa: E402
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from chexnet_dicom.config import IngestConfig, PixelPolicy  # noqa: E402
from chexnet_dicom.dicom.decode import StoredPixels, decode_stored, mask_stored_bits, transfer_syntax_of  # noqa: E402
from chexnet_dicom.dicom.pixels import render  # noqa: E402
from chexnet_dicom.dicom.read import read_dataset  # noqa: E402
from chexnet_dicom.testing import synth  # noqa: E402
from chexnet_dicom.transforms import decode_target_size, load_chest_image, prepare_model_input  # noqa: E402

RESIZE = 256
STD = np.asarray((0.229, 0.224, 0.225), dtype=np.float32).reshape(3, 1, 1)

GENERATED = (
    ("j2k-lossless", JPEG2000Lossless),
    ("j2k-lossy", JPEG2000),
    ("jpeg-ls", JPEGLSLossless),
    ("rle", RLELossless),
    ("uncompressed", ExplicitVRLittleEndian),
)


@dataclass
class Outcome:
    tensor: torch.Tensor
    decode_path: str


def project_path(path: Path, config: IngestConfig) -> Outcome:
    disp = load_chest_image(path, config=config, target_size=decode_target_size(RESIZE))
    x = torch.from_numpy(prepare_model_input(disp.image, resize=RESIZE))
    return Outcome(x, str(disp.provenance.get("decode_path", "")))


def naive_path(path: Path) -> Outcome:
    ds = _naive_read(path)
    arr = ds.pixel_array
    bits = int(ds.BitsStored)
    stored = StoredPixels(array=mask_stored_bits(arr, bits, int(ds.PixelRepresentation) == 1), path="naive")
    disp = render(ds, stored)
    x = torch.from_numpy(prepare_model_input(disp.image, resize=RESIZE))
    return Outcome(x, "naive")


def timed_interleaved(
    paths: dict[str, Callable[[Path], object]], files: Sequence[Path], threads: int, repeat: int
) -> tuple[dict[str, float], dict[str, list[object]]]:
    """Best-of-``repeat`` files/s of each path, the paths taking turns within every repeat.

    Interleaving keeps a load change on a shared machine from favouring whichever path
    happened to run first.
    """
    best = dict.fromkeys(paths, 0.0)
    outs: dict[str, list[object]] = {}
    names = list(paths)
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # each path leads in turn
            fn = paths[name]
            t0 = time.perf_counter()
            if threads == 1:
                outs[name] = [fn(f) for f in files]
            else:
                with ThreadPoolExecutor(max_workers=threads) as pool:
                    outs[name] = list(pool.map(fn, files))
            best[name] = max(best[name], len(files) / (time.perf_counter() - t0))
    return best, outs


def decode_stage_project(path: Path) -> object:
    """Read and decode to stored values as the project does (safe reader, fastest plugin)."""
    return decode_stored(read_dataset(path))


def _naive_read(path: Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:  # files without meta: PS3.5 default
        ds.file_meta.TransferSyntaxUID = transfer_syntax_of(ds)
    return ds


def decode_stage_naive(path: Path) -> object:
    """Read and decode to stored values as pydicom does by default."""
    return _naive_read(path).pixel_array


def mad(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute model-input difference as a fraction of the input range."""
    return float(np.mean(np.abs(a.numpy() - b.numpy()) * STD))


def generate(folder: Path, n: int, size: int) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {name: [] for name, _ in GENERATED}
    for i in range(n):
        image = synth.chest_phantom((size, size), seed=100 + i)
        base = synth.make_dataset(image, modality="DX", bits_stored=12, seed=100 + i)
        for name, syntax in GENERATED:
            ds = base if syntax == ExplicitVRLittleEndian else synth.encode(base, syntax)
            path = folder / f"{name}_{i}.dcm"
            synth.write(ds, path)
            groups[name].append(path)
    return groups


def run_group(name: str, files: Sequence[Path], threads: int, repeat: int) -> dict[str, float]:
    fast_cfg = IngestConfig()
    full_cfg = IngestConfig(pixels=PixelPolicy(fast_path=False))
    rates, outs = timed_interleaved(
        {
            "naive": naive_path,
            "fast": lambda p: project_path(p, fast_cfg),
            "full": lambda p: project_path(p, full_cfg),
            "decode-naive": decode_stage_naive,
            "decode-project": decode_stage_project,
        },
        files,
        threads,
        repeat,
    )
    naive, fast, full = (cast(list[Outcome], outs[k]) for k in ("naive", "fast", "full"))
    diffs = [mad(f.tensor, n.tensor) for f, n in zip(fast, naive, strict=True)]
    full_diffs = [mad(f.tensor, n.tensor) for f, n in zip(full, naive, strict=True)]
    paths = sorted({o.decode_path for o in fast})
    fallbacks = sum(o.decode_path.startswith("fallback") for o in fast)
    ratio = rates["fast"] / rates["naive"]
    decode_ratio = rates["decode-project"] / rates["decode-naive"]
    print(
        f"{name:14s} n={len(files):2d}  naive {rates['naive']:7.2f}/s  fast {rates['fast']:7.2f}/s "
        f"({ratio:5.2f}x)  fast-off {rates['full']:7.2f}/s ({rates['full'] / rates['naive']:5.2f}x)  "
        f"decode stage {decode_ratio:5.2f}x  "
        f"MAD fast {100 * float(np.mean(diffs)):.3f}% (max {100 * max(diffs):.3f}%)  "
        f"MAD fast-off {100 * float(np.mean(full_diffs)):.4f}%  paths {','.join(paths)}"
    )
    return {
        "ratio": ratio,
        "decode_ratio": decode_ratio,
        "mad": float(np.mean(diffs)),
        "fallbacks": float(fallbacks),
        "n": float(len(files)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4, help="generated files per transfer syntax")
    parser.add_argument("--size", type=int, default=2048, help="side of the generated images")
    parser.add_argument("--repeat", type=int, default=2, help="timing repeats (best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="worker threads, the same for every path")
    parser.add_argument(
        "--real",
        type=Path,
        default=Path(os.environ.get("CHEXDCM_SHARED_DATA", REPO.parent / "shared" / "data"))
        / "dicom"
        / "chest",
        help="folder of real chest DICOM files (default: $CHEXDCM_SHARED_DATA/dicom/chest, else ../shared)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    print(
        f"DICOM -> {224}x{224} model tensor; resize {RESIZE}; threads {args.threads}; "
        f"best of {args.repeat}; torch {torch.__version__}, pydicom {pydicom.__version__}, cpus {os.cpu_count()}"
    )
    with tempfile.TemporaryDirectory(prefix="chexdcm-bench-") as tmp:
        t0 = time.perf_counter()
        groups = generate(Path(tmp), args.files, args.size)
        print(
            f"generated {args.files} x {len(GENERATED)} files of {args.size}x{args.size} 12-bit in {time.perf_counter() - t0:.1f}s"
        )
        results = {name: run_group(name, files, args.threads, args.repeat) for name, files in groups.items()}
    j2k = results["j2k-lossless"]
    targets = [
        ("JPEG 2000 lossless >= 5x, MAD < 1%", j2k["ratio"] >= 5.0 and j2k["mad"] < 0.01),
        ("JPEG-LS decode stage >= 4x", results["jpeg-ls"]["decode_ratio"] >= 4.0),
        ("JPEG-LS end to end >= 4x", results["jpeg-ls"]["ratio"] >= 4.0),
        ("RLE end to end >= 1x", results["rle"]["ratio"] >= 1.0),
        ("uncompressed end to end >= 1x", results["uncompressed"]["ratio"] >= 1.0),
    ]
    for what, ok in targets:
        print(f"target {what}: {'met' if ok else 'NOT met'}")
    if args.real.is_dir():
        real = sorted(p for p in args.real.iterdir() if p.suffix.lower() == ".dcm")
        r = run_group("real-chest", real, args.threads, args.repeat)
        print(f"real-chest fast-path fallbacks: {int(r['fallbacks'])}/{int(r['n'])} files")
        for path in real:
            out = project_path(path, IngestConfig())
            print(f"  {path.name:34s} {out.decode_path}")
    else:
        print(f"real chest corpus not found at {args.real}: skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
