#!/usr/bin/env python
"""SR build benchmark: ``build_sr`` with the highdicom stand-ins of ``outputs/hd_fast.py`` vs without.

Usage::

    .venv/bin/python benchmarks/sr_build.py [--repeat N]

Both contenders build the same document (``tests/outputs/test_sr_same.py`` pins it):

* **fast**: the default path (SR constructed around a childless root, the concept hash
  computed once per concept);
* **public**: highdicom's public ``Comprehensive3DSR`` constructor and its own
  ``CodedConcept.__hash__`` (what ``build_sr`` falls back to on another highdicom).

Cases: the same-SR guard studies on the real chest files (``../shared/data``; the demo
card, fixed probabilities, two-blob heatmaps) and the 1024 x 1024 demo study of
``benchmarks/infer.py`` (c) through the real pipeline and demo weights.  Medians of
``--repeat`` warm runs, contenders interleaved; the regions on the bounded mask are in
both (not toggled).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from highdicom.sr import CodedConcept  # noqa: E402

from chexnet_dicom.model.card import ModelCard  # noqa: E402
from chexnet_dicom.outputs import hd_fast  # noqa: E402
from chexnet_dicom.outputs.sr import build_sr  # noqa: E402
from chexnet_dicom.results import ImageResult  # noqa: E402

SHARED = Path(os.environ.get("CHEXDCM_SHARED_DATA", REPO.parent / "shared" / "data"))


def _public(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        fast_ok, fast_hash = hd_fast.fast_path_available, CodedConcept.__hash__
        hd_fast.fast_path_available = lambda: False  # type: ignore[assignment]
        CodedConcept.__hash__ = hd_fast._CONCEPT_HASH  # type: ignore[method-assign]
        try:
            return fn()
        finally:
            hd_fast.fast_path_available = fast_ok
            CodedConcept.__hash__ = fast_hash  # type: ignore[method-assign]

    return run


def medians(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median ms of the fast and the public path, interleaved, after one warm-up of each."""
    public = _public(fn)
    fn()
    public()
    fast_t, public_t = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        fast_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        public()
        public_t.append(time.perf_counter() - t)
    return statistics.median(fast_t) * 1000, statistics.median(public_t) * 1000


def demo_study() -> tuple[list[ImageResult], ModelCard]:
    from pydicom.uid import JPEG2000Lossless

    from chexnet_dicom.dicom.study import scan
    from chexnet_dicom.model.backends import load_predictor
    from chexnet_dicom.model.resolve import DEMO_CARD
    from chexnet_dicom.pipeline import results_for_paths
    from chexnet_dicom.testing import synth

    folder = Path(tempfile.mkdtemp(prefix="sr-bench-"))
    ds = synth.make_dataset(synth.chest_phantom(1024, seed=11), bits_stored=12, seed=11)
    synth.write(synth.encode(ds, JPEG2000Lossless), folder / "pa.dcm")
    study = next(iter(results_for_paths(scan([folder]), load_predictor(DEMO_CARD, device="cpu"))))
    return list(study.images), ModelCard.read(DEMO_CARD)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    hd_fast.install()
    print(
        f"build_sr, median of {args.repeat} (ms): fast / public highdicom path; load {os.getloadavg()[0]:.1f}"
    )
    chest = SHARED / "dicom" / "chest"
    if chest.is_dir():
        from tests.helpers.sr_guard import GuardCase, guard_cases

        total_fast = total_public = 0.0
        for case in guard_cases(chest):

            def one(case: GuardCase = case) -> object:
                return build_sr(case.results, case.card, skipped=case.skipped)

            f, p = medians(one, args.repeat)
            total_fast, total_public = total_fast + f, total_public + p
            print(f"  {case.name:28s} {f:7.1f} / {p:7.1f}  ({p / f:.1f}x)")
        print(
            f"  {'real chest, all six':28s} {total_fast:7.1f} / {total_public:7.1f}  ({total_public / total_fast:.1f}x)"
        )
    else:
        print(f"  (no real chest files at {chest})")
    images, card = demo_study()
    f, p = medians(lambda: build_sr(images, card), args.repeat)
    print(f"  {'demo study 1024x1024':28s} {f:7.1f} / {p:7.1f}  ({p / f:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
