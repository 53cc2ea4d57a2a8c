"""Export a trained model as an fp16 bundle with a complete model card.

The bundle is written first, loaded back (so every number on the card is measured
with the fp16 weights users get) and then the card is completed:

- validation and test predictions are computed through the *inference* input path
  (source image -> :func:`chexnet_dicom.transforms.prepare_model_input` with the card's
  preprocessing), not the training cache;
- operating points: by the recipe's ``[output] operating_point`` policy on the validation
  set (Youden's J, or a fixed specificity), with sensitivity/specificity and
  patient-level bootstrap 95% CIs on validation (``method = "youden:validation"`` or
  ``"specificity>=0.90:validation"``);
- ``cam_scale``: the ``cam_percentile`` (99th) percentile of the class activation map
  values of each validation image's labelled-positive findings, where
  CAM_c = sum_k w_ck * ReLU(f_k) on the last feature grid (no bias);
- held-out test AUROC per finding with patient-level bootstrap 95% CIs
  (:mod:`chexnet_dicom.evaluate.metrics`), and the test predictions CSV written
  beside the card so the numbers can be recomputed.

:func:`~chexnet_dicom.train.fit.fit` exports at the end of training;
:func:`export_run` re-exports a finished run from its checkpoints without training.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.config import TrainConfig
from chexnet_dicom.errors import ConfigError
from chexnet_dicom.evaluate.metrics import (
    auroc_ci,
    bootstrap_weights,
    mean_auroc_ci,
    operating_point_stats,
    threshold_at_specificity,
    youden_threshold,
)
from chexnet_dicom.model.card import (
    ModelCard,
    OperatingPoint,
    Preprocessing,
    load_bundle,
    save_bundle,
)
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.network import build_network, feature_maps, head
from chexnet_dicom.train.data import Record, positives_per_class, read_training_image
from chexnet_dicom.train.datasets import load_dataset
from chexnet_dicom.transforms import decode_target_size, prepare_model_input

__all__ = ["cam_reference", "export_bundle", "export_run", "predict_records", "write_predictions_csv"]

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_records(
    net: nn.Module,
    records: Sequence[Record],
    pre: Preprocessing,
    *,
    device: torch.device | None = None,
    batch_size: int = 32,
    cam_labels: np.ndarray | None = None,
    cam_percentile: float = 99.0,
) -> tuple[np.ndarray, float | None]:
    """Probabilities of ``records`` through the inference input path.

    Parameters
    ----------
    net
        Network (put in eval mode).
    records
        Images to score.
    pre
        The card's preprocessing.
    cam_labels
        When given ((N, 14) 0/1), also return the ``cam_percentile`` percentile of the
        CAM values of each image's positive findings (see :func:`cam_reference`).

    Returns
    -------
    (numpy.ndarray, float or None)
        (N, 14) float64 probabilities, and the CAM reference (None without labels).
    """
    dev = device or torch.device("cpu")
    net.eval().to(dev)
    probs = []
    cams: list[np.ndarray] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        arrs = [
            prepare_model_input(
                read_training_image(r.path, target_size=decode_target_size(pre.resize)),
                resize=pre.resize,
                input_size=pre.input_size,
                tta=pre.tta,
                mean=pre.mean,
                std=pre.std,
            )
            for r in chunk
        ]
        x = torch.from_numpy(np.stack(arrs)).to(dev)
        if pre.tta == "tencrop":
            b = x.shape[0]
            logits = net(x.flatten(0, 1)).view(b, 10, -1)
            probs.append(torch.sigmoid(logits.float()).mean(dim=1).cpu().numpy())
            continue
        feats = feature_maps(net, x)
        logits = _head_logits(net, feats)
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        if cam_labels is not None:
            w = head(net).weight  # (C, 1024)
            cam = torch.einsum("bkhw,ck->bchw", feats, w).cpu().numpy()
            lab = cam_labels[start : start + len(chunk)] > 0.5
            for i in range(len(chunk)):
                for c in np.flatnonzero(lab[i]):
                    cams.append(cam[i, c].ravel())
    p = np.concatenate(probs).astype(np.float64)
    ref = cam_reference(cams, cam_percentile) if cam_labels is not None else None
    return p, ref


def _head_logits(net: nn.Module, rectified: torch.Tensor) -> torch.Tensor:
    """Logits from the rectified feature maps (MONAI: relu -> pool -> flatten -> out)."""
    pooled = rectified.mean(dim=(-2, -1))
    return head(net)(pooled)


def cam_reference(cams: Sequence[np.ndarray], percentile: float = 99.0) -> float:
    """Global CAM scale: a high percentile of positive-finding CAM values (>= 1e-6)."""
    if not cams:
        return 1.0
    values = np.concatenate(list(cams))
    return float(max(np.percentile(values, percentile), 1e-6))


def write_predictions_csv(path: str | os.PathLike[str], records: Sequence[Record], probs: np.ndarray) -> Path:
    """Write ``key,patient,<14 probabilities>,<14 labels as label_<name>>`` rows."""
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["key", "patient", *LABELS, *[f"label_{n}" for n in LABELS]])
    for r, row in zip(records, probs, strict=True):
        w.writerow([r.key, r.patient, *[f"{v:.6f}" for v in row], *[int(v) for v in r.labels]])
    return atomic_write(path, text.getvalue())


def _ci(values: Any) -> list[float] | None:
    lo, hi = values
    return [round(float(lo), 4), round(float(hi), 4)] if np.isfinite(lo) and np.isfinite(hi) else None


def export_bundle(
    net: nn.Module,
    cfg: TrainConfig,
    records: Sequence[Record],
    assignment: Sequence[str],
    *,
    history: list[dict[str, float]],
    best_epoch: int,
    init_note: str,
    stopped_by_budget: bool,
    train_minutes: float,
    device: torch.device | None = None,
) -> Path:
    """Save ``net`` as an fp16 bundle and fill its card from validation and test data.

    Parameters
    ----------
    net
        The selected (best validation AUROC) network.
    cfg
        The recipe used.
    records, assignment
        All records and their subset.

    Returns
    -------
    Path
        The written ``*.card.json``.
    """
    out = cfg.output
    pre = Preprocessing(resize=cfg.preprocessing.resize, input_size=cfg.preprocessing.input_size, tta="none")
    card = ModelCard(
        name=out.name,
        version=out.version,
        preprocessing=pre,
        intended_use=out.intended_use,
        source=out.command or "chexdcm train",
    )
    directory = Path(out.export_dir)
    card_path = save_bundle(net, card, directory, out.stem, dtype=torch.float16)
    loaded, card = load_bundle(card_path)  # the fp16 weights users get, back in fp32

    subsets = {
        s: [r for r, a in zip(records, assignment, strict=True) if a == s]
        for s in ("train", "validation", "test")
    }
    val, test = subsets["validation"], subsets["test"]
    yv = np.stack([r.labels for r in val]).astype(np.float64)
    yt = np.stack([r.labels for r in test]).astype(np.float64)
    pv, cam_scale = predict_records(
        loaded, val, pre, device=device, cam_labels=yv, cam_percentile=out.cam_percentile
    )
    pt, _ = predict_records(loaded, test, pre, device=device)
    write_predictions_csv(directory / f"{out.stem}.test_predictions.csv", test, pt)
    run_dir = Path(out.run_dir)
    write_predictions_csv(run_dir / "validation_predictions.csv", val, pv)

    wv = bootstrap_weights([r.patient for r in val], out.bootstrap, seed=1)
    wt = bootstrap_weights([r.patient for r in test], out.bootstrap, seed=2)
    ops: dict[str, OperatingPoint] = {}
    test_metrics: dict[str, Any] = {}
    val_metrics: dict[str, Any] = {}
    for j, name in enumerate(LABELS):
        if 0 < yv[:, j].sum() < len(yv):
            thr, method = _operating_point(out.operating_point, yv[:, j], pv[:, j])
            st = operating_point_stats(yv[:, j], pv[:, j], thr, wv)
            ops[name] = OperatingPoint(
                threshold=round(float(thr), 6),
                method=method,
                sensitivity=round(st["sensitivity"].value, 4),
                specificity=round(st["specificity"].value, 4),
                sensitivity_ci=_ci((st["sensitivity"].low, st["sensitivity"].high)),  # type: ignore[arg-type]
                specificity_ci=_ci((st["specificity"].low, st["specificity"].high)),  # type: ignore[arg-type]
            )
        va = auroc_ci(yv[:, j], pv[:, j], wv)
        val_metrics[name] = {"auroc": _round(va.value), "ci95": _ci((va.low, va.high))}
        ta = auroc_ci(yt[:, j], pt[:, j], wt)
        entry: dict[str, Any] = {
            "auroc": _round(ta.value),
            "ci95": _ci((ta.low, ta.high)),
            "positives": int(yt[:, j].sum()),
            "n": len(test),
        }
        if name in ops:
            st = operating_point_stats(yt[:, j], pt[:, j], ops[name].threshold, wt)
            entry["at_operating_point"] = {
                k: {"value": _round(v.value), "ci95": _ci((v.low, v.high))} for k, v in st.items()
            }
        test_metrics[name] = entry
    finite = [m["auroc"] for m in test_metrics.values() if m["auroc"] is not None]
    mean_t = mean_auroc_ci(yt, pt, wt)
    vfinite = [m["auroc"] for m in val_metrics.values() if m["auroc"] is not None]
    training = {
        "data": "NIH ChestX-ray14, 500-image subset in ../shared/data/nih (512x512 PNG downsampled "
        "from the official test split), v2020 labels"
        if cfg.data.format == "nih"
        else f"{cfg.data.format} dataset",
        "split": {
            "file": cfg.data.split_file or "computed",
            "method": "patient-level iterative stratification (chexnet_dicom.train.splits)",
            "sizes": {s: len(v) for s, v in subsets.items()},
            "patients": {s: len({r.patient for r in v}) for s, v in subsets.items()},
            "positives": {s: positives_per_class(v) for s, v in subsets.items()},
        },
        "initialisation": init_note,
        "recipe": cfg.to_dict(),
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "stopped_by_time_budget": stopped_by_budget,
        "train_minutes": round(train_minutes, 1),
        "device": str(device or "cpu"),
        "torch": torch.__version__,
        "history": [{k: _round(v) for k, v in h.items()} for h in history],
        "cam_scale_method": f"p{out.cam_percentile:g} of CAM_c = sum_k w_ck ReLU(f_k) (no bias) over the "
        "validation images' labelled-positive findings, last feature grid, fp16 weights",
        "operating_point_method": _policy_text(out.operating_point),
        "heatmap_method": HEATMAP_METHOD,
    }
    metrics = {
        "test": {
            "per_class": test_metrics,
            "mean_auroc": _round(float(np.mean(finite))) if finite else None,
            "mean_auroc_ci95": _ci((mean_t.low, mean_t.high)),
            "ci_method": f"patient-level percentile bootstrap, {out.bootstrap} resamples, 95%",
            "predictions_file": f"{out.stem}.test_predictions.csv",
        },
        "validation": {
            "per_class": val_metrics,
            "mean_auroc": _round(float(np.mean(vfinite))) if vfinite else None,
        },
    }
    final = dataclasses.replace(
        card,
        operating_points=ops,
        cam_scale=round(float(cam_scale or 1.0), 6),
        training=training,
        metrics=metrics,
    )
    path = save_bundle(loaded, final, directory, out.stem, dtype=torch.float16)
    if ModelCard.read(path).weights_sha256 != card.weights_sha256:
        log.warning("re-saving the bundle changed the tensor hash; metrics refer to the final file")
    # out-of-distribution reference: fitted on the training split, thresholds on validation
    from chexnet_dicom.model.torch_backend import TorchPredictor
    from chexnet_dicom.train.ood_calibration import calibrate_card

    try:
        calibrate_card(
            path,
            TorchPredictor.from_card(path, device="cpu", precision="fp32"),
            [r.path for r in subsets["train"]],
            [r.path for r in val],
            source="training split (fit) and validation split (threshold) of the recipe's split",
        )
    except ConfigError as exc:  # too few images: the bundle works, without an OOD score
        log.warning("no out-of-distribution reference written: %s", exc)
    return path


#: How the overlays draw a finding's map (chexnet_dicom.results), recorded in the card.
HEATMAP_METHOD = (
    "relative evidence: the finding's class activation map (Zhou et al. 2016; equal to Grad-CAM at "
    "the last feature layer for this head, Selvaraju et al. 2017) minus its mean over the image's "
    "feature grid, over its maximum, clipped to [0, 1]; drawn only for findings present at their "
    "operating point, from cam_threshold to 1, and the SR's image region is the largest area at or "
    "above cam_threshold"
)


def _operating_point(policy: str, y: np.ndarray, p: np.ndarray) -> tuple[float, str]:
    """The threshold the recipe's policy gives on validation labels ``y`` and scores ``p``."""
    if policy == "youden":
        return youden_threshold(y, p), "youden:validation"
    spec = float(policy.partition(":")[2])
    # rounding to 6 digits may move the threshold below a tied negative score: round up
    thr = float(np.ceil(threshold_at_specificity(y, p, spec) * 1e6) / 1e6)
    return thr, f"specificity>={spec:.2f}:validation"


