"""Peak RSS of one ``chexdcm`` command in a fresh process (issue 18: the memory budget)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["peak_rss_of"]

REPO = Path(__file__).resolve().parents[2]

# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a large parent
# would report the parent's peak; VmHWM belongs to the new address space.
_CHILD = """
import json, sys
from chexnet_dicom.cli import main
code = main(json.loads(sys.argv[1]))
with open("/proc/self/status") as f:
    hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "peak_mib": hwm / 1024}))
"""


def peak_rss_of(argv: Sequence[str], *, timeout: float = 600) -> tuple[int, float]:
    """Run ``chexdcm *argv`` in a fresh Python process; return its exit code and peak RSS in MiB."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(list(argv))],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"},
        timeout=timeout,
        check=False,
    )
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(f"the child printed no result (rc {proc.returncode}): {proc.stderr[-2000:]}")
    out = json.loads(lines[-1])
    return int(out["code"]), float(out["peak_mib"])
