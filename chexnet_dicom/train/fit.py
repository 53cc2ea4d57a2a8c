"""The CheXNet fit loop: optimisation, validation, checkpoints and the run log.

:func:`fit` trains a recipe (:class:`~chexnet_dicom.config.TrainConfig`) as CheXNet
does: DenseNet-121 (ImageNet initialisation when ``init_weights`` names a file), Adam
lr 1e-3, batch 16, ReduceLROnPlateau x0.1 on the validation loss, binary
cross-entropy with optional class weights, and the checkpoint with the best
validation mean AUROC kept.

Resume: ``last.pt`` holds the model, optimiser, scheduler, epoch and the global RNG
state; with the seeded epoch order and augmentation draws of
:mod:`chexnet_dicom.train.augment`, a run resumed from the checkpoint of epoch ``e``
repeats exactly what an uninterrupted run does.

Precision: ``precision = "bf16"`` runs forward passes under ``torch.autocast``
(bfloat16), the loss and optimiser in float32; ``channels_last`` stores activations
NHWC (fast on tensor-core GPUs).  ``"auto"`` picks bf16 + channels_last on CUDA and
fp32 on CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils.data import DataLoader, Dataset

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.config import OptimConfig, TrainConfig
from chexnet_dicom.errors import ConfigError
from chexnet_dicom.model.card import load_state_dict_strict
from chexnet_dicom.model.labels import LABELS, NUM_CLASSES
from chexnet_dicom.model.network import build_network
from chexnet_dicom.train import ddp
from chexnet_dicom.train.augment import augment_batch, epoch_schedule, step_generator
from chexnet_dicom.train.cache import ImageCache, build_cache
from chexnet_dicom.train.data import Record
from chexnet_dicom.train.datasets import CachedImages, DecodedImages, load_dataset, to_model_input
from chexnet_dicom.train.scoring import predict_cached, roc_aucs
from chexnet_dicom.train.state import LOG_FIELDS, atomic_save, rng_state, set_rng_state, write_log

__all__ = ["LOG_FIELDS", "FitResult", "fit", "pos_weights", "predict_cached", "resolve_device"]

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """Outcome of :func:`fit` (meaningful on rank 0).

    Attributes
    ----------
    run_dir
        The run folder (checkpoints, ``log.csv``, ``config.json``).
    epochs_done
        Epochs in the history, including those of a resumed run.
    best_epoch, best_auroc
        The epoch (1-based; -1 when none had a finite AUROC) and validation mean AUROC
        of ``best.pt``.
    stopped_by_budget
        True when ``train.max_minutes`` ended the run early.
    history
        One log row per epoch (the columns of :data:`LOG_FIELDS`).
    card_path
        The exported model card, when the run exported one.
    """

    run_dir: Path
    epochs_done: int
    best_epoch: int
    best_auroc: float
    stopped_by_budget: bool
    history: list[dict[str, float]]
    card_path: Path | None = None


def resolve_device(name: str) -> torch.device:
    """The torch device of ``train.device``: ``"auto"`` -> CUDA when available, else CPU.

    Parameters
    ----------
    name
        ``"auto"`` or a torch device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        When ``name`` is not a device, or names CUDA on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device {name!r} is not a torch device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available; use 'auto' or 'cpu'")
    return dev


def _precision(cfg: OptimConfig, device: torch.device) -> tuple[bool, bool]:
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    cl = cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda")
    return bf16, cl


def pos_weights(labels: np.ndarray, mode: str) -> torch.Tensor | None:
    """BCE ``pos_weight`` per class: None, or negatives/positives ("balanced", capped at 100).

    Parameters
    ----------
    labels
        (N, C) 0/1 training labels.
    mode
        ``train.class_weights``: ``"none"`` or ``"balanced"``.

    Returns
    -------
    torch.Tensor or None
        (C,) float32 weights in [1, 100] (1 for a class without positives), or None.
    """
    if mode == "none":
        return None
    pos = labels.sum(axis=0)
    neg = labels.shape[0] - pos
    w = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return torch.tensor(np.clip(w, 1.0, 100.0), dtype=torch.float32)


