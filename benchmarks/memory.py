"""Peak memory of ``results_for_paths``: bounded by a batch of images, not by the number of studies.

Generates one-image studies of 2048x2048 12-bit uncompressed images (the costliest case:
no reduced-resolution decode, so every display image is full size, 16 MB as float32) by
re-stamping one encoded dataset with new UIDs, then, each in a fresh process:

* **streaming**: ``for result in results_for_paths(...)`` over 20 and over N studies (default
  200), each result dropped once it has been seen, as ``chexdcm infer`` and the batch
  runner consume them;
* **naive** (the old ``Analyzer.analyse_paths`` way): every result of 20 and of 60 studies
  kept in a list until the end.

It prints each run's peak RSS and the ratio of the large run to the small one: flat for
streaming (target: within 10 %), growing with the studies for the naive way.

Per image (issue 18, the working-set budget): ``--per-image`` runs ``chexdcm infer`` on
one constant 16-bit image of each size (1024 ... 16384) and syntax
(:func:`chexnet_dicom.testing.bombs.write_bomb`), each in a fresh process, and prints its
peak RSS: flat once the image is larger than the output grid (``max_grid_side``) for
JPEG 2000 (reduced decode); for syntaxes without one the decode grows with the image
until ``max_working_bytes`` refuses it (TOO_LARGE), at no cost.

Usage::

    python benchmarks/memory.py [--studies 200] [--small 20] [--keep 60]
    python benchmarks/memory.py --per-image [--syntaxes j2k,rle] [--sizes 1024,2048,4096,8192,16384]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from chexnet_dicom.model.backends import load_predictor
from chexnet_dicom.model.resolve import DEMO_CARD
from chexnet_dicom.pipeline import results_for_paths
folders, mode = json.loads(sys.argv[1]), sys.argv[2]
predictor = load_predictor(DEMO_CARD, threads=1)
t = time.perf_counter()
kept, n = [], 0
for result in results_for_paths(folders, predictor):
    assert result.images and not result.failed
    n += 1
    if mode == "keep":
        kept.append(result)
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"studies": n, "peak_mib": peak_kib / 1024, "seconds": time.perf_counter() - t}))
"""


def make_export(folder: Path, n: int, size: int) -> list[str]:
    """``n`` one-image studies, each a re-stamped copy of one generated image."""
    import pydicom

    from chexnet_dicom.dicom.uids import derive_uid
    from chexnet_dicom.testing import synth

    base = synth.make_dataset(
        synth.chest_phantom((size, size), seed=7), modality="DX", bits_stored=12, seed=7
    )
    template = folder / "template.dcm"
    synth.write(base, template)
    ds = pydicom.dcmread(template)
    paths = []
    for i in range(n):
        ds.StudyInstanceUID = derive_uid("bench-memory", str(i), "study")
        ds.SeriesInstanceUID = derive_uid("bench-memory", str(i), "series")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = derive_uid(
            "bench-memory", str(i), "sop"
        )
        path = folder / f"s{i:04d}" / "image"
        path.parent.mkdir()
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path.parent))
    template.unlink()
    return paths


def run(folders: list[str], mode: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(folders), mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def per_image(sizes: list[int], syntaxes: list[str]) -> None:
    """Peak RSS of ``chexdcm infer`` on one image per (syntax, size), each in a fresh process."""
    sys.path.insert(0, str(REPO))
    from chexnet_dicom.testing.bombs import write_bomb
    from tests.helpers.memory import peak_rss_of

    print(f"{'syntax':8s} {'size':>6s} {'exit':>4s} {'peak RSS MiB':>12s} {'seconds':>8s}")
    for syntax in syntaxes:
        for size in sizes:
            with tempfile.TemporaryDirectory(prefix="chexdcm-mem1-") as tmp:
                study = Path(tmp) / "study"
                study.mkdir()
                write_bomb(study / "image.dcm", syntax, size)
                t0 = time.perf_counter()
                code, peak = peak_rss_of(["infer", str(study), "--out", str(Path(tmp) / "out")])
                print(
                    f"{syntax:8s} {size:6d} {code:4d} {peak:12.0f} {time.perf_counter() - t0:8.1f}",
                    flush=True,
                )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-image", action="store_true", help="peak RSS per image size instead")
    ap.add_argument("--sizes", default="1024,2048,4096,8192,16384")
    ap.add_argument("--syntaxes", default="j2k,rle")
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--keep", type=int, default=60, help="studies of the larger naive run")
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    if args.per_image:
        per_image([int(v) for v in args.sizes.split(",")], args.syntaxes.split(","))
        return 0
    with tempfile.TemporaryDirectory(prefix="chexdcm-mem-") as tmp:
        t0 = time.perf_counter()
        folders = make_export(Path(tmp), args.studies, args.size)
        print(
            f"generated {args.studies} one-image studies of {args.size}x{args.size} in {time.perf_counter() - t0:.0f}s"
        )
        runs = {
            f"streaming {args.small}": run(folders[: args.small], "stream"),
            f"streaming {args.studies}": run(folders, "stream"),
            f"naive (kept) {args.small}": run(folders[: args.small], "keep"),
            f"naive (kept) {args.keep}": run(folders[: args.keep], "keep"),
        }
    for name, r in runs.items():
        print(
            f"  {name:22s} peak RSS {r['peak_mib']:7.0f} MiB  ({r['studies']:.0f} studies, {r['seconds']:.1f}s)"
        )
    small, large = runs[f"streaming {args.small}"], runs[f"streaming {args.studies}"]
    ratio = large["peak_mib"] / small["peak_mib"]
    naive = runs[f"naive (kept) {args.keep}"]["peak_mib"] / runs[f"naive (kept) {args.small}"]["peak_mib"]
    print(f"streaming: peak RSS at {args.studies} studies / at {args.small} = {ratio:.3f} (target <= 1.10)")
    print(f"naive: peak RSS at {args.keep} studies / at {args.small} = {naive:.2f}")
    print(f"target (streaming flat within 10%): {'met' if ratio <= 1.10 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
