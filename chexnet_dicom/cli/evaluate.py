"""``chexdcm evaluate``: the model scored as deployed, with honest intervals, and a report.

Also the cohort report of ``chexdcm batch --labels`` (:func:`cohort_report`): ``batch``
composes the evaluation only through this module, so that ``evaluate --card`` and
``batch --labels`` score the same operating points the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chexnet_dicom.errors import EXIT_OK, ConfigError

if TYPE_CHECKING:
    import numpy as np

    from chexnet_dicom.evaluate.result import EvalResult
    from chexnet_dicom.evaluate.tables import EvalData

__all__ = ["add_utility_options", "cohort_report", "register", "run"]


def add_utility_options(p: argparse.ArgumentParser) -> None:
    """``--prevalence``, ``--compare``, ``--mcid`` and ``--seed`` (shared by ``evaluate`` and ``batch``)."""
    p.add_argument(
        "--prevalence",
        action="append",
        default=[],
        metavar="FINDING=P",
        help="local prevalence at which to report PPV/NPV (repeatable; FINDING 'all' for every finding)",
    )
    p.add_argument(
        "--compare", type=Path, help="second predictions CSV (same images) for a paired comparison"
    )
    p.add_argument(
        "--mcid",
        action="append",
        default=[],
        metavar="METRIC=D",
        help="minimal clinically important difference for --compare: auroc=D and/or net_benefit=D",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (stated in the report)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = sub.add_parser(
        "evaluate",
        help="evaluate predictions with bootstrap CIs",
        description="Scores the model card's operating points first (the SR's present/absent calls), "
        "then AUROC, PR-AUC, calibration, decision curves, data-chosen thresholds (optimistic) and "
        "subgroups, with patient-level bootstrap 95% CIs; writes report.md/.html, metrics.json and plots.",
    )
    p.add_argument("--predictions", required=True, type=Path, help="CSV: id column + prob_<Finding> columns")
    p.add_argument("--labels", required=True, type=Path, help="NIH Data_Entry CSV(.gz) or wide 0/1 CSV")
    p.add_argument("--out", type=Path, default=Path("report"), help="report folder (default ./report)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: no CIs)")
    p.add_argument("--card", type=Path, help="model card: its operating points are scored first")
    p.add_argument(
        "--fixed-sensitivity",
        type=float,
        default=0.9,
        metavar="S",
        help="target sensitivity of the data-chosen fixed-sensitivity threshold reported per finding (default: 0.9)",
    )
    p.add_argument("--published", type=Path, help="published_auroc.csv to compare against")
    p.add_argument(
        "--no-plots",
        action="store_true",
        help="write the report without its plots (ROC, PR, reliability and decision curves)",
    )
    p.add_argument("--json", action="store_true", help="print per-class AUROCs as JSON")
    add_utility_options(p)
    p.set_defaults(func=run)


def _pairs(items: list[str], option: str, keys: set[str] | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or number != number:
            raise ConfigError(f"{option} takes NAME=NUMBER, not {item!r}")
        if keys is not None and key not in keys:
            raise ConfigError(f"{option}: {key!r} is not one of {sorted(keys)}")
        out[key] = number
    return out


def _prevalences(items: list[str]) -> dict[str, float]:
    from chexnet_dicom.model.labels import LABELS

    names = {lab.replace("_", " ").lower(): lab for lab in LABELS} | {lab.lower(): lab for lab in LABELS}
    out: dict[str, float] = {}
    for key, value in _pairs(items, "--prevalence").items():
        if not 0 < value < 1:
            raise ConfigError(f"--prevalence {key}: a prevalence must be in (0, 1)")
        if key.lower() == "all":
            out.update(dict.fromkeys(LABELS, value))
        elif key.lower() in names:
            out[names[key.lower()]] = value
        else:
            raise ConfigError(f"--prevalence: unknown finding {key!r}")
    return out


def _card_identity(card_path: Path | None, run_model: dict[str, Any] | None) -> tuple[dict[str, Any], Any]:
    """Model identity for the report, and the card's thresholds (None without a card)."""
    model: dict[str, Any] = dict(run_model or {})
    if card_path is None:
        return model, None
    from chexnet_dicom.model.card import ModelCard

    card = ModelCard.read(card_path)
    from chexnet_dicom.evaluate.result import RESEARCH_NOTICE

    notice = card.intended_use
    if "research use" not in notice.lower():
        notice = f"{RESEARCH_NOTICE} {notice}"
    model.update(name=card.name, version=card.version, weights_sha256=card.weights_sha256, notice=notice)
    methods = sorted({op.method for op in card.operating_points.values()})
    model["operating_points"] = f"model card {card_path.name} ({', '.join(methods) or 'no method'})"
    return model, {k: v.threshold for k, v in card.operating_points.items()}


