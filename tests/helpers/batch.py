"""Running ``chexdcm batch`` in the tests: in-process, or as a process that can be killed."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from chexnet_dicom.cli import main

__all__ = [
    "BATCH_ARGS",
    "assert_same_tables",
    "kill_group",
    "ledger_studies",
    "predictions_by_sop",
    "read_table",
    "run_batch_cli",
    "run_batch_process",
    "start_batch_process",
]

#: Options every test run uses: fp32 ONNX Runtime (the rounding of one backend), one decode worker.
BATCH_ARGS = ("--backend", "onnxruntime", "--workers", "1", "--batch-size", "4", "--no-progress")


def run_batch_cli(export: Path, out: Path, card: Path, *extra: str) -> int:
    """``chexdcm batch`` in this process; returns its exit code."""
    return main(["batch", str(export), "--out", str(out), "--weights", str(card), *BATCH_ARGS, *extra])


def run_batch_process(
    export: Path, out: Path, card: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``chexdcm batch`` as a child process (so that it can be killed with SIGKILL); waits for it."""
    proc = start_batch_process(export, out, card, *extra, env=env)
    try:
        proc.wait(timeout=timeout)  # the run itself, not its pipes (which orphaned workers would hold)
        stdout, stderr = proc.communicate(timeout=30)  # its decode workers follow it within a second
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def start_batch_process(
    export: Path, out: Path, card: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``chexdcm batch`` started in its own process group (:func:`kill_group` ends it and its workers)."""
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
    return subprocess.Popen(
        [*cmd, *BATCH_ARGS, *extra],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[str]) -> None:
    """``kill -9`` the process group of ``proc`` (the run and its decode workers), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode is None or not (proc.stdout is None or proc.stdout.closed):
        proc.communicate()


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


def ledger_studies(out: Path) -> int:
    """Studies the ledger of the run in ``out`` has recorded as finished (0 when there is none yet)."""
    path = out / "state" / "ledger.sqlite"
    if not path.is_file():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute("SELECT COUNT(*) FROM studies").fetchone()[0])
    except sqlite3.OperationalError:  # killed before the schema was committed
        return 0
    finally:
        con.close()


def assert_same_tables(a: Path, b: Path, *, tol: float = 1e-6) -> None:
    """The tables of runs ``a`` and ``b`` hold the same rows (in any order); probabilities within ``tol``."""
    keys = {
        "files": ("path",),
        "studies": ("study_uid",),
        "predictions": ("sop_uid",),
        "errors": ("path", "stage"),
    }
    for name, key in keys.items():
        rows_a, rows_b = read_table(a, name), read_table(b, name)
        assert len(rows_a) == len(rows_b), name
        by_a = {tuple(r[c] for c in key): r for r in rows_a}
        by_b = {tuple(r[c] for c in key): r for r in rows_b}
        assert len(by_a) == len(rows_a) and set(by_a) == set(by_b), name
        for k, ra in by_a.items():
            rb = by_b[k]
            assert list(ra) == list(rb), name
            for col, va in ra.items():
                vb = rb[col]
                if "prob_" in col and va and vb:
                    assert abs(float(va) - float(vb)) <= tol, (name, col)
                else:
                    assert va == vb, (name, col)


def nih_test_keys() -> list[str]:
    """The demo model's held-out test images (``pipelines/splits/nih500_split.csv``, split ``test``)."""
    split = Path(__file__).resolve().parents[2] / "pipelines" / "splits" / "nih500_split.csv"
    with split.open(newline="", encoding="utf-8") as fh:
        return [r["key"] for r in csv.DictReader(fh) if r["split"] == "test"]


def nih_labels(nih: Path) -> dict[str, dict[str, str]]:
    """``labels.csv`` of the NIH folder, by image name."""
    with (nih / "labels.csv").open(newline="", encoding="utf-8") as fh:
        return {r["Image Index"]: r for r in csv.DictReader(fh)}


def nih_dataset(
    grey: Any, row: dict[str, str], *, study_key: str, seed: int, extra: dict[str, Any] | None = None
) -> Any:
    """One NIH radiograph's 8-bit grey values as a DX data set (window 0..255).

    Patient ID, sex, age and view come from the image's ``labels.csv`` row; ``extra``
    adds attributes.
    """
    from chexnet_dicom.testing import synth

    return synth.make_dataset(
        grey,
        bits_stored=8,
        stored_range=(0, 255),
        view_position=row["View Position"],
        patient_id=f"NIH{int(row['Patient ID']):08d}",
        patient_name="NIH^Anonymous",
        study_key=study_key,
        seed=seed,
        extra={
            "Manufacturer": "NIH ChestX-ray14 (PNG written as DICOM)",
            "PatientSex": row["Patient Gender"],
            "PatientAge": f"{int(row['Patient Age']):03d}Y",
            **(extra or {}),
        },
    )


def write_nih_export(nih: Path, root: Path, keys: list[str]) -> Path:
    """The NIH PNGs named by ``keys`` as a DICOM export: one DX study per image, nested by patient.

    The 8-bit grey values are stored as they are (RGBA files reduced to their grey channel),
    with a window covering 0..255, so the model sees what it sees from the PNG.  The image
    name goes into ImageComments, Patient ID, sex, age and view come from ``labels.csv``.
    Returns the root.
    """
    import numpy as np
    from PIL import Image

    from chexnet_dicom.testing import synth

    meta = nih_labels(nih)
    for i, key in enumerate(keys):
        row = meta[key]
        with Image.open(nih / "images" / key) as im:
            grey = np.asarray(im.convert("L"), dtype=np.uint8)
        ds = nih_dataset(
            grey,
            row,
            study_key=f"nih:{key}",
            seed=i,
            extra={
                "ImageComments": key,
                "AccessionNumber": key.removesuffix(".png").replace("_", "")[:16],
            },
        )
        folder = root / f"p{int(row['Patient ID']) % 7}" / row["Patient ID"]
        folder.mkdir(parents=True, exist_ok=True)
        synth.write(ds, folder / key.removesuffix(".png"))
    return root