def _policy_text(policy: str) -> str:
    if policy == "youden":
        return "Youden's J (max sensitivity + specificity - 1) on the validation set"
    spec = float(policy.partition(":")[2])
    return (
        f"fixed specificity: the lowest threshold with specificity >= {spec:.2f} on the validation set "
        "(a weak model's Youden points sit near the bottom of its range and call most findings present)"
    )


def export_run(cfg: TrainConfig) -> Path:
    """Export the bundle of a finished run (``best.pt`` + ``last.pt`` in ``output.run_dir``).

    The same export :func:`~chexnet_dicom.train.fit.fit` does at its end, for
    re-exporting without training.

    Parameters
    ----------
    cfg
        The recipe of the run.

    Returns
    -------
    Path
        The written ``*.card.json``.

    Raises
    ------
    ConfigError
        When the run folder has no checkpoints or the recipe no ``export_dir``.
    """
    run_dir = Path(cfg.output.run_dir)
    if not cfg.output.export_dir:
        raise ConfigError("the recipe has no [output] export_dir")
    if not (run_dir / "best.pt").is_file() or not (run_dir / "last.pt").is_file():
        raise ConfigError(f"no best.pt/last.pt in {run_dir}: train first")
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    last = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    history = [dict(h) for h in json.loads(last["history"])]
    net = build_network()
    net.load_state_dict(best["model"])
    records, assignment = load_dataset(cfg.data)
    init_note = (
        "random (from scratch)" if not cfg.train.init_weights else f"from {Path(cfg.train.init_weights).name}"
    )
    return export_bundle(
        net,
        cfg,
        records,
        assignment,
        history=history,
        best_epoch=int(best["epoch"]),
        init_note=init_note,
        stopped_by_budget=len(history) < cfg.train.epochs,
        train_minutes=float(history[-1]["elapsed_minutes"]) if history else 0.0,
        device=torch.device("cpu"),
    )


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4) if np.isfinite(v) else None
    return v
