"""Deterministic epoch order and training-time augmentation.

The order of training images in epoch ``e`` and every augmentation draw of step ``s``
on rank ``r`` come from generators seeded by ``(seed, e)`` (:func:`epoch_schedule`)
and ``(seed, e, s, r)`` (:func:`step_generator`), so a run resumed from the checkpoint
of epoch ``e`` repeats exactly what an uninterrupted run does, and ``N`` DDP ranks
share every global batch the same way on every run.

:func:`augment_batch` follows CheXNet (random horizontal flip) plus an optional small
affine warp and brightness/contrast jitter (:class:`~chexnet_dicom.config.AugmentConfig`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from chexnet_dicom.config import AugmentConfig

__all__ = ["augment_batch", "epoch_schedule", "step_generator"]


def epoch_schedule(n: int, epoch: int, seed: int, batch_size: int, world: int = 1) -> list[list[np.ndarray]]:
    """Indices of every step of an epoch, per rank.

    A permutation of ``range(n)`` seeded by ``(seed, epoch)`` is cut into global
    batches of ``batch_size * world``; each global batch is split into ``world``
    consecutive per-rank batches.  A final short global batch is split evenly and
    dropped only if a rank would get fewer than 2 images (BatchNorm needs 2).

    Parameters
    ----------
    n
        Number of training images.
    epoch
        Epoch index (0-based).
    seed
        The recipe's ``train.seed``.
    batch_size
        Per-rank batch size.
    world
        Number of processes.

    Returns
    -------
    list of list of numpy.ndarray
        ``steps[s][r]`` = indices for rank ``r`` at step ``s``.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    steps = []
    glob = batch_size * world
    for start in range(0, n, glob):
        parts = np.array_split(perm[start : start + glob], world)
        if min(len(p) for p in parts) < 2:
            continue
        steps.append(parts)
    return steps


def step_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    """CPU generator for the augmentation draws of one step on one rank.

    Parameters
    ----------
    seed, epoch, step, rank
        Where the draws belong; the generator is seeded from all four.

    Returns
    -------
    torch.Generator
        A freshly seeded CPU generator.
    """
    state = np.random.SeedSequence([seed, epoch, step, rank]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a batch of [0, 1] images (B, H, W) on its device, draws from ``gen``.

    Flip, then one affine warp (rotation, zoom, shift; bilinear, zero = air outside),
    then contrast and brightness jitter, clipped to [0, 1].

    Parameters
    ----------
    x
        (B, H, W) float images in [0, 1].
    cfg
        The recipe's ``[augment]`` section.
    gen
        CPU generator of the draws (:func:`step_generator`).

    Returns
    -------
    torch.Tensor
        The augmented batch, same shape and device as ``x``.
    """
    b = x.shape[0]
    dev = x.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen, dtype=torch.float32) * (hi - lo) + lo).to(dev)

    flip = (torch.rand(b, generator=gen) < cfg.hflip).to(dev)
    x = torch.where(flip[:, None, None], x.flip(-1), x)
    if cfg.rotate_deg > 0 or cfg.scale != (1.0, 1.0) or cfg.translate > 0:
        ang = uniform(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180.0)
        zoom = uniform(cfg.scale[0], cfg.scale[1])
        tx = uniform(-cfg.translate, cfg.translate) * 2.0
        ty = uniform(-cfg.translate, cfg.translate) * 2.0
        cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
        theta = torch.stack([torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1)
        grid = F.affine_grid(theta, [b, 1, x.shape[-2], x.shape[-1]], align_corners=False)
        x = F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    if cfg.contrast > 0 or cfg.brightness > 0:
        c = uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast)
        br = uniform(-cfg.brightness, cfg.brightness)
        mean = x.mean(dim=(-2, -1), keepdim=True)
        x = ((x - mean) * c[:, None, None] + mean + br[:, None, None]).clamp(0.0, 1.0)
    return x
