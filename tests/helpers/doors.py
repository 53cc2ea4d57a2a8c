"""One folder of DICOM files through every door of the package, reduced to what must agree.

Each ``run_*`` function sends the files of a folder through one door (``chexdcm infer``
in-process or with decode workers, ``chexdcm batch`` with the local or the Ray engine, the
listener node by C-STORE with its outbox) on the same backend and precision (ONNX Runtime,
float32, CPU) and returns a :class:`DoorRun`: per file (by name) the 14 probabilities or the
reason it was not analysed, and per study the SR/SC objects the door wrote, summarised by
:func:`tests.helpers.infer_reference.summarise_outputs`.  :func:`differences` compares two
runs with that module's tolerances (probabilities within 1e-6).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from chexnet_dicom.cli import main
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.results import study_ref
from tests.helpers.batch import BATCH_ARGS, read_table, run_batch_cli
from tests.helpers.infer_reference import compare, summarise_outputs

__all__ = ["RUNTIME", "DoorRun", "differences", "identify", "run_batch", "run_infer", "run_node"]

#: The one backend and precision every door is forced onto.
RUNTIME = ("--backend", "onnxruntime", "--precision", "fp32", "--device", "cpu")
#: Reason recorded for a file that was analysed.
ANALYSED = "analysed"


@dataclass
class DoorRun:
    """What one door made of a folder.

    Attributes
    ----------
    door
        Its name.
    exit_code
        The command's exit status (None for the node).
    outcome
        File name -> ``"analysed"`` or the reason it was not (``VIEW_NOT_FRONTAL``, ``INTERNAL``...).
    probabilities
        File name -> the 14 probabilities (label order) of an analysed file.
    objects
        Study Instance UID -> {output file name -> summary} of the DICOM objects written.
    """

    door: str
    exit_code: int | None = None
    outcome: dict[str, str] = field(default_factory=dict)
    probabilities: dict[str, list[float]] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)


def identify(folder: Path) -> dict[str, tuple[str, str]]:
    """File name -> (SOP Instance UID, Study Instance UID) of every file in ``folder``."""
    out = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        out[path.name] = (str(ds.SOPInstanceUID), str(ds.StudyInstanceUID))
    return out


def _ref(sop: str) -> str:
    return "sha256:" + hashlib.sha256(sop.encode("ascii", "replace")).hexdigest()[:16]


def _dicom_objects(folder: Path) -> dict[str, Any]:
    summary = summarise_outputs(folder)
    return {name: obj for name, obj in summary["objects"].items() if name.endswith(".dcm")}


def _read_result_folders(run: DoorRun, folders: list[Path], ids: dict[str, tuple[str, str]]) -> None:
    """Fill ``run`` from output folders holding ``result.json`` (infer and the node's outbox)."""
    by_ref = {_ref(sop): name for name, (sop, _) in ids.items()}
    by_study = {study_ref(study): study for _, study in ids.values()}
    for folder in folders:
        doc = json.loads((folder / "result.json").read_text())
        for image in doc["images"]:
            name = by_ref[image["source_ref"]]
            run.outcome[name] = ANALYSED
            run.probabilities[name] = [float(image["probabilities"][label]) for label in LABELS]
        for skip in doc["skipped"]:
            run.outcome[by_ref.get(skip["source_ref"], skip["source_ref"])] = skip["reason"]
        ref = folder.name if folder.name in by_study else folder.parent.name
        run.objects[by_study[ref]] = _dicom_objects(folder)


def run_infer(folder: Path, out: Path, card: Path, *extra: str, door: str = "infer") -> DoorRun:
    """``chexdcm infer FOLDER`` in this process (one output folder per study)."""
    code = main(
        ["infer", str(folder), "--out", str(out), "--weights", str(card), *RUNTIME, "--sc-compression", "none",
         *extra]
    )  # fmt: skip
    run = DoorRun(door, code)
    folders = sorted(p.parent for p in out.rglob("result.json"))
    _read_result_folders(run, folders, identify(folder))
    return run


def run_batch(folder: Path, out: Path, card: Path, *extra: str, door: str = "batch") -> DoorRun:
    """``chexdcm batch FOLDER --write-dicom`` in this process (``extra`` after the test options)."""
    assert "--workers" in BATCH_ARGS
    code = run_batch_cli(folder, out, card, *RUNTIME, "--write-dicom", *extra)
    run = DoorRun(door, code)
    ids = identify(folder)
    by_sop = {sop: name for name, (sop, _) in ids.items()}
    for row in read_table(out, "files"):
        name = Path(row["path"]).name
        run.outcome[name] = ANALYSED if row["status"] == "analysed" else row["reason"]
    for row in read_table(out, "predictions"):
        run.probabilities[by_sop[row["sop_uid"]]] = [float(row[f"prob_{label}"]) for label in LABELS]
    by_study = {study_ref(study): study for _, study in ids.values()}
    dicom = out / "dicom"
    for sub in sorted(dicom.iterdir()) if dicom.is_dir() else []:
        run.objects[by_study[sub.name]] = _dicom_objects(sub)
    return run


def run_node(folder: Path, tmp: Path, card: Path, *, timeout: float = 600.0) -> DoorRun:
    """The listener node: ``storescu`` sends every file of ``folder``; results come from the outbox."""
    from chexnet_dicom.node.ledger import Ledger
    from chexnet_dicom.node.service import Node
    from tests.helpers.node import node_config, storescu, wait_for

    config = node_config(
        tmp,
        weights=str(card),
        **{"runtime.backend": "onnxruntime", "runtime.precision": "fp32", "runtime.device": "cpu"},
    )
    node = Node(config, None)
    run = DoorRun("node")
    ids = identify(folder)
    studies = {study for _, study in ids.values()}
    try:
        port = node.start()
        sent = storescu(port, *sorted(p for p in folder.iterdir() if p.is_file()))
        assert sent.returncode == 0, sent.stderr[-2000:]
        ledger: Ledger | None = node.ledger
        assert ledger is not None

        def finished() -> bool:
            rows = [ledger.study(s) for s in studies]
            return all(r is not None and r["state"] in ("analysed", "failed") for r in rows)

        wait_for(finished, timeout=timeout, what="every study of the node")
        time.sleep(0.2)
        failed = {}
        for study in studies:
            row = ledger.study(study)
            assert row is not None
            if row["state"] == "failed":
                failed[study] = str(row.get("failure") or "failed")
    finally:
        node.stop(grace=2)
    folders = sorted(p.parent for p in node.spool.outbox.rglob("result.json"))
    _read_result_folders(run, folders, ids)
    for name, (_, study) in ids.items():
        if study in failed and name not in run.outcome:
            run.outcome[name] = f"study failed: {failed[study]}"
    return run


def differences(a: DoorRun, b: DoorRun, *, atol: float = 1e-6, objects: bool = True) -> list[str]:
    """How ``b`` differs from ``a``: outcomes, probabilities beyond ``atol``, the DICOM objects."""
    problems: list[str] = []
    where = f"{b.door} vs {a.door}"
    for name in sorted(set(a.outcome) | set(b.outcome)):
        if a.outcome.get(name) != b.outcome.get(name):
            problems.append(f"{where}: {name}: {a.outcome.get(name)!r} != {b.outcome.get(name)!r}")
    for name in sorted(set(a.probabilities) & set(b.probabilities)):
        worst = max(abs(x - y) for x, y in zip(a.probabilities[name], b.probabilities[name], strict=True))
        if worst > atol:
            problems.append(f"{where}: {name}: probabilities differ by {worst:.3g} (> {atol})")
    if objects:
        for study in sorted(set(a.objects) & set(b.objects)):
            got, want = b.objects[study], a.objects[study]
            for line in compare(got, want)[:5]:
                problems.append(f"{where}: study {study_ref(study)}: {line}")
    return problems
