"""``chexdcm batch EXPORT_ROOT --out OUT``: a resumable retrospective run over a PACS export.

A thin front door over :mod:`chexnet_dicom.batch` (discovery, the runner, the tables),
composed here with :mod:`chexnet_dicom.evaluate` for the cohort report (``--labels``),
which ``batch`` itself may not import.  Progress bars (files found, images analysed:
counts, rate, ETA) go to stderr on a terminal; the one-screen summary to stdout.

Exit codes
----------
0
    Every file found is accounted for in ``files.csv`` and no DICOM file meant for
    analysis failed (skipped, duplicate, index and non-DICOM files do not count).
1
    The run stopped (interrupted, unreadable weights, ``--send`` destination not
    reachable), a study failed as a whole (``INFERENCE_FAILED``, ``OUTPUT_FAILED``,
    ``WRITE_FAILED``, ``INTERNAL``) or a result was not accepted by the ``--send``
    destination (``SEND_FAILED`` in ``errors.csv``).  Run the same command again to
    resume: it analyses and sends those studies again (same UIDs).
2
    Usage or configuration error, including a resume refused because the weights or
    the analysis options differ from the run in ``--out``.
3
    Tables written, but a DICOM file meant for analysis could not be analysed (status
    ``failed`` in ``files.csv``: corrupt header or pixels, too large, missing UIDs, a
    DICOMDIR reference to a missing file).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chexnet_dicom.cli.evaluate import add_utility_options
from chexnet_dicom.cli.options import (
    add_draw_unreliable_option,
    add_runtime_options,
    add_weights_option,
    announce_weights,
    draw_unreliable_override,
    runtime_overrides,
)
from chexnet_dicom.errors import EXIT_USAGE

if TYPE_CHECKING:
    from chexnet_dicom.batch.runner import BatchReport
    from chexnet_dicom.config import BatchConfig

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``batch`` subcommand."""
    p = sub.add_parser(
        "batch",
        help="resumable retrospective run over a PACS export, with result tables",
        description="Index every file under EXPORT_ROOT (walk + DICOMDIR, headers once), analyse "
        "each study's frontal chest radiographs with CheXNet and write predictions.parquet/.csv, "
        "studies.csv, files.csv and errors.csv into OUT. Killed runs resume with the same command. "
        "Research use only. Exit status: 0 every file accounted for; 1 the run stopped or a study "
        "failed; 2 usage error or a refused resume; 3 a DICOM file meant for analysis failed.",
    )
    p.add_argument("export_root", metavar="EXPORT_ROOT", type=Path, help="the export folder")
    p.add_argument("--out", required=True, type=Path, help="run folder (tables, summary.json, state/)")
    p.add_argument(
        "--config", type=Path, help="TOML with [ingest] [runtime] [outputs] [batch] (pipelines/batch.toml)"
    )
    add_weights_option(p)
    add_runtime_options(
        p,
        "device",
        "backend",
        "precision",
        "workers",
        "batch_size",
        "threads",
        helps={"workers": "decode worker processes (default: CPUs - 1)"},
    )
    p.add_argument(
        "--write-dicom",
        action="store_true",
        default=None,
        help="also write each study's SR and SC overlays, into OUT/dicom/<study ref>/ (default: tables only)",
    )
    add_draw_unreliable_option(p)
    p.add_argument(
        "--send",
        metavar="AE@HOST:PORT",
        help="deliver each study's SR and SC to a PACS (C-STORE, or a STOW-RS URL); implies --write-dicom",
    )
    p.add_argument(
        "--calling-ae",
        default=None,
        help="this side's AE title for --send (default: [destination] or CHEXDCM)",
    )
    p.add_argument(
        "--send-attempts",
        type=int,
        default=None,
        metavar="N",
        help="tries per study, with capped backoff (default: [destination] attempts, 5)",
    )
    p.add_argument(
        "--labels",
        type=Path,
        help="labels CSV (NIH Data_Entry or wide 0/1) for a cohort report, written into OUT/report/ "
        "(report.md/.html, metrics.json, joined.csv, plots)",
    )
    p.add_argument(
        "--label-key",
        metavar="ATTRIBUTE",
        help="DICOM keyword whose values are joined with --label-column, e.g. --label-key "
        "AccessionNumber --label-column accession, or ImageComments --label-column 'Image Index' "
        "for an NIH export",
    )
    p.add_argument("--label-column", metavar="COL", help="labels CSV column holding the key's values")
    p.add_argument(
        "--label-level",
        choices=("auto", "image", "study"),
        default="auto",
        help="whether the labels are per image or per study (default: auto: study for a study-level "
        "key such as AccessionNumber or StudyInstanceUID, else image)",
    )
    p.add_argument(
        "--published",
        type=Path,
        metavar="CSV",
        help="published AUROCs to show side by side: a CSV with a 'label' column (finding names) "
        "and one column of AUROCs per source (as published_auroc.csv of the shared data)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples of the cohort report's 95%% CIs (default: 1000; 0: no CIs)",
    )
    add_utility_options(p)  # --prevalence --compare --mcid --seed of the cohort report
    p.add_argument("--pseudonymize", action="store_true", default=None, help="keyed hashes in the tables")
    p.add_argument("--pseudonym-key-file", type=Path, help="key file (else CHEXDCM_PSEUDONYM_KEY)")
    p.add_argument("--shard", default="1/1", metavar="i/n", help="take the i-th of n parts (1-based)")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default=None,
        help="local: this process with decode workers (default); ray: Ray actors on a cluster "
        "(see --ray-address)",
    )
    p.add_argument("--ray-address", default=None, help="ray.init address ('auto': the cluster of this node)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> BatchConfig:
    """The configuration file's settings with the command line's options on top.

    ``--send`` (or a ``[destination]`` url) implies ``--write-dicom``; pseudonymised tables
    with DICOM results are refused by :class:`~chexnet_dicom.config.BatchConfig` itself.
    """
    from chexnet_dicom.config import apply_overrides, load_batch_config
    from chexnet_dicom.model.predictor import available_cpus

    flags = runtime_overrides(args) | draw_unreliable_override(args)
    if args.workers is None and args.config is None:
        flags["runtime.workers"] = max(1, available_cpus() - 1)
    for key, value in (
        ("batch.write_dicom", args.write_dicom),
        ("batch.pseudonymize", args.pseudonymize),
        ("batch.engine", args.engine),
        ("batch.ray_address", args.ray_address),
        ("batch.pseudonym_key_file", str(args.pseudonym_key_file) if args.pseudonym_key_file else None),
        ("destination.url", args.send),
        ("destination.calling_ae", args.calling_ae),
        ("destination.attempts", args.send_attempts),
    ):
        if value is not None:
            flags[key] = value
    if args.send:
        flags["batch.write_dicom"] = True
    cfg = load_batch_config(args.config, flags)
    if cfg.destination.url and not cfg.batch.write_dicom:  # the file's destination: results are sent
        cfg = apply_overrides(cfg, {"batch.write_dicom": True})
    return cfg


def _usage(message: str) -> int:
    print(f"chexdcm batch: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _bars(enabled: bool) -> Any:
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if not enabled:
            return
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            unit = "file" if stage == "discover" else "image"
            label = "indexing" if stage == "discover" else "analysing"
            bar = bars[stage] = tqdm(
                total=total or None, unit=unit, desc=label, file=sys.stderr, dynamic_ncols=True
            )
        bar.update(done - bar.n)

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return progress, close


def _summary(report: BatchReport, out: Path) -> str:
    d = report.discovery
    files = report.tables.get("files", {})
    studies = report.tables.get("studies", {})
    skipped = files.get("skipped", 0) + files.get("duplicate", 0) + files.get("index", 0)
    total = sum(files.values())
    m = report.model
    sec = report.seconds
    rate = report.images_predicted / sec["analyse"] if sec.get("analyse") else 0.0
    lines = [
        f"chexdcm batch: {total} files in the export{' (this shard)' if total != d.files else ''}",
        f"  analysed {files.get('analysed', 0)} + skipped {skipped} (out of scope {files.get('skipped', 0)}, "
        f"duplicates {files.get('duplicate', 0)}, DICOMDIR {files.get('index', 0)}) + failed {files.get('failed', 0)} "
        f"+ not DICOM {files.get('not_dicom', 0)}"
        + (f" + pending {files['pending']}" if files.get("pending") else ""),
        f"  indexed {d.read} new or changed files ({d.new} new, {d.changed} changed, {d.unchanged} unchanged, "
        f"{d.removed} gone) in {sec.get('discover', 0):.1f}s",
        f"  studies: {report.studies_planned} ({', '.join(f'{k} {v}' for k, v in studies.items()) or 'none'}); "
        f"{report.studies_resumed} finished earlier (not recomputed), {report.studies_analysed} analysed now",
        f"  images predicted now: {report.images_predicted} in {sec.get('analyse', 0):.1f}s ({rate:.1f} images/s)",
        f"  model: {m.get('name')} {m.get('version')} ({m.get('backend')} {m.get('precision')} on {m.get('device')})",
        f"  tables in {out}/: predictions.parquet predictions.csv studies.csv files.csv errors.csv summary.json",
        "  Research use only. Not for clinical use.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``chexdcm batch``."""
    if not args.export_root.is_dir():
        return _usage(f"{args.export_root} is not a folder")
    if args.labels is not None and not (args.label_key and args.label_column):
        return _usage("--labels needs --label-key ATTRIBUTE and --label-column COL")
    settings = _settings(args)
    delivery = None
    if settings.destination.url:
        from chexnet_dicom.batch.runner import ResultSender
        from chexnet_dicom.net.destination import destination_from_config
        from chexnet_dicom.net.sender import RetryPolicy

        cfg = settings.destination
        target = destination_from_config(cfg)
        assert target is not None
        delivery = ResultSender(target, RetryPolicy.of(cfg), cfg.timeouts)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from chexnet_dicom.batch.pseudonym import Pseudonymizer
    from chexnet_dicom.batch.runner import batch_runtime, run_batch
    from chexnet_dicom.batch.studies import Shard
    from chexnet_dicom.model.startup import start_model

    shard = Shard.parse(args.shard)
    pseudonymizer = (
        Pseudonymizer.load(settings.batch.pseudonym_key_file or None) if settings.batch.pseudonymize else None
    )
    rt = batch_runtime(settings.runtime)
    started = start_model(settings.weights, rt, announce=announce_weights)
    predictor = started.predictor
    # the resolved card is what the Ray actors load
    settings = dataclasses.replace(settings, runtime=rt, weights=str(started.card_path))
    print(
        f"model: {started.summary()}, {rt.workers} decode workers, batch {rt.batch_size}",
        file=sys.stderr,
    )
    progress, close = _bars(not args.no_progress and sys.stderr.isatty())
    try:
        report = run_batch(
            args.export_root,
            args.out,
            predictor,
            settings,
            shard=shard,
            pseudonymizer=pseudonymizer,
            delivery=delivery,
            progress=progress,
        )
    except KeyboardInterrupt:
        close()
        print("chexdcm batch: interrupted; run the same command again to resume", file=sys.stderr)
        return 1
    close()
    print(_summary(report, args.out))
    if args.labels is not None:
        from chexnet_dicom.cli.evaluate import cohort_report

        cohort_report(args, started.card_path)  # the cohort report: composed with evaluate in cli/evaluate.py
    return report.exit_code
