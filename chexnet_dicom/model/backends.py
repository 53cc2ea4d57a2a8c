"""Choosing how the model runs: :func:`load_predictor` picks a backend for this machine.

* ``"onnxruntime"`` (:mod:`chexnet_dicom.model.onnx_backend`): the CPU default. On
  DenseNet-121 it is several times faster than eager PyTorch at batch 1
  (``benchmarks/infer.py``), its outputs equal PyTorch float32 to about 1e-5, and a warm
  process needs neither torch nor MONAI.
* ``"torch"`` (:mod:`chexnet_dicom.model.torch_backend`): the reference, the GPU path
  (bf16 + channels_last), bf16 on CPUs and ``torch.compile``; the fallback when ONNX
  Runtime is not installed or its export fails.

This module never imports torch unless the torch backend is chosen or a GPU may be
present.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

from chexnet_dicom.config import RuntimeConfig
from chexnet_dicom.errors import ConfigError, InferenceError, ModelError, WeightsError
from chexnet_dicom.model.predictor import PredictorBase, cuda_may_be_present, onnxruntime_available

__all__ = ["BACKENDS", "load_predictor", "predictor_for"]

log = logging.getLogger(__name__)

BackendName = Literal["auto", "torch", "onnxruntime"]
#: Accepted ``backend`` values.
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime")


def load_predictor(
    card_path: str | os.PathLike[str],
    *,
    backend: BackendName | str = "auto",
    device: str = "auto",
    precision: str = "auto",
    optimise: str = "none",
    threads: int | None = None,
    batch_size: int = 8,
    tta: str | None = None,
    verify: bool = True,
    ood_method: str = "card",
) -> PredictorBase:
    """Load a bundle and build the predictor that suits this machine.

    ``backend="auto"`` runs the :class:`~chexnet_dicom.model.torch_backend.TorchPredictor`
    on a GPU, or whenever bf16 or ``torch.compile`` is asked for, and ONNX Runtime
    (float32) on a CPU when it is installed; the torch predictor otherwise, and also
    when the ONNX export fails (logged as a warning; corrupt weights still raise).

    Parameters
    ----------
    card_path
        ``*.card.json`` file.
    backend
        ``"auto"``, ``"torch"`` or ``"onnxruntime"``.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    precision
        ``"auto"``, ``"fp32"`` or ``"bf16"`` (bf16 needs the torch backend).
    optimise
        ``"none"`` or ``"compile"`` (torch backend).
    threads, batch_size, tta
        See :class:`PredictorBase`.
    verify
        Check the weights' sha256 against the card.
    ood_method
        ``"card"`` (the card's default out-of-distribution method) or a method of
        :data:`chexnet_dicom.model.ood.METHODS`.

    Raises
    ------
    ConfigError
        Unknown names, or a combination no backend can run.
    WeightsError
        Missing or corrupt weights.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    wants_torch = precision == "bf16" or optimise != "none" or str(device).startswith("cuda")
    if backend == "onnxruntime" and wants_torch:
        raise ConfigError(
            "the onnxruntime backend runs float32 on the CPU only; use --backend torch for "
            "cuda, bf16 or compile"
        )
    chosen_automatically = backend == "auto"
    if backend == "auto":
        if wants_torch or (device == "auto" and cuda_may_be_present() and _torch_sees_cuda()):
            backend = "torch"
        elif onnxruntime_available():
            backend = "onnxruntime"
        else:
            log.info("onnxruntime/onnx are not installed: running the torch predictor")
            backend = "torch"
    if backend == "onnxruntime":
        if precision not in ("auto", "fp32"):
            raise ConfigError(f"precision must be auto, fp32 or bf16, not {precision!r}")
        if device not in ("auto", "cpu"):
            raise ConfigError(f"device must be auto, cpu or cuda, not {device!r}")
        if not onnxruntime_available():
            raise ConfigError(
                "--backend onnxruntime needs the onnxruntime and onnx packages; use --backend torch"
            )
        from chexnet_dicom.model.onnx_backend import OrtPredictor

        try:
            return OrtPredictor.from_card(
                card_path,
                threads=threads,
                batch_size=batch_size,
                tta=tta,
                verify=verify,
                ood_method=ood_method,
            )
        except (WeightsError, InferenceError):
            raise  # the weights or the inputs are wrong: another backend would not help
        except ModelError as exc:
            if not chosen_automatically:
                raise
            log.warning("ONNX Runtime backend unavailable (%s); running the torch predictor", exc)
    from chexnet_dicom.model.torch_backend import TorchPredictor

    return TorchPredictor.from_card(
        card_path,
        verify=verify,
        device=device,
        precision=precision,
        optimise=optimise,
        threads=threads,
        batch_size=batch_size,
        tta=tta,
        ood_method=ood_method,
    )


def predictor_for(card_path: str | os.PathLike[str], runtime: RuntimeConfig) -> PredictorBase:
    """:func:`load_predictor` with the settings of a ``[runtime]`` table (what every front door runs).

    Raises
    ------
    ConfigError, WeightsError
        As :func:`load_predictor`.
    """
    return load_predictor(
        card_path,
        backend=runtime.backend,
        device=runtime.device,
        precision=runtime.precision,
        threads=runtime.threads or None,
        batch_size=runtime.batch_size,
        tta=None if runtime.tta == "card" else runtime.tta,
        ood_method=runtime.ood_method,
    )


def _torch_sees_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