def _aligned(path: Path, ids: np.ndarray) -> np.ndarray:
    from chexnet_dicom.evaluate.tables import read_predictions

    ids_b, scores_b = read_predictions(path)
    pos = {k: i for i, k in enumerate(ids_b)}
    missing = [i for i in ids if i not in pos]
    if missing:
        raise ConfigError(f"--compare lacks {len(missing)} of the scored images")
    return scores_b[[pos[i] for i in ids]]


def _score(
    args: argparse.Namespace,
    data: EvalData,
    model: dict[str, Any],
    thresholds: dict[str, float] | None,
    provenance: dict[str, Any],
    out: Path,
    plots: bool = True,
) -> tuple[EvalResult, Path]:
    from chexnet_dicom.evaluate.report import (
        Comparison,
        ReportContext,
        evaluate,
        read_published,
        write_report,
    )

    if args.bootstrap < 0:
        raise ConfigError("--bootstrap must be >= 0")
    mcid = _pairs(args.mcid, "--mcid", {"auroc", "net_benefit"})
    if mcid and args.compare is None:
        raise ConfigError("--mcid needs --compare")
    result = evaluate(
        data,
        n_boot=args.bootstrap,
        seed=args.seed,
        thresholds=thresholds,
        fixed_sensitivity=getattr(args, "fixed_sensitivity", 0.9),
        comparison=(
            Comparison(_aligned(args.compare, data.ids), args.compare.name, mcid)
            if args.compare is not None
            else None
        ),
        published=read_published(args.published) if args.published else None,
        prevalence=_prevalences(args.prevalence),
        context=ReportContext(model, provenance),
    )
    return result, write_report(result, out, plots=plots)