def _init_weights(net: nn.Module, path: str) -> str:
    """Initialise from an ImageNet torchvision file or a project bundle; returns a description."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"train.init_weights file not found: {p}")
    if p.name.endswith(".card.json"):
        from chexnet_dicom.model.card import load_bundle

        loaded, card = load_bundle(p)
        load_state_dict_strict(net, loaded.state_dict())
        return f"bundle {card.name} {card.version}"
    from chexnet_dicom.model.weights import load_imagenet_init

    init = load_imagenet_init(p)
    load_state_dict_strict(net, init.state_dict())
    return f"ImageNet torchvision {p.name} (head randomly initialised)"


@dataclass
class _Run:
    """What every step of one run shares: the recipe, the process group and the device."""

    cfg: TrainConfig
    info: ddp.DistInfo
    device: torch.device
    bf16: bool
    channels_last: bool
    scale: float
    run_dir: Path
    started: float
    progress: bool


@dataclass
class _Data:
    """The split and the two image datasets of a run."""

    records: list[Record]
    assignment: list[str]
    train_idx: list[int]
    labels: np.ndarray
    train_set: Dataset[tuple[torch.Tensor, torch.Tensor]]
    val_set: Dataset[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class _Model:
    """The network, its (possibly DDP-wrapped) training view, optimiser and scheduler."""

    net: nn.Module
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.ReduceLROnPlateau
    pos_weight: torch.Tensor | None
    init_note: str


@dataclass
class _Progress:
    """The state a checkpoint carries across epochs (and across a resume)."""

    start_epoch: int = 0
    best_auroc: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)


def fit(
    cfg: TrainConfig,
    *,
    resume: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    export: bool = True,
) -> FitResult:
    """Train a CheXNet model from a recipe.

    Writes to ``output.run_dir``: ``last.pt`` (full state after every epoch, for
    exact resume), ``best.pt`` (model with the best validation mean AUROC),
    ``log.csv`` (one row per epoch) and ``config.json``.  When ``output.export_dir``
    is set and ``export`` is true, the best model is exported as an fp16 bundle with
    its model card (:func:`chexnet_dicom.train.export.export_bundle`).

    Parameters
    ----------
    cfg
        The recipe.
    resume
        A ``last.pt`` checkpoint to continue from.
    progress
        Show tqdm progress bars (rank 0).
    on_epoch
        Called with each epoch's log row (rank 0).
    export
        Export the bundle at the end (rank 0).

    Returns
    -------
    FitResult
    """
    run = _start_run(cfg, progress)
    data = _load_data(run)
    tcfg = cfg.train
    torch.manual_seed(tcfg.seed)
    random.seed(tcfg.seed)
    m = _build_model(run, data)
    state = _resume(run, m, resume) if resume is not None else _Progress()
    history = state.history

    budget = tcfg.max_minutes * 60.0
    longest_epoch = 0.0
    stopped = False
    for epoch in range(state.start_epoch, tcfg.epochs):
        elapsed = time.monotonic() - run.started
        if budget > 0 and epoch > state.start_epoch and elapsed + 1.1 * longest_epoch > budget:
            stopped = True
            break
        t0 = time.monotonic()
        train_loss = _train_epoch(run, data, m, epoch)
        val_loss, mean_auc, aucs = _validate(run, data, m)
        m.sched.step(val_loss)
        epoch_s = time.monotonic() - t0
        longest_epoch = max(longest_epoch, epoch_s)
        row: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_mean_auroc": mean_auc,
            "lr": m.opt.param_groups[0]["lr"],
            "epoch_seconds": epoch_s,
            "elapsed_minutes": (time.monotonic() - run.started) / 60.0,
            **{f"auroc_{n}": a for n, a in zip(LABELS, aucs, strict=True)},
        }
        history.append(row)
        improved = bool(np.isfinite(mean_auc) and mean_auc > state.best_auroc)
        if improved:
            state.best_auroc, state.best_epoch = mean_auc, epoch + 1
        if run.info.is_main:
            _save_epoch(run, m, state, epoch + 1, mean_auc if improved else None)
            if on_epoch is not None:
                on_epoch(row)
        ddp.barrier(run.info)
    result = FitResult(run.run_dir, len(history), state.best_epoch, state.best_auroc, stopped, history)
    if run.info.is_main and export and cfg.output.export_dir and state.best_epoch > 0:
        result.card_path = _export(run, data, m.init_note, state, stopped)
    ddp.cleanup(run.info)
    return result


def _start_run(cfg: TrainConfig, progress: bool) -> _Run:
    """Choose the device and its settings, join the process group, write ``config.json``."""
    info = ddp.dist_info()
    tcfg = cfg.train
    device = resolve_device(tcfg.device)
    if device.type == "cuda" and info.distributed:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)
    if tcfg.deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True
    ddp.init_distributed(info, device)
    bf16, channels_last = _precision(tcfg, device)
    run_dir = Path(cfg.output.run_dir)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    scale = 1.0 / (255.0 if cfg.data.cache_dtype == "uint8" else 65535.0)
    return _Run(cfg, info, device, bf16, channels_last, scale, run_dir, time.monotonic(), progress)


def _load_data(run: _Run) -> _Data:
    """Read the dataset and split, and serve the images from the cache (built by rank 0) or decoded."""
    from tqdm import tqdm

    cfg, info = run.cfg, run.info
    records, assignment = load_dataset(cfg.data)
    train_idx = [i for i, s in enumerate(assignment) if s == "train"]
    val_idx = [i for i, s in enumerate(assignment) if s == "validation"]
    if len(train_idx) < 2 or len(val_idx) < 2:
        raise ConfigError("the split leaves fewer than 2 training or validation images")
    labels = np.stack([r.labels for r in records])
    size, dtype = cfg.preprocessing.resize, cfg.data.cache_dtype
    train_set: Dataset[tuple[torch.Tensor, torch.Tensor]]
    val_set: Dataset[tuple[torch.Tensor, torch.Tensor]]
    if cfg.data.cache:
        cache_dir = Path(cfg.data.cache_dir) / f"{cfg.data.format}-{size}-{dtype}"
        used = [records[i] for i in sorted(train_idx + val_idx)]
        if info.is_main:
            bar = tqdm(total=len(used), desc="cache", disable=not run.progress, mininterval=5)
            build_cache(
                used, cache_dir, size=size, dtype=dtype, workers=cfg.data.cache_workers, progress=bar.update
            )
            bar.close()
        ddp.barrier(info)
        cache = ImageCache(cache_dir)
        train_set = CachedImages(cache, cache.rows([records[i].key for i in train_idx]), labels[train_idx])
        val_set = CachedImages(cache, cache.rows([records[i].key for i in val_idx]), labels[val_idx])
    else:
        train_set = DecodedImages([records[i] for i in train_idx], size, dtype)
        val_set = DecodedImages([records[i] for i in val_idx], size, dtype)
    return _Data(records, assignment, train_idx, labels, train_set, val_set)


def _build_model(run: _Run, data: _Data) -> _Model:
    """DenseNet-121 (initialised as the recipe says) on the device, Adam and ReduceLROnPlateau."""
    tcfg, device = run.cfg.train, run.device
    net = build_network()
    init_note = _init_weights(net, tcfg.init_weights) if tcfg.init_weights else "random (from scratch)"
    net.to(device)
    if run.channels_last:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model: nn.Module = net
    if run.info.distributed:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    betas = (float(tcfg.betas[0]), float(tcfg.betas[1]))
    opt = torch.optim.Adam(net.parameters(), lr=tcfg.lr, betas=betas, weight_decay=tcfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=tcfg.plateau_factor, patience=tcfg.plateau_patience, min_lr=tcfg.min_lr
    )
    pw = pos_weights(data.labels[data.train_idx], tcfg.class_weights)
    return _Model(net, model, opt, sched, pw.to(device) if pw is not None else None, init_note)


def _resume(run: _Run, m: _Model, resume: str | os.PathLike[str]) -> _Progress:
    """Load a ``last.pt``: model, optimiser, scheduler, RNG state and the history so far."""
    ck = torch.load(resume, map_location="cpu", weights_only=True)
    if int(ck.get("world", 1)) != run.info.world:
        raise ConfigError(
            f"checkpoint was written by {ck.get('world')} processes, this run has {run.info.world}"
        )
    m.net.load_state_dict(ck["model"])
    m.opt.load_state_dict(ck["optimizer"])
    m.sched.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rng"])
    state = _Progress(
        start_epoch=int(ck["epoch"]),
        best_auroc=float(ck["best_auroc"]),
        best_epoch=int(ck["best_epoch"]),
        history=[dict(h) for h in json.loads(ck["history"])],
    )
    log.info("resumed from epoch %d", state.start_epoch)
    return state


def _train_epoch(run: _Run, data: _Data, m: _Model, epoch: int) -> float:
    """One pass over this rank's share of the seeded epoch order; returns the mean training loss."""
    from tqdm import tqdm

    cfg, info, device = run.cfg, run.info, run.device
    tcfg = cfg.train
    m.model.train()
    steps = epoch_schedule(len(data.train_idx), epoch, tcfg.seed, tcfg.batch_size, info.world)
    batches = [s[info.rank] for s in steps]
    loader = DataLoader(
        data.train_set,
        batch_sampler=[b.tolist() for b in batches],
        num_workers=tcfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    total, count = 0.0, 0
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{tcfg.epochs}",
        disable=not (run.progress and info.is_main),
        mininterval=5,
    )
    for step, (x, y) in enumerate(bar):
        gen = step_generator(tcfg.seed, epoch, step, info.rank)
        img = x.to(device, non_blocking=True).float() * run.scale
        img = augment_batch(img, cfg.augment, gen)
        inp = to_model_input(img, cfg.preprocessing.input_size)
        if run.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        target = y.to(device, non_blocking=True)
        m.opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.bf16):
            out = m.model(inp)
        loss = F.binary_cross_entropy_with_logits(out.float(), target, pos_weight=m.pos_weight)
        loss.backward()
        m.opt.step()
        total += float(loss.detach()) * len(y)
        count += len(y)
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    bar.close()
    return total / max(count, 1)


