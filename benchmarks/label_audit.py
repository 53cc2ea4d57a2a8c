"""Confident-learning label audit against radiologists (``python benchmarks/label_audit.py``).

The 935 NIH ChestX-ray14 images that have both Google's radiologist-adjudicated labels
(Majkowska et al., *Radiology* 2019; ``reference/nih_expert_labels/``) and the public
reproduce-chexnet 2022 DenseNet-121's out-of-sample probabilities
(``reference/reproduce_chexnet_2022_test_preds.csv``).  A *label error* is an image whose
NLP label (``Finding Labels``, v2020) disagrees with the radiologists.  For pneumothorax and
for nodule or mass (the model's score: max of its Nodule and Mass probabilities), the
audit (:func:`chexnet_dicom.evaluate.audit.audit_labels`) is scored as a detector of label
errors: detection AUROC of its review order, precision and recall at k (k = the number of
true errors), and precision/recall of its flagged set; against two baselines measured
in the same run: random order (mean of 1,000 seeded permutations) and the plain |p - y|.
Also the model's AUROC against the NLP and against the expert labels, with patient-level
bootstrap CIs and their paired difference.

Usage: ``python benchmarks/label_audit.py [--shared ../shared/data] [--bootstrap 1000] [--json]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from chexnet_dicom.evaluate import metrics as mt
from chexnet_dicom.evaluate.audit import audit_labels

FINDINGS = {"Pneumothorax": ("Pneumothorax",), "Nodule or mass": ("Nodule", "Mass")}


def load(shared: Path) -> dict[str, np.ndarray]:
    """The joined table: ids, patients, NLP and expert labels, model scores (one column per finding)."""
    ref = shared / "reference"
    expert: dict[str, dict[str, str]] = {}
    for name in ("test_labels.csv", "validation_labels.csv"):
        with (ref / "nih_expert_labels" / name).open(newline="") as fh:
            for row in csv.DictReader(fh):
                expert[row["Image Index"]] = row
    ids, patients, nlp, exp, scores = [], [], [], [], []
    with (ref / "reproduce_chexnet_2022_test_preds.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            e = expert.get(row["Image Index"])
            if e is None or any(e[f] not in ("YES", "NO") for f in FINDINGS):
                continue
            names = set(e["Finding Labels"].split("|"))
            ids.append(row["Image Index"])
            patients.append(e["Patient ID"])
            nlp.append([any(c in names for c in cols) for cols in FINDINGS.values()])
            exp.append([e[f] == "YES" for f in FINDINGS])
            scores.append([max(float(row[f"prob_{c}"]) for c in cols) for cols in FINDINGS.values()])
    return {
        "ids": np.array(ids),
        "patients": np.array(patients),
        "nlp": np.array(nlp, dtype=int),
        "expert": np.array(exp, dtype=int),
        "scores": np.array(scores),
    }


def _at_k(suspicion: np.ndarray, error: np.ndarray) -> tuple[float, float]:
    """Detection AUROC and precision at k = number of true errors (ties broken by index)."""
    k = int(error.sum())
    top = np.argsort(-suspicion, kind="mergesort")[:k]
    return mt.auroc(error, suspicion), float(error[top].mean())


def run(shared: Path, n_boot: int, seed: int) -> dict[str, object]:
    """Every number the benchmark prints."""
    d = load(shared)
    audits = audit_labels(d["nlp"], d["scores"], list(FINDINGS))
    boot = mt.bootstrap_weights(d["patients"], n_boot, seed)
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {"images": len(d["ids"]), "patients": len(set(d["patients"])), "seed": seed}
    for k, name in enumerate(FINDINGS):
        y, e, s = d["nlp"][:, k], d["expert"][:, k], d["scores"][:, k]
        error = (y != e).astype(int)
        a = audits[name]
        auc_cl, prec_cl = _at_k(1 - a.quality, error)
        auc_abs, prec_abs = _at_k(np.abs(s - y), error)
        rand = [_at_k(rng.random(y.size), error) for _ in range(1000)]
        tp_flag = int((a.flagged & (error == 1)).sum())
        auc_nlp = mt.auroc_ci(y, s, boot)
        auc_exp = mt.auroc_ci(e, s, boot)
        diff = mt.weighted_auroc(e, s, boot) - mt.weighted_auroc(y, s, boot)
        lo, hi = np.nanpercentile(diff, [2.5, 97.5])
        out[name] = {
            "nlp_positives": int(y.sum()),
            "expert_positives": int(e.sum()),
            "label_errors": int(error.sum()),
            "confident_learning": {"detection_auroc": auc_cl, "precision_at_k": prec_cl},
            "abs_p_minus_y": {"detection_auroc": auc_abs, "precision_at_k": prec_abs},
            "random": {
                "detection_auroc": float(np.mean([r[0] for r in rand])),
                "precision_at_k": float(np.mean([r[1] for r in rand])),
            },
            "flagged": {
                "n": int(a.flagged.sum()),
                "precision": tp_flag / max(int(a.flagged.sum()), 1),
                "recall": tp_flag / max(int(error.sum()), 1),
                "noise_rate": [a.noise_rate, a.noise_low, a.noise_high],
                "true_error_rate": float(error.mean()),
            },
            "model_auroc_vs_nlp": [auc_nlp.value, auc_nlp.low, auc_nlp.high],
            "model_auroc_vs_expert": [auc_exp.value, auc_exp.low, auc_exp.high],
            "expert_minus_nlp": [auc_exp.value - auc_nlp.value, float(lo), float(hi)],
        }
    return out


def _print(res: dict[str, object]) -> None:
    print(f"{res['images']} images ({res['patients']} patients), bootstrap seed {res['seed']}")
    for name in FINDINGS:
        r = res[name]
        assert isinstance(r, dict)
        f = r["flagged"]
        print(
            f"\n{name}: {r['label_errors']} NLP/expert disagreements "
            f"(NLP {r['nlp_positives']}+, expert {r['expert_positives']}+)"
        )
        print(f"  {'ranking':<22} detection AUROC  precision@k (k={r['label_errors']})")
        for key, text in (
            ("confident_learning", "cleanlab"),
            ("abs_p_minus_y", "|p - y|"),
            ("random", "random"),
        ):
            print(f"  {text:<22} {r[key]['detection_auroc']:.3f}            {r[key]['precision_at_k']:.3f}")
        ratio = r["confident_learning"]["precision_at_k"] / r["random"]["precision_at_k"]
        print(f"  cleanlab precision@k / random: {ratio:.2f}x")
        nr = f["noise_rate"]
        print(
            f"  flagged set: {f['n']} images, precision {f['precision']:.3f}, recall {f['recall']:.3f}; "
            f"estimated noise rate {nr[0]:.3f} ({nr[1]:.3f}-{nr[2]:.3f}) vs true {f['true_error_rate']:.3f}"
        )
        for key, text in (("model_auroc_vs_nlp", "NLP"), ("model_auroc_vs_expert", "expert")):
            v = r[key]
            print(f"  model AUROC vs {text:<7} {v[0]:.3f} ({v[1]:.3f}-{v[2]:.3f})")
        v = r["expert_minus_nlp"]
        print(f"  expert - NLP           {v[0]:+.3f} ({v[1]:+.3f} to {v[2]:+.3f})")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not (args.shared / "reference" / "nih_expert_labels").is_dir():
        print(f"no expert labels under {args.shared}/reference", file=sys.stderr)
        return 2
    res = run(args.shared, args.bootstrap, args.seed)
    print(json.dumps(res, indent=2)) if args.json else _print(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
