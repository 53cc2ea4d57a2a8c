"""``chexdcm batch`` throughput over a realistic export, against a naive loop in the same run.

The export: ``--files`` one-image studies (default 2,000) of 2048x2048 chest phantoms,
12, 14 and 16 bits stored, a third each JPEG 2000 lossless, JPEG-LS lossless and
uncompressed, in nested folders.  Encoding 2,000 large images would take most of the
run, so a small pool (``--pool``, default 6) is encoded once and each file is a copy of
one of them re-stamped with new Study/Series/SOP Instance UIDs (the pixel data is
copied as encoded).

Measured, each in a fresh process:

* **batch**: ``chexdcm batch EXPORT --out OUT`` (the default options of this machine:
  decode worker processes with the reduced-resolution fast path, batches across
  studies, the batch backend rule), at 200 files and at ``--files``; images/s from the
  run's own ``summary.json`` (discovery + analysis + tables) and the peak RSS of the
  main process and of its decode workers;
* **naive**: one file at a time: ``pydicom.dcmread`` + ``pixel_array`` (full
  decode), the documented grey-scale rendering (:func:`chexnet_dicom.dicom.pixels.render`)
  and preprocessing (:func:`chexnet_dicom.pipeline.model_input`: the card's resize,
  crop and normalisation), eager PyTorch float32 at batch 1, over ``--naive-files``
  files taken in turn from every pool image (its rate does not depend on the count),
  measured before and after the batch runs: the speed-up is against the faster of the
  two (other work on a shared machine only slows a measurement), and the load averages
  are printed beside each;
* **ray** (when the ``[ray]`` extra is installed): ``--engine ray`` over 200 files
  against the local engine over the same 200.

Usage::

    python benchmarks/batch.py [--files 2000] [--naive-files 30] [--pool 6] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless  # noqa: E402

from chexnet_dicom.dicom.uids import derive_uid  # noqa: E402
from chexnet_dicom.model.resolve import DEMO_CARD  # noqa: E402
from chexnet_dicom.testing import synth  # noqa: E402

SYNTAXES = (("j2k", JPEG2000Lossless), ("jpeg-ls", JPEGLSLossless), ("raw", ExplicitVRLittleEndian))
BITS = (12, 14, 16)

#: Runs ``chexdcm batch`` in this child and prints its peak RSS (self and decode workers).
CHILD = r"""
import json, resource, sys
from chexnet_dicom.cli import main
rc = main(sys.argv[1:])
self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": rc, "rss_main_mib": self_kib / 1024, "rss_worker_mib": kids_kib / 1024}))
"""


def make_pool(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` encoded images: the syntaxes and bit depths in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    pool = []
    for i in range(n):
        name, syntax = SYNTAXES[i % len(SYNTAXES)]
        bits = BITS[(i // len(SYNTAXES)) % len(BITS)]
        base = synth.make_dataset(
            synth.chest_phantom((size, size), seed=300 + i), bits_stored=bits, seed=300 + i
        )
        ds = base if syntax == ExplicitVRLittleEndian else synth.encode(base, syntax)
        path = folder / f"pool{i}_{name}_{bits}bit.dcm"
        synth.write(ds, path)
        pool.append(path)
    return pool


def make_export(root: Path, pool: list[Path], n: int) -> None:
    """``n`` re-stamped copies of the pool images in nested folders (one study each)."""
    templates = [pydicom.dcmread(p) for p in pool]
    for i in range(n):
        ds = templates[i % len(templates)]
        ds.StudyInstanceUID = derive_uid("bench-batch", str(i), "study")
        ds.SeriesInstanceUID = derive_uid("bench-batch", str(i), "series")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = derive_uid("bench-batch", str(i), "sop")
        ds.PatientID = f"BENCH{i % 97:04d}"
        path = root / f"{2015 + i % 7}" / f"P{i % 97:04d}" / f"S{i:05d}" / ("IMG" if i % 2 else "img.dcm")
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)


def run_batch(export: Path, out: Path, *extra: str) -> dict[str, float]:
    """``chexdcm batch`` in a fresh process: images/s and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    args = ["batch", str(export), "--out", str(out), "--weights", str(DEMO_CARD), "--no-progress", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"chexdcm batch failed ({proc.returncode})")
    mem = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    images = summary["images_predicted"]
    seconds = summary["seconds"]["total"]
    model = summary["model"]
    return {
        "images": images,
        "seconds": seconds,
        "rate": images / seconds,
        "wall": wall,
        "rss_main_mib": mem["rss_main_mib"],
        "rss_worker_mib": mem["rss_worker_mib"],
        "backend": f"{model['backend']} {model['precision']} on {model['device']}",
    }