def _validate(run: _Run, data: _Data, m: _Model) -> tuple[float, float, list[float]]:
    """Validation loss, mean AUROC and per-class AUROCs: computed on rank 0, broadcast to all
    ranks so that the schedulers agree."""
    if run.info.is_main:
        logits, yv = predict_cached(
            m.net,
            data.val_set,
            input_size=run.cfg.preprocessing.input_size,
            scale=run.scale,
            device=run.device,
            batch_size=run.cfg.train.eval_batch_size,
            bf16=run.bf16,
            channels_last=run.channels_last,
        )
        val_loss = float(
            F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(yv)).item()
        )
        aucs = roc_aucs(yv, 1.0 / (1.0 + np.exp(-logits)))
        finite = [a for a in aucs if np.isfinite(a)]
        mean_auc = float(np.mean(finite)) if finite else float("nan")
    else:
        val_loss, mean_auc, aucs = 0.0, 0.0, [0.0] * NUM_CLASSES
    val_loss, mean_auc, *aucs = ddp.broadcast_floats([val_loss, mean_auc, *aucs], run.info, run.device)
    return val_loss, mean_auc, aucs


def _save_epoch(run: _Run, m: _Model, state: _Progress, done: int, best: float | None) -> None:
    """Rank 0's writes after an epoch: ``best.pt`` when it improved (``best`` is its AUROC),
    ``last.pt`` and ``log.csv``."""
    if best is not None:
        atomic_save(
            {"model": m.net.state_dict(), "epoch": done, "val_mean_auroc": best}, run.run_dir / "best.pt"
        )
    atomic_save(
        {
            "model": m.net.state_dict(),
            "optimizer": m.opt.state_dict(),
            "scheduler": m.sched.state_dict(),
            "rng": rng_state(),
            "epoch": done,
            "best_auroc": state.best_auroc,
            "best_epoch": state.best_epoch,
            "history": json.dumps(state.history),
            "config": json.dumps(run.cfg.to_dict()),
            "world": run.info.world,
        },
        run.run_dir / "last.pt",
    )
    write_log(run.run_dir / "log.csv", state.history)


def _export(run: _Run, data: _Data, init_note: str, state: _Progress, stopped: bool) -> Path:
    """Export ``best.pt`` as the fp16 bundle with its model card."""
    from chexnet_dicom.train.export import export_bundle

    best = torch.load(run.run_dir / "best.pt", map_location="cpu", weights_only=True)
    final = build_network()
    final.load_state_dict(best["model"])
    return export_bundle(
        final,
        run.cfg,
        data.records,
        data.assignment,
        history=state.history,
        best_epoch=state.best_epoch,
        init_note=init_note,
        stopped_by_budget=stopped,
        train_minutes=(time.monotonic() - run.started) / 60.0,
        device=run.device,
    )
