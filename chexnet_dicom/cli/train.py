"""``chexdcm train``: train CheXNet from a TOML recipe (see ``pipelines/*.toml``).

Examples::

    chexdcm train --config pipelines/demo_nih500.toml
    chexdcm train --config pipelines/demo_nih500.toml --write-split      # regenerate the split
    chexdcm train --config pipelines/demo_nih500.toml --resume runs/demo/last.pt
    torchrun --nproc_per_node 8 -m chexnet_dicom train --config pipelines/train_chexnet_nih.toml
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from chexnet_dicom.errors import EXIT_OK, ConfigError

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser("train", help="train CheXNet from a TOML recipe")
    p.add_argument("--config", required=True, help="training recipe (TOML), e.g. pipelines/demo_nih500.toml")
    p.add_argument("--resume", help="continue exactly from a last.pt checkpoint")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value (VALUE parsed as JSON when possible), repeatable",
    )
    p.add_argument("--write-split", action="store_true", help="(re)write the recipe's split_file and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-export", action="store_true", help="do not export the bundle at the end")
    p.add_argument(
        "--export-only", action="store_true", help="re-export the bundle of a finished run (no training)"
    )
    p.set_defaults(func=run)


def _overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} must be SECTION.KEY=VALUE")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``chexdcm train``; returns the exit code."""
    from chexnet_dicom.config import load_train_config
    from chexnet_dicom.train.fit import fit

    cfg = load_train_config(args.config, _overrides(args.set))
    if args.write_split:
        from chexnet_dicom.train.datasets import load_records, make_split
        from chexnet_dicom.train.splits import write_split_csv

        if not cfg.data.split_file:
            raise ConfigError("the recipe has no [data] split_file to write")
        records = load_records(cfg.data)
        assignment = make_split(cfg.data, records)
        path = write_split_csv(
            cfg.data.split_file, [r.key for r in records], [r.patient for r in records], assignment
        )
        counts = {s: assignment.count(s) for s in sorted(set(assignment))}
        print(f"wrote {path}: {counts}")
        return EXIT_OK

    if args.export_only:
        from chexnet_dicom.train.export import export_run

        print(f"model bundle: {export_run(cfg)}")
        return EXIT_OK

    def show(row: dict[str, float]) -> None:
        print(
            f"epoch {int(row['epoch'])}: train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val mean AUROC {row['val_mean_auroc']:.4f}  lr {row['lr']:.1e}  "
            f"{row['epoch_seconds']:.0f}s  ({row['elapsed_minutes']:.1f} min)",
            flush=True,
        )

    result = fit(
        cfg,
        resume=args.resume,
        progress=not args.no_progress and sys.stderr.isatty(),
        on_epoch=show,
        export=not args.no_export,
    )
    print(
        f"done: {result.epochs_done} epochs, best validation mean AUROC {result.best_auroc:.4f} "
        f"at epoch {result.best_epoch}{' (stopped by time budget)' if result.stopped_by_budget else ''}"
    )
    if result.card_path is not None:
        print(f"model bundle: {result.card_path}")
    return EXIT_OK
