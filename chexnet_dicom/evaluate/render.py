"""The Markdown report of an :class:`~chexnet_dicom.evaluate.report.EvalResult`, and its HTML.

Order: who and what (model identity, research-use notice, data and join), the model as
deployed (the card's operating points), discrimination and calibration, clinical
utility, thresholds chosen on this data (optimistic), comparison, subgroups, published
results, plots.  Findings or subgroups with fewer than :data:`~.metrics.MIN_EVENTS`
positives (or negatives) are marked, and their AUROC is shown without an interval.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from chexnet_dicom.evaluate import metrics as mt
from chexnet_dicom.model.labels import LABELS

if TYPE_CHECKING:
    from chexnet_dicom.evaluate.result import EvalResult

__all__ = ["PUBLISHED_SOURCES", "display_name", "markdown", "to_html"]

#: Readable names of the columns of ``published_auroc.csv``, and each source's test-set
#: size where this project has verified it (None: not stated in the table).
PUBLISHED_SOURCES: dict[str, tuple[str, int | None]] = {
    "wang2017_chestxray8": ("Wang et al. 2017 (ChestX-ray8)", None),
    "yao2017": ("Yao et al. 2017", None),
    "chexnet_paper_rajpurkar2017": ("CheXNet paper (Rajpurkar et al. 2017)", None),
    "arnoweng_reimpl": ("arnoweng CheXNet re-implementation", None),
    "arnoweng_improved": ("arnoweng improved", None),
    "zoogzog_m-25012018-123527": ("zoogzog chexnet (checkpoint m-25012018)", None),
    "jrzech_2018_pretrained-old": ("reproduce-chexnet 2018 (Zech)", None),
    # rows of reproduce_chexnet_2022_test_preds.csv, counted
    "jrzech_2022_pretrained": ("reproduce-chexnet 2022 (Zech)", 22433),
}

SMALL = "‡"
WILSON = "w"

ECE_DEFINITION = (
    "ECE (expected calibration error) = sum over 10 equal-width bins of the predicted "
    "probability of (images in bin / all images) x |observed fraction positive - mean "
    "predicted probability|; 0 is perfect calibration."
)


def display_name(label: str) -> str:
    """``Pleural_Thickening`` -> ``Pleural Thickening`` (one spelling in every table)."""
    return label.replace("_", " ")


def _f(d: dict[str, Any] | None, digits: int = 3, small: bool = False) -> str:
    if not d:
        return "n/a"
    value, lo, hi = d.get("value", np.nan), d.get("low", np.nan), d.get("high", np.nan)
    if not np.isfinite(value):
        return "n/a"
    if small:
        return f"{value:.{digits}f} (too few for a CI)"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{value:.{digits}f}"
    if hi <= lo:  # every resample agreed: too few events, never certainty
        return f"{value:.{digits}f} (no interval: too few events)"
    mark = f" {WILSON}" if d.get("wilson") else ""
    sep = " to " if lo < 0 else "-"
    return f"{value:.{digits}f} ({lo:.{digits}f}{sep}{hi:.{digits}f}){mark}"


def _name(label: str, e: dict[str, Any]) -> str:
    return display_name(label) + (f" {SMALL}" if e.get("small_n") else "")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def _who(result: EvalResult) -> list[str]:
    m, d = result.model, result.data
    rows = [
        ["model", f"{m.get('name', 'not recorded')} {m.get('version', '')}".strip()],
        ["weights sha256", f"`{m.get('weights_sha256', 'not recorded')}`"],
        ["backend / precision", f"{m.get('backend', 'not recorded')} / {m.get('precision', 'not recorded')}"],
        ["device", str(m.get("device", "not recorded"))],
        ["operating points", str(m.get("operating_points", "none given: the deployed calls are not scored"))],
    ]
    data_rows = [
        ["scored", f"{result.n_images} {d.get('level', 'image')}s from {result.n_patients} patients"],
        ["labels", str(d.get("label_source", "not recorded"))],
        ["join", str(d.get("join", "predictions id = labels id"))],
    ]
    for key, text in (
        ("joined", "joined"),
        ("predictions_without_label", "analysed without a label row"),
        ("labels_without_prediction", "label rows without a prediction"),
    ):
        if key in d:
            data_rows.append([text, str(d[key])])
    return [
        "# chexnet-dicom evaluation report",
        "",
        f"**{result.model.get('notice', 'Research use only. Not for clinical use.')}**",
        "",
        "## Model",
        "",
        *_table(["model", "value"], rows),
        "Scores depend on the backend and precision (torch bf16 and ONNX Runtime fp32 can "
        "differ in the third decimal of an AUROC): compare runs made with the same backend and precision.",
        "",
        "## Data",
        "",
        *_table(["data", "value"], data_rows),
        f"Intervals: 95%, from {result.n_boot} patient-level bootstrap resamples (seed {result.seed}); "
        "the same resamples serve every table, subgroups included. Sensitivity, specificity, PPV and NPV "
        f"use the Wilson score interval (marked {WILSON}) when their denominator is under "
        f"{mt.MIN_EVENTS} or the bootstrap interval has zero width. {SMALL}: fewer than "
        f"{mt.MIN_EVENTS} positives or negatives; its AUROC is shown without an interval (too few for a CI).",
        "",
    ]


def _deployed(result: EvalResult) -> list[str]:
    rows, util = [], []
    for label, e in result.per_class.items():
        dep = e.get("deployed")
        if dep is None:
            continue
        found = f"{dep['tp']} of {e['positives']}"
        rows.append(
            [
                _name(label, e),
                f"{e['positives']} / {e['negatives']}",
                f"{dep['threshold']:.4f}",
                found,
                _f(dep["sensitivity"]),
                _f(dep["specificity"]),
                _f(dep["ppv"]),
                _f(dep["npv"]),
                _f(dep["f1"]),
            ]
        )
        util.append(
            [
                display_name(label),
                _f(dep["alerts_per_100"], 1),
                _f(dep["true_findings_per_100"], 1),
                _f(dep["net_benefit"], 4),
                f"{dep['net_benefit_treat_all']:.4f}",
            ]
        )
    if not rows:
        return [
            "## 1. The model as deployed",
            "",
            "No operating points were given (`--card`): the present/absent calls the SR makes are not "
            "scored here. Only threshold-free metrics and data-chosen thresholds follow.",
            "",
        ]
    source = next(iter(e["deployed"]["source"] for e in result.per_class.values() if "deployed" in e))
    out = [
        "## 1. The model as deployed",
        "",
        f"Operating points from the {source}, chosen on validation data, not on these images: exactly "
        "the present/absent calls of the SR (`present_*` in the tables). Present when probability >= threshold.",
        "",
        *_table(
            ["finding", "n+ / n-", "threshold", "found", "sensitivity", "specificity", "PPV", "NPV", "F1"],
            rows,
        ),
        "### Clinical utility at the deployed thresholds",
        "",
        "Net benefit = TP/n - FP/n x t/(1-t) at threshold t (Vickers & Elkin 2006), in true findings per "
        "image net of false alarms weighted by the threshold's odds; treat none = 0.",
        "",
        *_table(["finding", "alerts per 100", "true findings per 100", "net benefit", "treat all"], util),
    ]
    prev = [
        [
            display_name(label),
            f"{e['at_prevalence']['prevalence']:.3f}",
            _f(e["at_prevalence"]["ppv"]),
            _f(e["at_prevalence"]["npv"]),
        ]
        for label, e in result.per_class.items()
        if "at_prevalence" in e
    ]
    if prev:
        out += [
            "### PPV and NPV at the stated local prevalence",
            "",
            "From the deployed sensitivity and specificity by Bayes' rule; intervals over the same resamples.",
            "",
            *_table(["finding", "prevalence", "PPV", "NPV"], prev),
        ]
    return out


def _discrimination(result: EvalResult) -> list[str]:
    rows = [
        [
            _name(label, e),
            str(e["positives"]),
            f"{e['prevalence']:.3f}",
            _f(e["auroc"], small=e["small_n"]),
            f"{e['pr_auc']:.3f}" if np.isfinite(e["pr_auc"]) else "n/a",
            f"{e['ece']:.3f}",
        ]
        for label, e in result.per_class.items()
    ]
    rows.append(["**mean**", "", "", _f(result.mean_auroc_ci), "", ""])
    return [
        "## 2. Discrimination and calibration",
        "",
        *_table(["finding", "n+", "prevalence", "AUROC (95% CI)", "PR-AUC", "ECE"], rows),
        "The mean AUROC is over the findings with both outcomes; its interval re-takes the mean in every "
        "resample. " + ECE_DEFINITION,
        "",
    ]


def _data_chosen(result: EvalResult) -> list[str]:
    rows = []
    for label, e in result.per_class.items():
        for rule, st in e.get("data_chosen", {}).items():
            if "sensitivity" not in st:
                rows.append([display_name(label), rule, f"{st['threshold']:.4f}", "n/a", "n/a", "n/a", "n/a"])
                continue
            se, sp = st["sensitivity"], st["specificity"]
            rows.append(
                [
                    _name(label, e),
                    rule,
                    f"{se['threshold']:.4f}",
                    _f(se),
                    f"{se['corrected']:.3f}",
                    _f(sp),
                    f"{sp['corrected']:.3f}",
                ]
            )
    return [
        "## 3. Thresholds chosen on this data (optimistic)",
        "",
        "These thresholds were chosen on the images being scored, so their apparent values flatter the "
        "model. Each interval re-chooses the threshold inside every bootstrap resample; 'corrected' "
        "subtracts Harrell's bootstrap optimism. Do not read them as the deployed model's performance.",
        "",
        *_table(
            ["finding", "rule", "threshold", "sensitivity", "corrected", "specificity", "corrected"], rows
        ),
    ]


def _comparison(result: EvalResult) -> list[str]:
    if not result.comparison:
        return []
    first = next(iter(result.comparison.values()))
    rows = []
    for label, c in result.comparison.items():
        nb = c.get("net_benefit_difference")
        rows.append(
            [
                display_name(label),
                f"{c['auroc_a']:.3f}",
                f"{c['auroc_b']:.3f}",
                _f(c["difference"], 4),
                c["verdict_auroc"],
                _f(nb, 4) if nb else "n/a",
                c.get("verdict_net_benefit", "n/a"),
            ]
        )
    return [
        f"## Paired comparison with {first['model_b']}",
        "",
        f"Same images, same resamples. MCID: AUROC {first.get('mcid_auroc')}, net benefit "
        f"{first.get('mcid_net_benefit')}. 'Clinically meaningful' means the whole 95% interval lies "
        "beyond the MCID; 'not significant' means it contains 0.",
        "",
        *_table(
            [
                "finding",
                "AUROC A",
                "AUROC B",
                "A - B",
                "AUROC verdict",
                "net benefit A - B",
                "net benefit verdict",
            ],
            rows,
        ),
    ]


def _subgroups(result: EvalResult) -> list[str]:
    if not result.subgroups:
        return []
    out = ["## Subgroups (AUROC, 95% CI, [positives])", ""]
    for attr, members in result.subgroups.items():
        names = list(members)
        rows = []
        for label in LABELS:
            cells = []
            for v in names:
                pc = members[v]["per_class"][label]
                cells.append(f"{_f(pc['auroc'], small=pc['small_n'])} [{pc['positives']}+]")
            rows.append([display_name(label), *cells])
        out += [
            f"### {attr}",
            "",
            *_table(["finding", *(f"{v} (n={members[v]['n_images']})" for v in names)], rows),
        ]
    return out


def _published(result: EvalResult) -> list[str]:
    if not result.published:
        return []
    sources = list(result.published)
    names = [PUBLISHED_SOURCES.get(s, (s, None))[0] for s in sources]
    rows = []
    for label, e in result.per_class.items():
        pub = [f"{result.published[s].get(label, float('nan')):.3f}" for s in sources]
        rows.append([_name(label, e), f"{e['positives']}", _f(e["auroc"], small=e["small_n"]), *pub])
    means = [f"{np.mean(list(result.published[s].values())):.3f}" for s in sources]
    rows.append(["**mean**", "", _f(result.mean_auroc_ci), *means])
    legend = []
    for s, name in zip(sources, names, strict=True):
        n = PUBLISHED_SOURCES.get(s, (s, None))[1]
        legend.append(
            f"- {name} (`{s}`): test set {f'{n:,} images' if n else 'size not stated in the table'}"
        )
    return [
        "## Against published results (AUROC)",
        "",
        f"This evaluation: {result.n_images} images from {result.n_patients} patients, AUROC with its 95% CI; "
        "published results come from much larger test sets, so differences within this evaluation's "
        "interval are not evidence of a difference.",
        "",
        *_table(["finding", "n+ here", f"this evaluation (n={result.n_images})", *names], rows),
        *legend,
        "",
    ]


def markdown(result: EvalResult, images: list[str]) -> str:
    """The report as Markdown (tables, headings, images)."""
    lines = [
        *_who(result),
        *_deployed(result),
        *_discrimination(result),
        *_data_chosen(result),
        *_comparison(result),
        *_subgroups(result),
        *_published(result),
        "## Plots",
        "",
        *(f"![{name}]({name})" for name in images),
    ]
    return "\n".join(lines) + "\n"


_INLINE = [
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"`(.+?)`"), r"<code>\1</code>"),
]


def _inline(text: str) -> str:
    out = html.escape(text)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def to_html(md: str) -> str:
    """The Markdown subset of :func:`markdown` (headings, tables, lists, images, bold, code) as HTML."""
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>chexnet-dicom evaluation</title>",
        "<style>body{font-family:sans-serif;max-width:1400px;margin:auto;padding:0 1em}"
        ".t{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 5px;white-space:nowrap}th{background:#eee}"
        "img{max-width:100%}code{word-break:break-all}</style></head><body>",
    ]
    table: list[str] = []
    in_list = False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(c and set(c) <= {"-"} for c in cells):
                continue
            tag = "th" if not table else "td"
            table.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            out += ["<div class='t'><table>", *table, "</table></div>"]
            table = []
        if in_list and not line.startswith("- "):
            out.append("</ul>")
            in_list = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            out.append(f"<p><img src='{html.escape(src)}' alt='{html.escape(src)}'></p>")
        elif line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    if table:
        out += ["<div class='t'><table>", *table, "</table></div>"]
    if in_list:
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out)
