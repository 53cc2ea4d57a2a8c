"""PyTorch backend (:class:`TorchPredictor`): load a model once, then batch images on CPU or GPU.

This is the reference implementation and the GPU path.  On a CPU,
:func:`chexnet_dicom.model.backends.load_predictor` prefers the ONNX Runtime backend
(:mod:`chexnet_dicom.model.onnx_backend`, float32, several times faster at batch 1);
both share :class:`~chexnet_dicom.model.predictor.PredictorBase`, so checks, guards and
results are the same code.

Precision is chosen per device (``precision="auto"``):

* CUDA: bfloat16 (when the GPU supports it) + channels_last;
* CPU with native bfloat16 instructions (AVX512-BF16 or AMX, read from the CPU flags
  and confirmed by oneDNN): bfloat16 + channels_last;
* any other CPU: float32 + channels_last.

Only the convolutional feature extractor runs in reduced precision: the head (ReLU,
pooling, the 14-way linear layer, CAMs and the sigmoid) always runs in float32 on the
float32 weights.  The accuracy cost of the bf16 path is bounded by a test (maximum
probability difference against float32 <= 0.005) and measured by ``benchmarks/infer.py``.

Threads: :func:`tune_threads` uses the CPUs this process may use (affinity mask and
cgroup quota), not every core of the host.  On a machine whose cores are shared with
other busy processes, OpenMP threads that spin while waiting make each forward pass
10-60x slower at random (measured on the 2-core development box: 4 s instead of 0.05 s
per image); set ``OMP_WAIT_POLICY=PASSIVE`` *before* torch is imported (``chexdcm infer``
does).

The maps of all 14 findings come from the same forward pass as the probabilities
(see :mod:`chexnet_dicom.model.cam`).  Non-finite inputs or outputs raise
:class:`~chexnet_dicom.errors.InferenceError`: a NaN never becomes a probability.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from chexnet_dicom.errors import ConfigError
from chexnet_dicom.model.cam import class_activation_maps
from chexnet_dicom.model.card import ModelCard, load_bundle
from chexnet_dicom.model.network import head
from chexnet_dicom.model.ood import OodReference
from chexnet_dicom.model.predictor import (
    PredictorBase,
    RuntimeChoice,
    available_cpus,
    cpu_flags,
    reference_for,
)

__all__ = [
    "TorchPredictor",
    "choose_runtime",
    "cpu_has_native_bf16",
    "tune_threads",
]

log = logging.getLogger(__name__)

DeviceName = Literal["auto", "cpu", "cuda"]
PrecisionName = Literal["auto", "fp32", "bf16"]
OptimiseName = Literal["none", "compile"]

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16).

    Both torch's view (its CPU capability and oneDNN's bf16 support) and the kernel's
    CPU flags must agree: oneDNN also "supports" bf16 on plain AVX512 by emulation,
    which is slower than float32.
    """
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # pragma: no cover - very old torch
        capability = ""
    if not capability.startswith(("AVX512", "AMX")):
        return False
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover
        onednn = False
    return onednn and any(flag in cpu_flags() for flag in _BF16_FLAGS)


def tune_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    Parameters
    ----------
    threads
        Explicit count; None uses :func:`available_cpus` (torch's default counts every
        core of the host, which over-subscribes a container or a pinned process).

    Returns
    -------
    int
        The thread count now in effect.
    """
    wanted = available_cpus() if threads is None else int(threads)
    if wanted < 1:
        raise ConfigError(f"thread count must be >= 1, got {wanted}")
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return torch.get_num_threads()


def choose_runtime(
    device: DeviceName | str = "auto", precision: PrecisionName | str = "auto"
) -> RuntimeChoice:
    """Pick device and precision.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    precision
        ``"auto"`` (see the module docstring), ``"fp32"`` or ``"bf16"``.

    Raises
    ------
    ConfigError
        Unknown names, or CUDA requested without a CUDA device.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not str(device).startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, not {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was requested but this torch build sees no CUDA device; use --device cpu"
        )
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    if precision != "auto":
        return RuntimeChoice(str(device), str(precision), True, f"{precision} requested")
    if str(device).startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return RuntimeChoice(str(device), "bf16", True, "GPU with bfloat16 support")
        return RuntimeChoice(str(device), "fp32", True, "GPU without bfloat16 support")
    if cpu_has_native_bf16():
        return RuntimeChoice("cpu", "bf16", True, "CPU with native bfloat16 (AVX512-BF16/AMX)")
    return RuntimeChoice("cpu", "fp32", True, "CPU without native bfloat16")


