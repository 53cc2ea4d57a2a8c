"""``chexdcm audit-labels``: rank the images whose label is most likely wrong, per finding.

Input: out-of-sample probabilities and labels, either a batch run with labels
(``--run OUT``: its ``report/joined.csv``) or two CSVs (``--predictions`` and
``--labels``, as for ``chexdcm evaluate``).  Output in ``--out``: ``review.csv`` (the
``--top`` most suspect images per finding, for a clinician to review), ``review.html``
(the same, with thumbnails when ``--images`` holds PNGs named by the image id) and
``audit.json`` (estimated noise rate per finding with its Wilson CI, and the AUROC as
labelled, with the flagged images removed and with their labels flipped).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from chexnet_dicom.errors import EXIT_OK, ConfigError

__all__ = ["register", "run"]

_CIRCULAR = (
    "the flagged labels are those the model disagrees with, so removing or relabelling them raises the "
    "AUROC by construction: a sensitivity analysis of label noise, not evidence of a better model; "
    "only labels corrected by a reader can be scored against"
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``audit-labels`` subcommand."""
    p = sub.add_parser(
        "audit-labels",
        help="confident learning: rank the images whose label is most likely wrong",
        description="Confident learning (cleanlab) on out-of-sample probabilities: per finding, the "
        "images whose label is most likely wrong, the estimated label-noise rate with a 95% CI, and how "
        "the AUROC moves with the flagged labels removed or relabelled. Research use only.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="a batch run folder scored with --labels")
    src.add_argument("--predictions", type=Path, help="predictions CSV (with --labels)")
    p.add_argument("--labels", type=Path, help="labels CSV (NIH Data_Entry or wide 0/1)")
    p.add_argument("--out", type=Path, default=Path("label_audit"), help="output folder")
    p.add_argument("--top", type=int, default=25, help="images per finding in the review sheet")
    p.add_argument("--images", type=Path, help="folder of PNGs named by image id, for thumbnails")
    p.set_defaults(func=run)


def _from_run(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from chexnet_dicom.model.labels import LABELS

    path = run_dir / "report" / "joined.csv"
    if not path.is_file():
        raise ConfigError(f"{path} not found: run chexdcm batch with --labels first")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        key = (reader.fieldnames or [""])[0]
        rows = list(reader)
    ids = np.array([r[key] for r in rows], dtype=object)
    y = np.array([[int(r[f"label_{x}"]) for x in LABELS] for r in rows], dtype=int).reshape(-1, len(LABELS))
    p = np.array([[float(r[f"prob_{x}"]) for x in LABELS] for r in rows]).reshape(-1, len(LABELS))
    return ids, y, p


def _thumbnail(folder: Path | None, image_id: str) -> str:
    if folder is None:
        return ""
    path = folder / image_id
    if not path.is_file() or path.resolve().parent != folder.resolve():
        return ""
    from PIL import Image

    with Image.open(path) as src:
        grey = src.convert("L")
    grey.thumbnail((160, 160))
    buf = io.BytesIO()
    grey.save(buf, format="PNG")
    return f"<img src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def run(args: argparse.Namespace) -> int:
    """Run the audit."""
    from chexnet_dicom.atomic import atomic_write
    from chexnet_dicom.evaluate.audit import audit_labels, rescore
    from chexnet_dicom.model.labels import LABELS

    if args.top < 1:
        raise ConfigError("--top must be >= 1")
    if args.run is not None:
        ids, y, p = _from_run(args.run)
    else:
        if args.labels is None:
            raise ConfigError("--predictions needs --labels")
        from chexnet_dicom.evaluate.tables import join_tables, read_labels, read_predictions

        pred_ids, scores = read_predictions(args.predictions)
        data = join_tables(pred_ids, scores, read_labels(args.labels))
        ids, y, p = data.ids, data.y.astype(int), data.scores
    if len(ids) < 2:
        raise ConfigError("the audit needs at least two labelled images")
    audits = audit_labels(y, p, LABELS)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, Any]] = {}
    sheet = io.StringIO(newline="")
    w = csv.writer(sheet)
    w.writerow(["finding", "rank", "image", "label", "probability", "label_quality", "flagged"])
    cards = ["<!doctype html><meta charset='utf-8'><title>label review</title>",
             "<style>body{font-family:sans-serif}td{border:1px solid #ccc;padding:3px;font-size:12px}"
             "table{border-collapse:collapse}</style>",
             "<h1>Labels to review (confident learning)</h1><p><b>Research use only.</b> Lowest label "
             "quality first; a flagged label is likely wrong. Check each against the image.</p>"]  # fmt: skip
    for k, label in enumerate(LABELS):
        a = audits[label]
        moves = rescore(y[:, k], p[:, k], a.flagged)
        summary[label] = {
            "flagged": int(a.flagged.sum()),
            "noise_rate": {"value": a.noise_rate, "low": a.noise_low, "high": a.noise_high},
            "auroc": moves,
        }
        cards.append(
            f"<h2>{html.escape(label.replace('_', ' '))}: {int(a.flagged.sum())} flagged, noise rate "
            f"{a.noise_rate:.3f} ({a.noise_low:.3f}-{a.noise_high:.3f})</h2><table><tr><th>rank</th>"
            "<th>image</th><th>label</th><th>probability</th><th>quality</th><th>flagged</th><th></th></tr>"
        )
        for rank, i in enumerate(a.order()[: args.top], start=1):
            row = [
                label,
                rank,
                ids[i],
                int(y[i, k]),
                f"{p[i, k]:.4f}",
                f"{a.quality[i]:.4f}",
                bool(a.flagged[i]),
            ]
            w.writerow(row)
            cells = "".join(f"<td>{html.escape(str(c))}</td>" for c in row[1:])
            cards.append(f"<tr>{cells}<td>{_thumbnail(args.images, str(ids[i]))}</td></tr>")
        cards.append("</table>")
    atomic_write(args.out / "review.csv", sheet.getvalue())
    atomic_write(args.out / "review.html", "\n".join(cards))
    atomic_write(
        args.out / "audit.json",
        json.dumps({"images": len(ids), "note": _CIRCULAR, "per_class": summary}, indent=2),
    )
    print(f"{'finding':<20} {'flagged':>7}  noise rate (95% CI)   AUROC: labelled / removed / relabelled")
    for label, s in summary.items():
        nr, au = s["noise_rate"], s["auroc"]
        print(
            f"{label:<20} {s['flagged']:>7}  {nr['value']:.3f} ({nr['low']:.3f}-{nr['high']:.3f})   "
            f"{au['as_labelled']:.3f} / {au['flagged_removed']:.3f} / {au['flagged_relabelled']:.3f}"
        )
    print(f"note: {_CIRCULAR}")
    print(f"review sheet: {args.out / 'review.html'}")
    return EXIT_OK