def naive_rate(pool: list[Path], n: int) -> float:
    """Images/s of the naive loop over ``n`` files taken in turn from the pool (model loaded first)."""
    from chexnet_dicom.dicom.decode import StoredPixels, mask_stored_bits
    from chexnet_dicom.dicom.pixels import render
    from chexnet_dicom.model.backends import load_predictor
    from chexnet_dicom.pipeline import model_input

    predictor = load_predictor(DEMO_CARD, backend="torch", precision="fp32", device="cpu", batch_size=1)
    pre = predictor.card.preprocessing

    def one(path: Path) -> np.ndarray:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
        stored = StoredPixels(
            array=mask_stored_bits(arr, int(ds.BitsStored), int(ds.PixelRepresentation) == 1)
        )
        x = model_input(render(ds, stored).image, pre)
        return predictor.predict(x, cams=False).probabilities  # eager torch fp32, one image

    one(pool[0])  # warm-up
    t0 = time.perf_counter()
    for i in range(n):
        one(pool[i % len(pool)])
    return n / (time.perf_counter() - t0)


def _load() -> str:
    """The machine's load averages (other work on a shared machine slows every measurement)."""
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000, help="files in the large export (default 2000)")
    ap.add_argument("--small", type=int, default=200, help="files in the small export (default 200)")
    ap.add_argument("--naive-files", type=int, default=30, help="files of the naive loop (default 30)")
    ap.add_argument("--pool", type=int, default=6, help="encoded images the exports copy (default 6)")
    ap.add_argument("--size", type=int, default=2048, help="image side (default 2048)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray engine run")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        pool = make_pool(tmp / "pool", args.pool, args.size)
        small, large = tmp / "small", tmp / "large"
        make_export(small, pool, min(args.small, args.files))
        make_export(large, pool, args.files)
        size_mib = sum(p.stat().st_size for p in large.rglob("*") if p.is_file()) / 2**20
        print(
            f"export: {args.files} files ({size_mib:.0f} MiB) of {args.size}x{args.size}, 12/14/16 bit, "
            f"J2K / JPEG-LS / uncompressed, copies of {args.pool} encoded images; built in "
            f"{time.perf_counter() - t0:.0f}s; {os.cpu_count()} CPUs"
        )
        before = naive_rate(pool, args.naive_files)
        print(
            f"naive loop (pydicom pixel_array, fp32 torch batch 1): {before:.2f} images/s over "
            f"{args.naive_files} files; {_load()}"
        )
        runs = {}
        for name, export in (("small", small), ("large", large)):
            r = runs[name] = run_batch(export, tmp / f"out-{name}")
            print(
                f"chexdcm batch, {r['images']} files: {r['rate']:.2f} images/s ({r['seconds']:.1f}s; {r['backend']}); "
                f"peak RSS main {r['rss_main_mib']:.0f} MiB, decode worker {r['rss_worker_mib']:.0f} MiB; {_load()}"
            )
        after = naive_rate(pool, args.naive_files)
        naive = max(before, after)
        print(f"naive loop again: {after:.2f} images/s; {_load()}")
        big = runs["large"]
        print(
            f"speed-up over the naive loop: {big['rate'] / naive:.1f}x against the faster naive run "
            f"({big['rate'] / min(before, after):.1f}x against the slower; target >= 5x)"
        )
        print(
            f"peak RSS {runs['small']['images']} -> {big['images']} files: main {runs['small']['rss_main_mib']:.0f} -> "
            f"{big['rss_main_mib']:.0f} MiB, worker {runs['small']['rss_worker_mib']:.0f} -> "
            f"{big['rss_worker_mib']:.0f} MiB"
        )
        if not args.no_ray:
            try:
                import ray  # noqa: F401
            except ImportError:
                print("ray: not installed (pip install -e '.[ray]'); skipped")
            else:
                r = run_batch(small, tmp / "out-ray", "--engine", "ray")
                local = runs["small"]
                print(
                    f"ray engine, {r['images']} files: {r['rate']:.2f} images/s vs local {local['rate']:.2f} "
                    f"({r['rate'] / local['rate']:.2f}x; includes starting the local Ray instance)"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