class TorchPredictor(PredictorBase):
    """CheXNet inference: probabilities and class activation maps for model inputs.

    Build it once per process (:meth:`from_card`), then call :meth:`predict` or
    :meth:`predict_many` with arrays from
    :func:`chexnet_dicom.transforms.prepare_model_input` (``(3, S, S)``, or
    ``(10, 3, S, S)`` with TenCrop).  Thread-safe: calls are serialised.

    Parameters
    ----------
    net
        A CheXNet network (``features`` + ``class_layers.out``) with loaded weights.
        It is copied, never modified.
    card
        Its model card (thresholds, preprocessing, ``cam_scale``).
    device, precision
        See :func:`choose_runtime`.
    optimise
        ``"none"`` (eager, default) or ``"compile"`` (:func:`torch.compile` of the
        feature extractor: slow first call, worth it for long-running processes).
    threads
        CPU threads (None: :func:`available_cpus`).
    batch_size
        Images per forward pass in :meth:`predict_many` (TenCrop: crops / 10).
    tta
        Override the card's test-time augmentation (``"none"`` or ``"tencrop"``);
        inputs must have been prepared the same way.
    """

    def __init__(
        self,
        net: nn.Module,
        card: ModelCard,
        *,
        device: DeviceName | str = "auto",
        precision: PrecisionName | str = "auto",
        optimise: OptimiseName = "none",
        threads: int | None = None,
        batch_size: int = 8,
        tta: Literal["none", "tencrop"] | None = None,
        ood_reference: OodReference | None = None,
        ood_method: str = "card",
        _copy: bool = True,
    ) -> None:
        runtime = choose_runtime(device, precision)
        threads_now = tune_threads(threads) if runtime.device == "cpu" else torch.get_num_threads()
        super().__init__(
            card,
            runtime,
            threads=threads_now,
            batch_size=batch_size,
            tta=tta,
            ood_reference=ood_reference,
            ood_method=ood_method,
        )
        self._device = torch.device(self.runtime.device)
        self._dtype = torch.bfloat16 if self.runtime.precision == "bf16" else torch.float32
        self._memory_format = torch.channels_last if self.runtime.channels_last else torch.contiguous_format

        features = getattr(net, "features", None)
        if not isinstance(features, nn.Module):
            raise ConfigError("the network has no `features` module: not a CheXNet DenseNet-121")
        linear = head(net)
        if linear.out_features != len(card.labels):
            raise ConfigError(f"network has {linear.out_features} outputs, the card lists {len(card.labels)}")
        feats = copy.deepcopy(features) if _copy else features
        feats = feats.eval().requires_grad_(False)
        feats = feats.to(device=self._device, dtype=self._dtype)
        self._features: nn.Module = feats.to(memory_format=self._memory_format)  # type: ignore[call-overload]
        self._weight = linear.weight.detach().to(self._device, torch.float32).clone()
        self._bias = linear.bias.detach().to(self._device, torch.float32).clone()
        self.optimise = optimise
        self._forward_features: nn.Module = self._features
        if optimise == "compile":
            self._forward_features = torch.compile(self._features, dynamic=False)  # type: ignore[assignment]
        elif optimise != "none":
            raise ConfigError(f"optimise must be none or compile, not {optimise!r}")
        log.info(
            "predictor ready: device=%s precision=%s (%s) threads=%d optimise=%s tta=%s",
            self.runtime.device,
            self.runtime.precision,
            self.runtime.reason,
            self.threads,
            optimise,
            self.tta,
        )

    @classmethod
    def from_card(
        cls, card_path: str | os.PathLike[str], *, verify: bool = True, **kwargs: object
    ) -> TorchPredictor:
        """Load a bundle (:func:`chexnet_dicom.model.card.load_bundle`) and build a predictor.

        Parameters
        ----------
        card_path
            ``*.card.json`` file.
        verify
            Check the weights' sha256 against the card.
        **kwargs
            Passed to :class:`TorchPredictor`.
        """
        net, card = load_bundle(Path(card_path), verify=verify)
        kwargs.setdefault("ood_reference", reference_for(card, Path(card_path).parent))
        return cls(net, card, _copy=False, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ properties
    @property
    def head_bias(self) -> np.ndarray:
        """(14,) float64 bias of the linear head (for :func:`~chexnet_dicom.model.cam.llr_maps`)."""
        return self._bias.detach().cpu().double().numpy()

    # ------------------------------------------------------------------ inference
    def forward_all(
        self, x: torch.Tensor, *, cams: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Logits (N, 14), CAMs (N, 14, h, w) and pooled features (N, 1024), float32.

        One pass of the feature extractor: the pooled features (the global average of
        the rectified last feature map) are the linear head's input, and the logits
        are the CAMs' spatial mean plus the bias (:func:`~chexnet_dicom.model.cam.logits_and_cams`).
        """
        x = x.to(self._device, self._dtype, non_blocking=True).contiguous(memory_format=self._memory_format)
        with torch.inference_mode():
            feats = self._forward_features(x)
            pooled = torch.relu(feats.float()).mean(dim=(2, 3))
            if cams:
                maps = class_activation_maps(feats, self._weight)
                return maps.mean(dim=(2, 3)) + self._bias, maps, pooled
            return torch.nn.functional.linear(pooled, self._weight, self._bias), None, pooled

    def forward(self, x: torch.Tensor, *, cams: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (N, 14) and CAMs (N, 14, h, w) in float32 for a batch of crops.

        The CAMs are raw (logit units per location); :meth:`predict` divides them by
        the card's ``cam_scale``.  With ``cams=False`` the head pools first (the plain
        CheXNet head) and no maps are made.
        """
        logits, maps, _ = self.forward_all(x, cams=cams)
        return logits, maps

    def _run(self, x: np.ndarray, *, cams: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        logits, maps, pooled = self.forward_all(torch.from_numpy(x), cams=cams)
        return (
            logits.float().cpu().numpy(),
            None if maps is None else maps.float().cpu().numpy(),
            pooled.float().cpu().numpy(),
        )
