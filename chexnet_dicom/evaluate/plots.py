"""PNG plots of an evaluation: ROC, precision-recall, reliability and decision curves.

One small-multiple panel per finding, one colour per finding (``tab20``) shared by
every figure.  ROC panels show the pointwise 95% bootstrap band, the deployed operating
point and n+ / n-; PR curves are step functions (sklearn's precision at each recall,
without its artificial end point at recall 0) with the prevalence as the no-skill line;
reliability panels show each bin's image count; decision curves show the model's net
benefit with its bootstrap band against treat-all and treat-none, the deployed threshold
marked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.model.labels import LABELS

if TYPE_CHECKING:
    from chexnet_dicom.evaluate.result import EvalResult

__all__ = ["finding_colours", "plot_all"]


def finding_colours() -> dict[str, Any]:
    """One distinct, saturated colour per finding: matplotlib's ``tab10`` and four of ``Dark2``."""
    import matplotlib

    tab10 = [matplotlib.colormaps["tab10"](i) for i in range(10)]
    extra = ["#1b9e77", "#7570b3", "#e6ab02", "#000080"]  # Dark2 teal, purple, mustard; navy
    return dict(zip(LABELS, [*tab10, *extra], strict=True))


def _grid(title: str, xlabel: str, ylabel: str, sharey: bool = True) -> tuple[Any, np.ndarray]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 5, figsize=(16, 10), sharex=True, sharey=sharey, layout="constrained")
    fig.suptitle(title)
    fig.supxlabel(xlabel)
    fig.supylabel(ylabel)
    for ax in axes.ravel()[len(LABELS) :]:
        ax.axis("off")
    return fig, axes.ravel()