def _run_model(predictions: Path) -> dict[str, Any] | None:
    """The model block of a batch run's ``summary.json`` next to its predictions, if any."""
    summary = predictions.parent / "summary.json"
    try:
        model = json.loads(summary.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    return model if isinstance(model, dict) else None


def run(args: argparse.Namespace) -> int:
    """Run the evaluation."""
    from chexnet_dicom.evaluate.tables import join_tables, read_labels, read_predictions

    if not 0 < args.fixed_sensitivity <= 1:
        raise ConfigError("--fixed-sensitivity must be in (0, 1]")
    ids, scores = read_predictions(args.predictions)
    labels = read_labels(args.labels)
    data = join_tables(ids, scores, labels)
    model, thresholds = _card_identity(args.card, _run_model(args.predictions))
    provenance = {
        "label_source": args.labels.name,
        "join": f"{args.predictions.name} id column = {args.labels.name} id column",
        "joined": len(ids),
        "labels_without_prediction": len(labels) - len(ids),
    }
    result, report = _score(args, data, model, thresholds, provenance, args.out, plots=not args.no_plots)
    if args.json:
        print(json.dumps({k: v["auroc"]["value"] for k, v in result.per_class.items()}))
    else:
        _print(result)
        print(f"report: {report}", file=sys.stderr)
    return EXIT_OK


def _print(result: EvalResult) -> None:
    print(f"  {'finding':<20} {'pos':>4}  {'AUROC (95% CI, patient bootstrap)':<36} deployed found")
    for label, e in result.per_class.items():
        a = e["auroc"]
        dep = e.get("deployed")
        found = f"{dep['tp']}/{e['positives']}" if dep else "-"
        print(
            f"  {label:<20} {e['positives']:>4}  {a['value']:.3f} ({a['low']:.3f}-{a['high']:.3f}){'':<17} {found}"
        )
    m = result.mean_auroc_ci
    print(f"  {'mean':<20} {'':>4}  {m['value']:.3f} ({m['low']:.3f}-{m['high']:.3f})")


def cohort_report(args: argparse.Namespace, card_path: Path) -> None:
    """The evaluation report of a batch run's labelled images (``OUT/report/``).

    The scores, the join key's values and subgroup attributes come from
    :func:`chexnet_dicom.batch.cohort.cohort_rows`; the operating points are the card's
    that the run used, so the deployed table counts the SR's present/absent calls.
    ``OUT/report/joined.csv`` holds the key, labels, scores and calls of every joined
    unit (the key's values are left out of a pseudonymised run).
    """
    import numpy as np

    from chexnet_dicom.batch.cohort import cohort_rows
    from chexnet_dicom.evaluate.tables import EvalData, read_labels

    rows = cohort_rows(args.out, args.label_key, args.label_level)
    labels = read_labels(args.labels, id_column=args.label_column)
    keep = np.array([k in labels for k in rows.keys], dtype=bool)
    if not keep.any():
        raise ConfigError(
            f"no analysed {rows.level} has a {args.label_key} value found in column {args.label_column!r} of the labels"
        )
    ids = rows.keys[keep]
    matched = [labels[k] for k in ids]

    def pick(dicom: np.ndarray, key: str) -> np.ndarray:
        return np.array([d or str(m[key]) for d, m in zip(dicom[keep], matched, strict=True)], dtype=object)

    ages = rows.age[keep].copy()
    label_ages = np.array([float(m["age"]) for m in matched])  # type: ignore[arg-type]
    ages[np.isnan(ages)] = label_ages[np.isnan(ages)]
    data = EvalData(
        ids=ids,
        y=np.stack([np.asarray(m["y"]) for m in matched]).astype(np.int8),
        scores=rows.scores[keep],
        patients=pick(rows.patients, "patient"),
        sex=pick(rows.sex, "sex"),
        age=ages,
        view=pick(rows.view, "view"),
        manufacturer=rows.manufacturer[keep],
    )
    model, thresholds = _card_identity(card_path, _run_model(args.out / "predictions.csv"))
    unlabelled = int((~keep).sum())
    provenance = {
        "label_source": args.labels.name,
        "level": rows.level,
        "join": f"DICOM {args.label_key} = labels column {args.label_column!r} ({rows.level} level)",
        "joined": len(ids),
        "predictions_without_label": unlabelled,
        "labels_without_prediction": len(labels) - len(set(ids)),
    }
    result, report = _score(args, data, model, thresholds, provenance, args.out / "report")
    _add_shift_section(report, args.out)
    _write_joined(args, data, thresholds, report.parent / "joined.csv")
    print(
        f"cohort report: {len(ids)} labelled {rows.level}s scored ({unlabelled} analysed without a label row, "
        f"{len(labels) - len(set(ids))} label rows without an analysed {rows.level}); {report}"
    )
    _print(result)


def _add_shift_section(report: Path, out: Path) -> None:
    """Append the run's cohort shift (``OUT/shift.md``, :mod:`chexnet_dicom.batch.shift`) to the cohort report."""
    from chexnet_dicom.atomic import atomic_write
    from chexnet_dicom.batch.shift import SHIFT_MD
    from chexnet_dicom.evaluate.render import to_html

    section = out / SHIFT_MD
    if section.is_file():
        md = report.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + section.read_text(encoding="utf-8")
        atomic_write(report, md)
        atomic_write(report.with_suffix(".html"), to_html(md))


def _write_joined(
    args: argparse.Namespace, data: EvalData, thresholds: dict[str, float] | None, path: Path
) -> None:
    import csv
    import io

    from chexnet_dicom.atomic import atomic_write
    from chexnet_dicom.model.labels import LABELS

    hide = bool(getattr(args, "pseudonymize", False))
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    head = [args.label_key] + [f"label_{x}" for x in LABELS] + [f"prob_{x}" for x in LABELS]
    head += [f"present_{x}" for x in LABELS] if thresholds else []
    w.writerow(head)
    for i, key in enumerate(data.ids):
        row = [
            "(pseudonymised run)" if hide else str(key),
            *map(int, data.y[i]),
            *(repr(float(v)) for v in data.scores[i]),
        ]
        if thresholds:
            row += [bool(data.scores[i, k] >= thresholds.get(x, 0.5)) for k, x in enumerate(LABELS)]
        w.writerow(row)
    atomic_write(path, buf.getvalue())
