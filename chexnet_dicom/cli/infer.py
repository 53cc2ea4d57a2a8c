"""``chexdcm infer STUDY_DIR``: analyse a study folder and write DICOM results.

Prints a table per study (finding, probability, present/absent at the model card's
operating point, the operating point with its sensitivity/specificity and 95% CIs when
the card has them) and writes into ``--out`` (default ``./chexdcm-out/<study ref>/``,
where ``<study ref>`` is a hash of the StudyInstanceUID, never a UID or a name):

* ``sr.dcm``            TID 1500 Comprehensive 3D SR (all 14 findings per image);
* ``sc-<i>-<k>.dcm``    RGB Secondary Capture heatmap overlays (unless ``--no-sc``);
* ``preview-<i>-<k>.png`` the overlays as PNG, for people without a DICOM viewer;
* ``result.json``       the PHI-free JSON sidecar.

With several studies under STUDY_DIR, each gets its own ``<study ref>`` folder (inside
``--out`` when given).  A study analysed again into the same folder after it gained
images gets a new SR that lists the earlier one as its predecessor.  Weights are
resolved in the order ``--weights``, ``CHEXDCM_WEIGHTS``, the cache, the bundled demo
weights; the choice is printed on stderr, as are progress and timings.  ``--config FILE``
reads ``[ingest]``, ``[runtime]`` and ``[outputs]`` tables (options given on the
command line win).

The analysis runs on the stages of :mod:`chexnet_dicom.pipeline`: each study is written
as soon as it is complete, and a study that fails does not stop the others.

Exit codes
----------
0
    Every study found was written (including a study whose images were all skipped:
    its SR says why).
1
    Runtime failure: a study failed (the others are written), no DICOM study found,
    unreadable weights.
2
    Usage or configuration error (bad options, missing STUDY_DIR, no CUDA for
    ``--device cuda``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chexnet_dicom.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from chexnet_dicom.config import AnalysisConfig
    from chexnet_dicom.model.card import ModelCard
    from chexnet_dicom.results import StudyResult

__all__ = ["process_age", "register", "run"]

#: Studies with more selected images than this report progress per image on stderr.
PROGRESS_MIN_IMAGES = 4


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``infer`` subcommand."""
    p = sub.add_parser(
        "infer",
        help="analyse a study folder and write DICOM SR/SC results",
        description="Analyse the frontal chest radiographs in STUDY_DIR with CheXNet and write a "
        "TID 1500 SR, heatmap Secondary Captures, PNG previews and a JSON sidecar. "
        "Research use only. Exit status: 0 written, 1 runtime failure (a study failed, "
        "no study found, unreadable weights), 2 usage error.",
    )
    p.add_argument("study_dir", metavar="STUDY_DIR", type=Path, help="folder (or file) of DICOM instances")
    p.add_argument("--out", type=Path, help="output folder (default ./chexdcm-out/<study ref>/)")
    p.add_argument("--config", type=Path, help="TOML file with [ingest], [runtime] and [outputs] tables")
    p.add_argument("--weights", help="model card, folder holding one, or registry name")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument(
        "--no-sc", action="store_true", default=None, help="do not write Secondary Capture overlays"
    )
    p.add_argument(
        "--sc-per-finding", action="store_true", default=None, help="one overlay per positive finding"
    )
    p.add_argument(
        "--sc-compression",
        choices=("none", "jpeg2000", "jpegls", "rle"),
        default=None,
        help="lossless encoding of the overlays (default: none, accepted by every PACS; "
        "jpeg2000 is the smallest)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="default: auto")
    p.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default=None, help="default: auto (per device)"
    )
    p.add_argument(
        "--backend",
        choices=("auto", "onnxruntime", "torch"),
        default=None,
        help="default: auto (ONNX Runtime float32 on a CPU, PyTorch on a GPU or for bf16)",
    )
    p.add_argument(
        "--tta", action="store_true", default=None, help="TenCrop test-time augmentation (10x slower)"
    )
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: available)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="decode worker processes (default: 0, in-process)",
    )
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> AnalysisConfig:
    """The configuration file's settings with the command line's options on top."""
    import dataclasses

    from chexnet_dicom.config import AnalysisConfig, load_analysis_config

    cfg = load_analysis_config(args.config) if args.config is not None else AnalysisConfig()
    runtime = cfg.runtime
    changes: dict[str, Any] = {
        k: v
        for k, v in (
            ("device", args.device),
            ("precision", args.precision),
            ("backend", args.backend),
            ("threads", args.threads),
            ("workers", args.workers),
            ("tta", "tencrop" if args.tta else None),
        )
        if v is not None
    }
    runtime = dataclasses.replace(runtime, **changes)
    outputs = cfg.outputs
    out_changes: dict[str, Any] = {}
    if args.no_sc:
        out_changes["sc"] = False
    if args.sc_per_finding:
        out_changes["sc_per_finding"] = True
    if args.sc_compression is not None:
        out_changes["sc_compression"] = args.sc_compression
    outputs = dataclasses.replace(outputs, **out_changes)
    weights = args.weights if args.weights is not None else (cfg.weights or None)
    return dataclasses.replace(cfg, runtime=runtime, outputs=outputs, weights=weights or "")


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``), None elsewhere."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(stat[19])  # field 22 (starttime), counted after the ")"
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else ""