def _save(fig: Any, out: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    atomic_write(out / name, functools.partial(fig.savefig, dpi=80, format="png"))
    plt.close(fig)
    return name


def _title(ax: Any, label: str, e: dict[str, Any]) -> None:
    ax.set_title(f"{label.replace('_', ' ')}  (n+ {e['positives']}, n- {e['negatives']})", fontsize=9)


def _roc(result: EvalResult, out: Path, colours: dict[str, Any]) -> str:
    fig, axes = _grid("ROC (shaded: pointwise 95% bootstrap band)", "1 - specificity", "sensitivity")
    for ax, label in zip(axes, LABELS, strict=False):
        e = result.per_class[label]
        _title(ax, label, e)
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
        if label not in result.curves["roc"]:
            ax.text(0.5, 0.5, "one class only", ha="center", fontsize=8)
            continue
        fpr, tpr = result.curves["roc"][label]
        c = colours[label]
        if label in result.curves["roc_band"]:
            grid, lo, hi = result.curves["roc_band"][label]
            ax.fill_between(grid, lo, hi, color=c, alpha=0.25, lw=0)
        ax.plot(fpr, tpr, color=c, lw=1.4, drawstyle="steps-post")
        dep = e.get("deployed")
        if dep is not None:
            ax.plot(
                1 - dep["specificity"]["value"], dep["sensitivity"]["value"], "kD", ms=5, label="deployed"
            )
        auc = e["auroc"]["value"]
        ax.text(0.97, 0.05, f"AUROC {auc:.3f}", ha="right", fontsize=8)
    if any("deployed" in e for e in result.per_class.values()):
        axes[0].legend(loc="lower right", fontsize=7, bbox_to_anchor=(1, 0.12))
    return _save(fig, out, "roc_curves.png")


def _pr(result: EvalResult, out: Path, colours: dict[str, Any]) -> str:
    fig, axes = _grid("Precision-recall (step; dashed: prevalence = no skill)", "recall", "precision")
    for ax, label in zip(axes, LABELS, strict=False):
        e = result.per_class[label]
        _title(ax, label, e)
        if label not in result.curves["pr"]:
            continue
        rec, prec = _pr_steps(*result.curves["pr"][label])
        ax.step(rec, prec, where="pre", color=colours[label], lw=1.4)
        ax.axhline(e["prevalence"], ls="--", c="grey", lw=0.8)
        ax.text(0.97, 0.92, f"AP {e['pr_auc']:.3f}", ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
    return _save(fig, out, "pr_curves.png")


def _pr_steps(rec: np.ndarray, prec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The step curve whose area is the average precision.

    sklearn gives recall decreasing and appends (recall 0, precision 1), a point no
    threshold reaches: it is dropped.  Each recall keeps the precision where it is first
    reached (the threshold that added its positive), and recall ``(R[i-1], R[i]]`` is drawn
    at precision ``P[i]`` (``where="pre"``), from recall 0.
    """
    r, p = rec[:-1][::-1], prec[:-1][::-1]
    r, first = np.unique(r, return_index=True)
    p = p[first]
    if r.size and r[0] == 0:  # thresholds above every positive: no recall gained
        r, p = r[1:], p[1:]
    return np.r_[0.0, r], np.r_[p[:1], p]


def _reliability(result: EvalResult, out: Path, colours: dict[str, Any]) -> str:
    fig, axes = _grid(
        "Reliability (10 equal-width bins; numbers: images per bin)", "mean predicted probability",
        "observed fraction positive",
    )  # fmt: skip
    for ax, label in zip(axes, LABELS, strict=False):
        e = result.per_class[label]
        ax.set_title(f"{label.replace('_', ' ')}  (ECE {e['ece']:.3f})", fontsize=9)
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
        mean_pred, observed, count = result.curves["calibration"][label]
        ok = count > 0
        ax.plot(mean_pred[ok], observed[ok], marker="o", ms=3, lw=1.0, color=colours[label])
        for x, y, n in zip(mean_pred[ok], observed[ok], count[ok], strict=True):
            ax.annotate(f"{int(n)}", (x, y), textcoords="offset points", xytext=(2, 4), fontsize=6)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
    return _save(fig, out, "reliability.png")


def _dca(result: EvalResult, out: Path, colours: dict[str, Any]) -> str:
    fig, axes = _grid(
        "Decision curves: net benefit (shaded: 95% bootstrap band; dashed: treat all; "
        "dotted: treat none; line: deployed threshold)", "threshold probability", "net benefit", sharey=False,
    )  # fmt: skip
    # beyond the highest score every curve is 0: show up to it (at least 0.5)
    x_max = max(
        [
            0.5,
            *(float(np.max(d["t"][d["model"] != 0], initial=0)) + 0.1 for d in result.curves["dca"].values()),
        ]
    )
    x_max = min(1.0, np.ceil(x_max * 10) / 10)
    for ax, label in zip(axes, LABELS, strict=False):
        e = result.per_class[label]
        _title(ax, label, e)
        d = result.curves["dca"].get(label)
        if d is None:
            continue
        c = colours[label]
        if "low" in d:
            ax.fill_between(d["t"], d["low"], d["high"], color=c, alpha=0.25, lw=0)
        ax.plot(d["t"], d["model"], color=c, lw=1.4)
        ax.plot(d["t"], d["all"], ls="--", c="grey", lw=0.8)
        ax.axhline(0, ls=":", c="k", lw=0.8)
        dep = e.get("deployed")
        if dep is not None:
            ax.axvline(dep["threshold"], c="k", lw=0.8)
        top = max(e["prevalence"], 1e-3)  # no strategy's net benefit exceeds the prevalence
        ax.set_xlim(0, x_max)
        ax.set_ylim(-0.5 * top, 1.15 * top)
    return _save(fig, out, "decision_curves.png")


def plot_all(result: EvalResult, out: Path) -> list[str]:
    """Write the four figures into ``out``; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    colours = finding_colours()
    makers: list[Callable[[EvalResult, Path, dict[str, Any]], str]] = [_roc, _pr, _reliability, _dca]
    return [make(result, out, colours) for make in makers]
