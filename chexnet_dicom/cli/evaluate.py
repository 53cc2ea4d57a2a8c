"""``chexdcm evaluate``: metrics with patient-level bootstrap CIs and a report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from chexnet_dicom.errors import EXIT_OK

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = sub.add_parser(
        "evaluate",
        help="evaluate predictions with bootstrap CIs",
        description="Per-finding AUROC, PR-AUC, operating points, calibration and subgroups "
        "with patient-level bootstrap 95% CIs; writes report.md/.html, metrics.json and plots.",
    )
    p.add_argument("--predictions", required=True, type=Path, help="CSV: id column + prob_<Finding> columns")
    p.add_argument("--labels", required=True, type=Path, help="NIH Data_Entry CSV(.gz) or wide 0/1 CSV")
    p.add_argument("--out", type=Path, default=Path("report"), help="report folder (default ./report)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: no CIs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", type=Path, help="second predictions CSV for a paired comparison")
    p.add_argument("--card", type=Path, help="model card whose operating points to evaluate")
    p.add_argument("--fixed-sensitivity", type=float, default=0.9)
    p.add_argument("--published", type=Path, help="published_auroc.csv to compare against")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--json", action="store_true", help="print per-class AUROCs as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation."""
    from chexnet_dicom.errors import ConfigError
    from chexnet_dicom.evaluate.report import evaluate, read_published, write_report
    from chexnet_dicom.evaluate.tables import join_tables, read_labels, read_predictions

    if args.bootstrap < 0:
        raise ConfigError("--bootstrap must be >= 0")
    if not 0 < args.fixed_sensitivity <= 1:
        raise ConfigError("--fixed-sensitivity must be in (0, 1]")
    ids, scores = read_predictions(args.predictions)
    labels = read_labels(args.labels)
    data = join_tables(ids, scores, labels)
    compare = None
    if args.compare is not None:
        ids_b, scores_b = read_predictions(args.compare)
        pos = {k: i for i, k in enumerate(ids_b)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise ConfigError(f"--compare lacks {len(missing)} of the predicted images")
        compare = scores_b[[pos[i] for i in ids]]
    thresholds = None
    if args.card is not None:
        from chexnet_dicom.model.card import ModelCard

        card = ModelCard.read(args.card)
        thresholds = {k: v.threshold for k, v in card.operating_points.items()}
    published = read_published(args.published) if args.published else None
    result = evaluate(
        data,
        n_boot=args.bootstrap,
        seed=args.seed,
        thresholds=thresholds,
        fixed_sensitivity=args.fixed_sensitivity,
        compare_scores=compare,
        compare_name=args.compare.name if args.compare else "model B",
        published=published,
    )
    report = write_report(result, args.out, plots=not args.no_plots)
    if args.json:
        print(json.dumps({k: v["auroc"]["value"] for k, v in result.per_class.items()}))
    else:
        print(f"{'finding':<20} {'pos':>6}  AUROC (95% CI)")
        for label, e in result.per_class.items():
            a = e["auroc"]
            print(f"{label:<20} {e['positives']:>6}  {a['value']:.4f} ({a['low']:.4f}-{a['high']:.4f})")
        print(f"{'mean':<20} {'':>6}  {result.mean_auroc:.4f}")
        print(f"report: {report}", file=sys.stderr)
    return EXIT_OK
