"""Full evaluation of a predictions table and its Markdown/HTML report with plots.

:func:`evaluate` computes, per finding: AUROC and PR-AUC with patient-level bootstrap
95% CIs, sensitivity/specificity/PPV/F1 at two operating points (Youden's J, or the
thresholds given e.g. by a model card, and a fixed sensitivity) with CIs, calibration
(ECE), subgroup AUROCs (sex, age band, view position, manufacturer when known), optionally a paired bootstrap
comparison with a second model, and the published per-class AUROCs side by side.
:func:`write_report` writes ``report.md``, ``report.html``, ``metrics.json``,
``per_class.csv`` and PNG plots.
"""

from __future__ import annotations

import csv
import functools
import html
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.evaluate import metrics as mt
from chexnet_dicom.evaluate.tables import EvalData
from chexnet_dicom.model.labels import LABELS

__all__ = ["AGE_BANDS", "EvalResult", "evaluate", "read_published", "write_report"]

log = logging.getLogger(__name__)

#: Age bands (years, inclusive lower bound) for subgroup tables.
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("0-17", 0, 18),
    ("18-39", 18, 40),
    ("40-59", 40, 60),
    ("60-79", 60, 80),
    ("80+", 80, 1000),
)


@dataclass
class EvalResult:
    """Everything :func:`write_report` needs (also serialised to ``metrics.json``)."""

    n_images: int
    n_patients: int
    n_boot: int
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    mean_auroc: float = float("nan")
    subgroups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    comparison: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dictionary (curves omitted)."""
        return {
            "n_images": self.n_images,
            "n_patients": self.n_patients,
            "n_boot": self.n_boot,
            "mean_auroc": self.mean_auroc,
            "per_class": self.per_class,
            "subgroups": self.subgroups,
            "comparison": self.comparison,
            "published": self.published,
        }


def _ci(c: mt.BinaryCI) -> dict[str, float]:
    return {"value": c.value, "low": c.low, "high": c.high}


def read_published(path: str | Path) -> dict[str, dict[str, float]]:
    """Read ``published_auroc.csv``: source -> finding -> AUROC."""
    out: dict[str, dict[str, float]] = {}
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = row.pop("label")
            for source, value in row.items():
                out.setdefault(source, {})[label] = float(value)
    return out


def evaluate(
    data: EvalData,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    thresholds: dict[str, float] | None = None,
    fixed_sensitivity: float = 0.9,
    compare_scores: np.ndarray | None = None,
    compare_name: str = "model B",
    published: dict[str, dict[str, float]] | None = None,
    subgroup_boot: int = 200,
) -> EvalResult:
    """Evaluate aligned labels and scores.

    Parameters
    ----------
    data
        Output of :func:`chexnet_dicom.evaluate.tables.join_tables`.
    n_boot
        Patient-level bootstrap resamples for CIs (0 disables CIs).
    seed
        Bootstrap seed (results are reproducible).
    thresholds
        Operating points per finding (e.g. a model card's, chosen on validation data);
        when None, Youden's J on *this* data is used and labelled as such.
    fixed_sensitivity
        Second operating point: the highest threshold reaching this sensitivity.
    compare_scores
        Scores of a second model on the same images for a paired bootstrap.
    published
        Published AUROCs (:func:`read_published`) to show side by side.
    subgroup_boot
        Resamples for subgroup CIs.

    Returns
    -------
    EvalResult
    """
    n = len(data.ids)
    boot_w = mt.bootstrap_weights(data.patients, n_boot, seed) if n_boot > 0 else None
    res = EvalResult(n_images=n, n_patients=len(set(data.patients)), n_boot=n_boot)
    res.published = published or {}
    aucs = []
    for k, label in enumerate(LABELS):
        y = data.y[:, k]
        s = data.scores[:, k]
        auc = mt.auroc_ci(y, s, boot_w)
        ap = mt.pr_auc(y, s)
        if thresholds is not None and label in thresholds:
            thr_main, thr_method = float(thresholds[label]), "given"
        else:
            thr_main, thr_method = mt.youden_threshold(y, s), "youden-on-this-data"
        thr_sens = mt.threshold_at_sensitivity(y, s, fixed_sensitivity)
        ops = {}
        for name, thr in ((thr_method, thr_main), (f"sensitivity>={fixed_sensitivity:g}", thr_sens)):
            stats = mt.operating_point_stats(y, s, thr, boot_w)
            ops[name] = {"threshold": thr, **{k2: _ci(v) for k2, v in stats.items()}}
        entry: dict[str, Any] = {
            "positives": int(y.sum()),
            "auroc": _ci(auc),
            "pr_auc": ap,
            "ece": mt.expected_calibration_error(y, s),
            "operating_points": ops,
        }
        res.per_class[label] = entry
        if np.isfinite(auc.value):
            aucs.append(auc.value)
        if compare_scores is not None and boot_w is not None:
            diff, p = mt.paired_auroc_difference(y, s, compare_scores[:, k], boot_w)
            res.comparison[label] = {
                "auroc_b": mt.auroc(y, compare_scores[:, k]),
                "difference": _ci(diff),
                "p_value": p,
                "model_b": compare_name,
            }
    res.mean_auroc = float(np.mean(aucs)) if aucs else float("nan")
    res.subgroups = _subgroups(data, subgroup_boot if n_boot > 0 else 0, seed)
    res.curves = _curves(data)
    return res


def _subgroups(data: EvalData, n_boot: int, seed: int) -> dict[str, dict[str, dict[str, Any]]]:
    groups: dict[str, dict[str, np.ndarray]] = {"sex": {}, "age": {}, "view": {}, "manufacturer": {}}
    for value in sorted(set(data.sex) - {""}):
        groups["sex"][value] = data.sex == value
    for name, lo, hi in AGE_BANDS:
        mask = (data.age >= lo) & (data.age < hi)
        if mask.any():
            groups["age"][name] = mask
    for value in sorted(set(data.view) - {""}):
        groups["view"][value] = data.view == value
    if data.manufacturer is not None:
        for value in sorted(set(data.manufacturer) - {""}):
            groups["manufacturer"][value] = data.manufacturer == value
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for attr, members in groups.items():
        for value, mask in members.items():
            sub_w = mt.bootstrap_weights(data.patients[mask], n_boot, seed) if n_boot > 0 else None
            row: dict[str, Any] = {"n_images": int(mask.sum())}
            per: dict[str, Any] = {}
            for k, label in enumerate(LABELS):
                y = data.y[mask, k]
                ci = mt.auroc_ci(y, data.scores[mask, k], sub_w)
                per[label] = {"positives": int(y.sum()), "auroc": _ci(ci)}
            row["per_class"] = per
            out.setdefault(attr, {})[value] = row
    return out


def _curves(data: EvalData) -> dict[str, Any]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    curves: dict[str, Any] = {"roc": {}, "pr": {}, "calibration": {}}
    for k, label in enumerate(LABELS):
        y = data.y[:, k]
        if 0 < y.sum() < y.size:
            fpr, tpr, _ = roc_curve(y, data.scores[:, k])
            prec, rec, _ = precision_recall_curve(y, data.scores[:, k])
            curves["roc"][label] = (fpr, tpr)
            curves["pr"][label] = (rec, prec)
        curves["calibration"][label] = mt.calibration_bins(y, data.scores[:, k])
    return curves


def _plot(result: EvalResult, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for kind, xlabel, ylabel in (("roc", "1 - specificity", "sensitivity"), ("pr", "recall", "precision")):
        fig, axes = plt.subplots(3, 5, figsize=(17, 10), sharex=True, sharey=True)
        for ax, label in zip(axes.ravel(), LABELS, strict=False):
            ax.set_title(label.replace("_", " "), fontsize=9)
            if label in result.curves[kind]:
                x, y = result.curves[kind][label]
                ax.plot(x, y, lw=1.2)
                if kind == "roc":
                    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
                    auc = result.per_class[label]["auroc"]["value"]
                    ax.text(0.45, 0.08, f"AUROC {auc:.3f}", fontsize=8)
        for ax in axes.ravel()[len(LABELS) :]:
            ax.axis("off")
        fig.supxlabel(xlabel)
        fig.supylabel(ylabel)
        fig.tight_layout()
        name = f"{kind}_curves.png"
        atomic_write(out / name, functools.partial(fig.savefig, dpi=80, format="png"))
        plt.close(fig)
        files.append(name)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    for label in LABELS:
        mean_pred, observed, count = result.curves["calibration"][label]
        ok = count > 0
        ax.plot(mean_pred[ok], observed[ok], marker=".", lw=0.8, label=label.replace("_", " "))
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed fraction positive")
    ax.set_title("Reliability diagram (10 equal-width bins)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    atomic_write(out / "reliability.png", functools.partial(fig.savefig, dpi=80, format="png"))
    plt.close(fig)
    files.append("reliability.png")
    return files


def _fmt(d: dict[str, float], digits: int = 3) -> str:
    return mt.BinaryCI(d["value"], d["low"], d["high"], 0).fmt(digits)


def _markdown(result: EvalResult, images: list[str]) -> str:
    lines = [
        "# chexnet-dicom evaluation report",
        "",
        f"{result.n_images} images from {result.n_patients} patients; 95% CIs from "
        f"{result.n_boot} patient-level bootstrap resamples. Mean AUROC {result.mean_auroc:.4f}.",
        "",
        "## Per finding",
        "",
        "| finding | positives | AUROC (95% CI) | PR-AUC | ECE | operating point | threshold | "
        "sensitivity | specificity | F1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, e in result.per_class.items():
        for i, (op_name, op) in enumerate(e["operating_points"].items()):
            head = (
                f"| {label} | {e['positives']} | {_fmt(e['auroc'])} | {e['pr_auc']:.3f} | {e['ece']:.3f} "
                if i == 0
                else "| | | | | "
            )
            lines.append(
                head + f"| {op_name} | {op['threshold']:.4f} | {_fmt(op['sensitivity'])} | "
                f"{_fmt(op['specificity'])} | {_fmt(op['f1'])} |"
            )
    if result.comparison:
        lines += [
            "",
            "## Paired comparison (same bootstrap resamples)",
            "",
            "| finding | AUROC A | AUROC B | A - B (95% CI) | p |",
            "|---|---|---|---|---|",
        ]
        for label, c in result.comparison.items():
            a = result.per_class[label]["auroc"]["value"]
            lines.append(
                f"| {label} | {a:.4f} | {c['auroc_b']:.4f} | {_fmt(c['difference'], 4)} | "
                f"{c['p_value']:.3f} |"
            )
    if result.published:
        sources = list(result.published)
        lines += [
            "",
            "## Against published results (AUROC)",
            "",
            "| finding | this evaluation | " + " | ".join(sources) + " |",
            "|---" * (len(sources) + 2) + "|",
        ]
        for label, e in result.per_class.items():
            pub = " | ".join(f"{result.published[s].get(label, float('nan')):.3f}" for s in sources)
            lines.append(f"| {label} | {e['auroc']['value']:.3f} | {pub} |")
        means = " | ".join(f"{np.mean(list(result.published[s].values())):.3f}" for s in sources)
        lines.append(f"| **mean** | {result.mean_auroc:.3f} | {means} |")
    if result.subgroups:
        lines += ["", "## Subgroups (AUROC, 95% CI)", ""]
        for attr, members in result.subgroups.items():
            names = list(members)
            lines += [
                f"### {attr}",
                "",
                "| finding | " + " | ".join(f"{v} (n={members[v]['n_images']})" for v in names) + " |",
                "|---" * (len(names) + 1) + "|",
            ]
            for label in LABELS:
                cells = []
                for v in names:
                    pc = members[v]["per_class"][label]
                    cells.append(f"{_fmt(pc['auroc'])} [{pc['positives']}+]")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def _html(markdown: str) -> str:
    """A dependency-free Markdown subset (headings, tables, images, paragraphs) to HTML."""
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>chexnet-dicom evaluation</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style></head><body>",
    ]
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} and c for c in cells):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            out.append(f"<p><img src='{html.escape(src)}' style='max-width:100%'></p>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(result: EvalResult, out_dir: str | Path, *, plots: bool = True) -> Path:
    """Write the report files into ``out_dir``; return the Markdown report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = _plot(result, out) if plots else []
    md = _markdown(result, images)
    atomic_write(out / "report.md", md)
    atomic_write(out / "report.html", _html(md))
    atomic_write(out / "metrics.json", json.dumps(result.to_json(), indent=2, allow_nan=True))
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["label", "positives", "auroc", "auroc_low", "auroc_high", "pr_auc", "ece"])
    for label, e in result.per_class.items():
        a = e["auroc"]
        w.writerow([label, e["positives"], repr(a["value"]), a["low"], a["high"], e["pr_auc"], e["ece"]])
    atomic_write(out / "per_class.csv", table.getvalue())
    log.info("evaluation report written (%d images)", result.n_images)
    return out / "report.md"
