"""Regenerate ``tests/reference/sr_reference.json``: digests of the guard SRs (see tests/helpers/sr_guard.py).

Run only when the SR document is meant to change, in the same commit as that change::

    .venv/bin/python tests/reference/make_sr_reference.py

It builds the SR of each guard study (real chest headers, fixed probabilities and
heatmaps, highdicom's clock frozen) and stores hashes only, never the headers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from chexnet_dicom.outputs.sr import build_sr  # noqa: E402
from tests.helpers.sr_guard import frozen_clock, guard_cases, sr_digest  # noqa: E402

SHARED = Path(os.environ.get("CHEXDCM_SHARED_DATA", REPO.parent / "shared" / "data"))


def main_() -> None:
    reference = {}
    with frozen_clock():
        for case in guard_cases(SHARED / "dicom" / "chest"):
            sr = build_sr(case.results, case.card, skipped=case.skipped)
            reference[case.name] = sr_digest(sr)
    target = Path(__file__).with_name("sr_reference.json")
    target.write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target} ({len(reference)} studies)")


if __name__ == "__main__":
    main_()
