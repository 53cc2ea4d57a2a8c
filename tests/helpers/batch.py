"""Running ``chexdcm batch`` in the tests: in-process, or as a process that can be killed."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from chexnet_dicom.cli import main

__all__ = ["BATCH_ARGS", "predictions_by_sop", "read_table", "run_batch_cli", "run_batch_process"]

#: Options every test run uses: fp32 ONNX Runtime (the rounding of one backend), one decode worker.
BATCH_ARGS = ("--backend", "onnxruntime", "--workers", "1", "--batch-size", "4", "--no-progress")


def run_batch_cli(export: Path, out: Path, card: Path, *extra: str) -> int:
    """``chexdcm batch`` in this process; returns its exit code."""
    return main(["batch", str(export), "--out", str(out), "--weights", str(card), *BATCH_ARGS, *extra])


def run_batch_process(
    export: Path, out: Path, card: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``chexdcm batch`` as a child process (so that it can be killed with SIGKILL)."""
    cmd = [
        sys.executable,
        "-m",
        "chexnet_dicom",
        "batch",
        str(export),
        "--out",
        str(out),
        "--weights",
        str(card),
    ]
    return subprocess.run(
        [*cmd, *BATCH_ARGS, *extra],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_table(out: Path, name: str) -> list[dict[str, str]]:
    """Rows of ``OUT/<name>.csv``."""
    with (out / f"{name}.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def predictions_by_sop(out: Path) -> dict[str, list[float]]:
    """SOP Instance UID -> the 14 probabilities of ``predictions.csv``."""
    return {
        r["sop_uid"]: [float(v) for k, v in r.items() if k.startswith("prob_")]
        for r in read_table(out, "predictions")
    }
