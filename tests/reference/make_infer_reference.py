"""Regenerate ``tests/reference/infer_reference.json`` from the current ``chexdcm infer``.

Run only when the results are meant to change (new demo weights, a new heatmap method),
in the same commit as that change::

    .venv/bin/python tests/reference/make_infer_reference.py

It runs ``chexdcm infer`` with the bundled demo weights on every case of
:data:`tests.helpers.infer_reference.CASES` and stores the summaries (hashes and values
only, never the real files' headers).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from chexnet_dicom.cli import main  # noqa: E402
from tests.helpers.infer_reference import CASES, summarise_outputs  # noqa: E402

SHARED = Path(os.environ.get("CHEXDCM_SHARED_DATA", REPO.parent / "shared" / "data"))


def run_case(kind: str, name: str, out: Path) -> dict:
    source = REPO / "sample_data" / name if kind == "sample" else SHARED / "dicom" / "chest" / name
    code = main(["infer", str(source), "--out", str(out), "--sc-compression", "none"])
    summary = summarise_outputs(out)
    summary["exit_code"] = code
    return summary


def main_() -> None:
    reference: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("CHEXDCM_CACHE", str(Path(tmp) / "cache"))
        for kind, name in CASES:
            reference[f"{kind}/{name}"] = run_case(kind, name, Path(tmp) / kind / name)
    target = Path(__file__).with_name("infer_reference.json")
    target.write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target} ({len(reference)} cases)")


if __name__ == "__main__":
    main_()
