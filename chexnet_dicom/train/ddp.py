"""Distributed data parallel helpers for ``torchrun``.

``torchrun --nproc_per_node N -m chexnet_dicom train --config recipe.toml`` starts N
processes; each reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment
(:func:`dist_info`), joins the process group (NCCL on GPU, gloo on CPU) and trains
on its own share of every global batch (:func:`chexnet_dicom.train.augment.epoch_schedule`).

What DDP computes, exactly: every rank runs forward and backward on its own batch;
the gradients are all-reduced to their *mean* before the optimiser step, so all ranks
hold the same parameters.  BatchNorm normalises with the statistics of each rank's
own batch, and the *running* statistics of rank 0 are broadcast to all ranks at the
start of every forward (``broadcast_buffers=True``), so the model that is validated
and saved carries rank 0's running statistics.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "barrier", "broadcast_floats", "cleanup", "dist_info", "init_distributed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Process coordinates: ``rank`` of ``world`` processes, ``local_rank`` on this host."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that validates, logs and saves)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world > 1


def dist_info() -> DistInfo:
    """Read the ``torchrun`` environment (single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistInfo(rank, world, local)


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group when ``info.world > 1`` (NCCL on CUDA, gloo otherwise)."""
    if not info.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world)
    log.info("joined %s process group as rank %d of %d", backend, info.rank, info.world)


def barrier(info: DistInfo) -> None:
    """Wait for all ranks (no-op in a single process)."""
    if info.distributed and dist.is_initialized():
        dist.barrier()


def broadcast_floats(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Return rank 0's ``values`` on every rank (same length on all ranks)."""
    if not (info.distributed and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return [float(v) for v in t.cpu()]


def cleanup(info: DistInfo) -> None:
    """Leave the process group."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