def _operating_point(card: ModelCard, label: str) -> str:
    op = card.operating_points.get(label)
    if op is None:
        return "0.500 (default)"
    text = f"{op.threshold:.3f}"
    if op.sensitivity is not None:
        text += f" sens {op.sensitivity:.2f}{_fmt_ci(op.sensitivity_ci)}"
    if op.specificity is not None:
        text += f" spec {op.specificity:.2f}{_fmt_ci(op.specificity_ci)}"
    return text


def _table(result: StudyResult, card: ModelCard) -> str:
    from chexnet_dicom.model.labels import DISPLAY_NAMES, LABELS

    lines = [
        f"study {result.ref}: {len(result.images)} image(s) analysed, {len(result.skipped)} not analysed"
    ]
    for s in result.skipped:
        lines.append(f"  not analysed: {s.path}: {s.reason}: {s.message}")
    if result.failure is not None:
        lines.append(f"  FAILED: {result.failure.reason}: {result.failure.message}")
    if result.images:
        several = len(result.images) > 1
        head = "study max" if several else "probability"
        lines.append(f"  {'finding':<20} {head:>11}  {'result':<8} operating point")
        summary = result.summary
        for label in LABELS:
            entry = summary[label]
            mark = "PRESENT" if entry.present else "absent"
            lines.append(
                f"  {DISPLAY_NAMES[label]:<20} {entry.probability:>11.3f}  {mark:<8} {_operating_point(card, label)}"
            )
        for n, im in enumerate(result.images, 1):
            flags = f" [{', '.join(im.flags)}]" if im.flags else ""
            lines.append(f"  image {n}: {im.path}{flags}")
    lines.append("  Research use only. Not for clinical use.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``chexdcm infer``."""
    t_run = time.perf_counter()
    age = process_age()
    study_dir: Path = args.study_dir
    if not study_dir.exists():
        print(f"chexdcm infer: error: {study_dir} does not exist", file=sys.stderr)
        return EXIT_USAGE
    if (args.threads is not None and args.threads < 1) or (args.workers is not None and args.workers < 0):
        print("chexdcm infer: error: --threads must be >= 1 and --workers >= 0", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings(args)

    # OpenMP threads that spin while waiting collapse throughput when the cores are shared
    # (measured here: 2 threads on a busy 2-core machine, 4 s per image spinning vs 0.05 s
    # passive).  Read once when torch loads its OpenMP runtime, so set it before importing.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from chexnet_dicom.dicom.study import scan
    from chexnet_dicom.model.backends import load_predictor
    from chexnet_dicom.model.resolve import resolve_weights
    from chexnet_dicom.pipeline import iter_results

    card_path, why = resolve_weights(settings.weights or None)
    print(f"weights: {card_path} ({why})", file=sys.stderr)
    rt = settings.runtime
    predictor = load_predictor(
        card_path,
        backend=rt.backend,
        device=rt.device,
        precision=rt.precision,
        threads=rt.threads or None,
        batch_size=rt.batch_size,
        tta=None if rt.tta == "card" else rt.tta,
    )
    card = predictor.card
    print(
        f"model: {card.name} {card.version} on {predictor.device} ({predictor.backend}, {predictor.precision}, "
        f"{predictor.runtime.reason}; {predictor.threads} threads)",
        file=sys.stderr,
    )
    startup = (age or 0.0) + (time.perf_counter() - t_run)

    def progress(done: int, total: int) -> None:
        if total >= PROGRESS_MIN_IMAGES:
            print(f"\r  read {done}/{total} images", end="" if done < total else "\n", file=sys.stderr)

    t_scan = time.perf_counter()
    found = scan([study_dir], config=settings.ingest)
    for o in found.unassigned:
        print(f"not a study file: {o.path}: {o.reason}: {o.message}", file=sys.stderr)
    if not found.studies:
        print(f"chexdcm infer: error: no DICOM study found under {study_dir}", file=sys.stderr)
        return EXIT_FAILURE
    scan_s = time.perf_counter() - t_scan
    base = args.out if args.out is not None else Path("chexdcm-out")
    own_folders = args.out is None or len(found.studies) > 1
    report: list[dict[str, Any]] = []
    failed = 0
    for result in iter_results(
        found, predictor, config=settings.ingest, workers=rt.workers, progress=progress
    ):
        out_dir = base / result.ref if own_folders else base
        result, written = _write(result, out_dir, settings)
        failed += result.failed
        result.timings["startup"] = startup
        result.timings["read"] = result.timings.get("read", 0.0) + scan_s / len(found.studies)
        if args.json:
            report.append({**result.to_dict(), "outputs": [str(p) for p in written]})
        else:
            print(_table(result, card))
            if written:
                print(f"  written to {out_dir}/:")
                for path in written:
                    print(f"    {path.name}")
        t = result.timings
        print(
            f"timings: startup {t['startup']:.2f}s, read {t['read']:.2f}s, predict {t.get('predict', 0.0):.2f}s, "
            f"write {t.get('write', 0.0):.2f}s",
            file=sys.stderr,
        )
    if args.json:
        doc = {
            "weights": {"card": str(card_path), "reason": why, "name": card.name, "version": card.version},
            "studies": report,
            "unassigned": [o.to_dict() for o in found.unassigned],
        }
        print(json.dumps(doc, indent=2))
    if failed:
        print(
            f"chexdcm infer: {failed} of {len(found.studies)} studies failed (see FAILED above)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK


def _write(result: StudyResult, out_dir: Path, settings: AnalysisConfig) -> tuple[StudyResult, list[Path]]:
    """Build and write one study's outputs; a failure fails the study, not the run."""
    from chexnet_dicom.outputs.build import build_outputs
    from chexnet_dicom.outputs.write import earlier_sr, write_outputs
    from chexnet_dicom.pipeline import guarded
    from chexnet_dicom.results import Failure

    if result.failed:
        return result, []
    t0 = time.perf_counter()
    outputs = guarded(
        result.ref, "outputs", build_outputs, result, settings.outputs, earlier_sr(out_dir, result)
    )
    if isinstance(outputs, Failure):
        return result.with_failure(outputs), []
    written = guarded(result.ref, "write", write_outputs, outputs, out_dir)
    if isinstance(written, Failure):
        return result.with_failure(written), []
    result.timings["write"] = time.perf_counter() - t0
    return result, written
