"""One folder of DICOM files through every door of the package, reduced to what must agree.

Each ``run_*`` function sends the files of a folder through one door (``chexdcm infer``
in-process or with decode workers, ``chexdcm batch`` with the local or the Ray engine, the
listener node by C-STORE (pynetdicom) with its outbox) on the same backend and precision (ONNX Runtime,
float32, CPU) and returns a :class:`DoorRun`: per file (by name) the 14 probabilities or the
reason it was not analysed, and per study the SR/SC objects the door wrote, summarised by
:func:`tests.helpers.infer_reference.summarise_outputs`.  :func:`differences` compares two
runs with that module's tolerances (probabilities within 1e-6).
"""

from __future__ import annotations

import hashlib
import json
import shutil
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
from tests.helpers.shared import shared_path

__all__ = [
    "RUNTIME",
    "TWIN",
    "DoorRun",
    "c_store",
    "chest_files",
    "corpus",
    "differences",
    "identify",
    "run_batch",
    "run_infer",
    "run_node",
]

#: The one backend and precision every door is forced onto.
RUNTIME = ("--backend", "onnxruntime", "--precision", "fp32", "--device", "cpu")
#: The real chest file that shares its Study and SOP Instance UIDs with ``siim_6904.dcm``
#: (only its PhotometricInterpretation was changed): it goes through the doors in a folder of its own.
TWIN = "siim_6904_fake_monochrome1.dcm"
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


def chest_files() -> list[Path]:
    return sorted(shared_path("dicom", "chest").glob("*.dcm"))


def corpus(matrix: Any, folder: Path, names: tuple[str, ...] | None, chest: list[str]) -> Path:
    """A folder of matrix files (``names``, or all) and the named real chest files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, item in matrix.files.items():
        if names is None or name in names:
            shutil.copyfile(item.path, folder / item.path.name)
    for path in chest_files():
        if path.name in chest:
            shutil.copyfile(path, folder / path.name)
    return folder


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
    for folder in folders:
        doc = json.loads((folder / "result.json").read_text())
        for image in doc["images"]:
            name = by_ref[image["source_ref"]]
            run.outcome[name] = ANALYSED
            run.probabilities[name] = [float(image["probabilities"][label]) for label in LABELS]
        for skip in doc["skipped"]:
            run.outcome[by_ref.get(skip["source_ref"], skip["source_ref"])] = skip["reason"]
        study = str(pydicom.dcmread(folder / "sr.dcm", stop_before_pixels=True).StudyInstanceUID)
        run.objects[study] = _dicom_objects(folder)


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
    """The listener node: :func:`c_store` sends every file of ``folder``; results come from the outbox."""
    from chexnet_dicom.node.ledger import NodeLedger
    from chexnet_dicom.node.service import Node
    from tests.helpers.node import node_config, wait_for

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
        statuses = c_store(port, sorted(p for p in folder.iterdir() if p.is_file()))
        assert all(status == 0 for status in statuses.values()), statuses
        ledger: NodeLedger | None = node.ledger
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


def c_store(port: int, files: list[Path], *, aet: str = "STORESCU") -> dict[str, int]:
    """Send ``files`` to 127.0.0.1:``port`` in one association, each in its own transfer syntax.

    A file without file meta information (which dcmtk's ``dcmsend`` refuses) goes in the
    encoding it was written in, as the modality that wrote it would send it.  Returns file
    name -> C-STORE status.
    """
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    items = []
    for path in files:
        ds = pydicom.dcmread(path, force=True)
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is None:
            implicit, little = ds.original_encoding
            syntax = (
                ImplicitVRLittleEndian
                if implicit
                else ExplicitVRLittleEndian
                if little
                else ExplicitVRBigEndian
            )
            ds.file_meta = pydicom.dataset.FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = syntax
        items.append((path.name, ds, UID(str(syntax))))
    ae = AE(ae_title=aet)
    for sop_class, syntax in sorted({(str(ds.SOPClassUID), syntax) for _, ds, syntax in items}):
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="CHEXDCM")
    assert assoc.is_established, "the node refused the association"
    try:
        return {name: int(assoc.send_c_store(ds).Status) for name, ds, _ in items}
    finally:
        assoc.release()


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
