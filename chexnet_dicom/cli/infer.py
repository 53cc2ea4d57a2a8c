"""``chexdcm infer STUDY_DIR``: analyse a study folder and write DICOM results.

Prints a table per study on stdout (each finding's probability -- the study maximum
with several images --, PRESENT/absent at its operating point, the threshold, and the
validation sensitivity and specificity at it with 95% CIs), the operating-point policy
in words, the model's held-out AUROC and its intended use, and writes into ``--out`` (default ``./chexdcm-out/<study ref>/``,
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
    Every study found was written and every DICOM file meant for analysis was analysed.
    Files out of scope (status ``skipped``: a lateral view, a CT, a duplicate, ...) do not
    count against the run, nor do non-DICOM files met while walking a folder (a README).
1
    Runtime failure: a study failed (nothing written for it; the others are written),
    no DICOM study found (STUDY_DIR itself not DICOM included), unreadable weights.
2
    Usage or configuration error (bad options, missing STUDY_DIR, no CUDA for
    ``--device cuda``).
3
    Results written, but a DICOM file meant for analysis could not be analysed (status
    ``error``: corrupt header or pixels, too large, a decoder that gave up, missing
    UIDs), even when its study's SR was written and lists it as not analysed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chexnet_dicom.cli.options import (
    add_draw_unreliable_option,
    add_runtime_options,
    add_weights_option,
    announce_weights,
    draw_unreliable_override,
    runtime_overrides,
)
from chexnet_dicom.config import SC_COMPRESSION_NAMES
from chexnet_dicom.errors import EXIT_FAILURE, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from chexnet_dicom.config import AnalysisConfig
    from chexnet_dicom.dicom.study import StudyScan
    from chexnet_dicom.model.card import ModelCard
    from chexnet_dicom.model.predictor import PredictorBase
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
        "Research use only. Exit status: 0 all written; 1 runtime failure (a study failed, "
        "no DICOM study found, unreadable weights); 2 usage error; 3 results written but a "
        "DICOM file meant for analysis could not be analysed (corrupt, too large, a decoder "
        "gave up). Skipped files (out of scope) and non-DICOM files met while walking a "
        "folder do not count.",
    )
    p.add_argument("study_dir", metavar="STUDY_DIR", type=Path, help="folder (or file) of DICOM instances")
    p.add_argument("--out", type=Path, help="output folder (default ./chexdcm-out/<study ref>/)")
    p.add_argument("--config", type=Path, help="TOML file with [ingest], [runtime] and [outputs] tables")
    add_weights_option(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument(
        "--no-sc", action="store_true", default=None, help="do not write Secondary Capture overlays"
    )
    p.add_argument(
        "--sc-per-finding",
        action="store_true",
        default=None,
        help="one overlay per finding PRESENT at its operating point (default: one overlay, the top "
        "PRESENT finding)",
    )
    p.add_argument(
        "--sc-compression",
        choices=SC_COMPRESSION_NAMES,
        default=None,
        help="lossless encoding of the overlays (default: none, accepted by every PACS; "
        "jpeg2000 is the smallest)",
    )
    add_draw_unreliable_option(p)
    add_runtime_options(p, "device", "precision", "backend", "tta", "threads", "workers")
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> AnalysisConfig:
    """The configuration file's settings with the command line's options on top."""
    from chexnet_dicom.config import load_analysis_config

    flags = runtime_overrides(args) | draw_unreliable_override(args)
    if args.no_sc:
        flags["outputs.sc"] = False
    if args.sc_per_finding:
        flags["outputs.sc_per_finding"] = True
    if args.sc_compression is not None:
        flags["outputs.sc_compression"] = args.sc_compression
    return load_analysis_config(args.config, flags)


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``), None elsewhere."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(stat[19])  # field 22 (starttime), counted after the ")"
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def _fmt_ci(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ({ci[0]:.2f}-{ci[1]:.2f})" if ci else f"{value:.2f}"


def _study_folder(result: StudyResult) -> str:
    """The folder that holds the study's files (the user's own path, never a UID)."""
    paths = [im.path for im in result.images] + [s.path for s in result.skipped]
    if not paths:
        return "?"
    try:
        folder = os.path.commonpath([os.path.dirname(p) or "." for p in paths])
    except ValueError:  # relative and absolute paths mixed
        folder = os.path.dirname(paths[0]) or "."
    return folder.rstrip(os.sep) + os.sep


def _preamble(card: ModelCard, why: str) -> str:
    """What the model is, how far to trust it and how to read the tables: once, on stdout."""
    from chexnet_dicom.model.card import policy_text

    test = card.metrics.get("test", {}) if isinstance(card.metrics, dict) else {}
    auroc = test.get("mean_auroc") if isinstance(test, dict) else None
    lines = [f"Model: {card.name} {card.version}, {why}"]
    if auroc:
        lines.append(
            f"  held-out test mean AUROC over the 14 findings: {auroc:.3f} (published CheXNet: 0.841)"
        )
    lines += [
        f"  Intended use: {card.intended_use}",
        "Reading the tables: a finding is PRESENT when its probability (with several images, the",
        "  highest over the study's images) reaches its threshold, the operating point chosen by",
        f"  {policy_text(card.operating_points)}. Sensitivity and specificity were",
        "  measured at that threshold on the model's validation split (patient-level bootstrap",
        "  95% CIs): they say how often this model is right at that threshold, not this image.",
        "",
    ]
    return "\n".join(lines)


def _table(result: StudyResult, card: ModelCard, number: int, total: int, ood_policy: str = "flag") -> str:
    from chexnet_dicom.model.labels import DISPLAY_NAMES, LABELS
    from chexnet_dicom.outputs.ood_items import withholds
    from chexnet_dicom.outputs.reliability import UNRELIABLE_TEXT, unreliable_findings, unreliable_reason

    n_img, n_not = len(result.images), len(result.skipped)
    lines = [
        f"Study {number} of {total} in {_study_folder(result)} -> output folder {result.ref} "
        "(a hash of its Study Instance UID)",
        f"  {n_img} image{'s' if n_img != 1 else ''} analysed, {n_not} file{'s' if n_not != 1 else ''} "
        "not analysed",
    ]
    for s in result.skipped:
        lines.append(f"  not analysed ({s.status}): {s.path}: {s.reason}: {s.message}")
    if result.failure is not None:
        lines.append(f"  FAILED: {result.failure.reason}: {result.failure.message}")
    if result.images:
        head = "Study max" if n_img > 1 else "Probability"
        lines.append(
            f"  {'Finding':<20} {head:>11}  {'Result':<8} {'Threshold':>9}  "
            f"{'Sensitivity (95% CI)':<21} Specificity (95% CI)"
        )
        summary = result.summary
        unreliable = unreliable_findings(card)
        for label in LABELS:
            entry = summary[label]
            op = card.operating_points.get(label)
            state = ("PRESENT" if entry.present else "absent") + (" !" if label in unreliable else "")
            lines.append(
                f"  {DISPLAY_NAMES[label]:<20} {entry.probability:>11.3f}  "
                f"{state:<9} {card.threshold(label):>8.3f}  "
                f"{_fmt_ci(op.sensitivity if op else None, op.sensitivity_ci if op else None):<21} "
                f"{_fmt_ci(op.specificity if op else None, op.specificity_ci if op else None)}"
            )
        present = sum(summary[label].present for label in LABELS)
        lines.append(f"  {present} of 14 findings present at their operating points")
        if unreliable:
            lines.append(f"  ! {UNRELIABLE_TEXT} (not drawn on the overlay by default):")
            lines.extend(
                f"      {DISPLAY_NAMES[label]}: {unreliable_reason(card, label)}"
                for label in LABELS
                if label in unreliable
            )
        for n, im in enumerate(result.images, 1):
            flags = f" [{', '.join(im.flags)}]" if im.flags else ""
            lines.append(f"  image {n}: {im.path}{flags}")
            withheld = " (findings withheld from the SR and SC: outputs.ood = withhold)"
            lines.append(
                f"    {_ood_line(im.prediction)}{withheld if withholds(im.prediction, ood_policy) else ''}"
            )
    lines.append(f"  Research use only. Not for clinical use. {card.name} {card.version}.")
    return "\n".join(line.rstrip() for line in lines)


def _ood_line(prediction: Any) -> str:
    """One line: the image's out-of-distribution score and flag, or why there is none."""
    if prediction.ood_score is None:
        return f"out-of-distribution score: unavailable ({prediction.ood_note})"
    verdict = "OUT-OF-DISTRIBUTION" if prediction.out_of_distribution else "in distribution"
    return (
        f"out-of-distribution score ({prediction.ood_method}): {prediction.ood_score:.4g}, "
        f"threshold {prediction.ood_threshold:.4g}: {verdict}"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``chexdcm infer``."""
    t_run = time.perf_counter()
    age = process_age()
    study_dir: Path = args.study_dir
    if not study_dir.exists():
        print(f"chexdcm infer: error: {study_dir} does not exist", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings(args)

    # OpenMP threads that spin while waiting collapse throughput when the cores are shared
    # (measured here: 2 threads on a busy 2-core machine, 4 s per image spinning vs 0.05 s
    # passive).  Read once when torch loads its OpenMP runtime, so set it before importing.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from chexnet_dicom.gc_policy import long_lived

    # imports and the model live as long as the run (see gc_policy); torch, when start-up
    # loads it (the one-time ONNX export, the torch backend), leaves cyclic garbage behind:
    # about 60 MB on the demo model's export, collected before the freeze
    with long_lived(collect=lambda: "torch" in sys.modules):
        from chexnet_dicom.dicom.study import scan
        from chexnet_dicom.model.startup import start_model

        started = start_model(settings.weights, settings.runtime, announce=announce_weights)
    print(f"model: {started.summary()}", file=sys.stderr)
    startup = (age or 0.0) + (time.perf_counter() - t_run)

    t_scan = time.perf_counter()
    # decode workers get the header bytes from this first read: no second parse per image
    found = scan([study_dir], config=settings.ingest, keep_raw=settings.runtime.workers > 0)
    incomplete = _report_unassigned(found, study_dir)
    if not found.studies:
        print(f"chexdcm infer: error: no DICOM study found under {study_dir}", file=sys.stderr)
        return EXIT_FAILURE
    scan_s = time.perf_counter() - t_scan
    run_ = _Run(args, settings, started.predictor.card, started.why, len(found.studies))
    failed, not_analysed = run_.analyse(found, started.predictor, startup=startup, scan_s=scan_s)
    if args.json:
        card = started.predictor.card
        doc = {
            "weights": {
                "card": str(started.card_path),
                "reason": started.why,
                "name": card.name,
                "version": card.version,
            },
            "studies": run_.report,
            "unassigned": [o.to_dict() for o in found.unassigned],
        }
        print(json.dumps(doc, indent=2))
    return _exit_status(failed, incomplete + not_analysed, len(found.studies))


def _report_unassigned(found: StudyScan, study_dir: Path) -> int:
    """Say on stderr which files belong to no study; how many of them count against the run."""
    from chexnet_dicom.dicom.reasons import counts_against_run

    named = os.path.normpath(study_dir)
    incomplete = 0
    for o in found.unassigned:
        counts = counts_against_run(o.status, o.reason, named=os.path.normpath(o.path) == named)
        incomplete += counts
        note = "" if counts else " (not counted against the run: met while walking the folder)"
        print(f"not a study file: {o.path}: {o.reason}: {o.message}{note}", file=sys.stderr)
    return incomplete


class _Run:
    """One ``infer`` run's studies: analysed, written and reported as each completes."""

    def __init__(
        self, args: argparse.Namespace, settings: AnalysisConfig, card: ModelCard, why: str, studies: int
    ) -> None:
        self.args = args
        self.settings = settings
        self.card = card
        self.why = why
        self.studies = studies
        self.base = args.out if args.out is not None else Path("chexdcm-out")
        self.own_folders = args.out is None or studies > 1
        self.report: list[dict[str, Any]] = []
        self.tty = sys.stderr.isatty()

    def progress(self, done: int, total: int) -> None:
        """A progress line rewritten in place: only on a terminal (a log file gets none)."""
        if self.tty and total >= PROGRESS_MIN_IMAGES:
            print(f"\r  read {done}/{total} images", end="" if done < total else "\n", file=sys.stderr)

    def analyse(
        self, found: StudyScan, predictor: PredictorBase, *, startup: float, scan_s: float
    ) -> tuple[int, int]:
        """Analyse and write every study; ``(studies failed, files that could not be analysed)``."""
        from chexnet_dicom.dicom.reasons import counts_against_run
        from chexnet_dicom.pipeline import results_for_paths

        failed = incomplete = 0
        results = results_for_paths(
            found,
            predictor,
            config=self.settings.ingest,
            workers=self.settings.runtime.workers,
            progress=self.progress,
        )
        for number, result in enumerate(results, 1):
            out_dir = self.base / result.ref if self.own_folders else self.base
            result, written = _write(result, out_dir, self.settings)
            failed += result.failed
            incomplete += sum(counts_against_run(s.status, s.reason, named=False) for s in result.skipped)
            result.timings["startup"] = startup
            result.timings["read"] = result.timings.get("read", 0.0) + scan_s / self.studies
            self.show(result, number, out_dir, written)
        return failed, incomplete

    def show(self, result: StudyResult, number: int, out_dir: Path, written: list[Path]) -> None:
        """One study's table on stdout (or its JSON kept for the end), its timings on stderr."""
        if self.args.json:
            self.report.append({**result.to_dict(), "outputs": [str(p) for p in written]})
        else:
            if number == 1:
                print(_preamble(self.card, self.why))
            print(_table(result, self.card, number, self.studies, self.settings.outputs.ood))
            if written:
                print(f"  written to {out_dir}/:")
                for path in written:
                    print(f"    {path.name}")
        t = result.timings
        print(
            ("\r\033[K" if self.tty else "")
            + f"timings: startup {t['startup']:.2f}s, read {t['read']:.2f}s, predict {t.get('predict', 0.0):.2f}s, "
            f"write {t.get('write', 0.0):.2f}s",
            file=sys.stderr,
        )


def _exit_status(failed: int, incomplete: int, studies: int) -> int:
    """The exit status of the run, said on stderr when it is not 0."""
    if failed:
        print(f"chexdcm infer: {failed} of {studies} studies failed (see FAILED above)", file=sys.stderr)
        return EXIT_FAILURE
    if incomplete:
        print(
            f"chexdcm infer: {incomplete} DICOM file(s) meant for analysis could not be analysed "
            "(status error above); exit status 3",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return EXIT_OK


def _write(result: StudyResult, out_dir: Path, settings: AnalysisConfig) -> tuple[StudyResult, list[Path]]:
    """Build and write one study's outputs; a failure fails the study, not the run."""
    from chexnet_dicom.pipeline import write_results

    result, written = write_results(result, out_dir, settings.outputs)
    return result, [Path(p) for p in written]
