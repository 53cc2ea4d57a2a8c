"""The predictor interface every backend shares.

Two backends compute the same network (:mod:`chexnet_dicom.model.backends` chooses
one):

* :class:`~chexnet_dicom.model.onnx_backend.OrtPredictor`: the bundle exported once to
  ONNX (verified against PyTorch, cached by weights hash) and run by ONNX Runtime in
  float32 on the CPU;
* :class:`~chexnet_dicom.model.torch_backend.TorchPredictor`: eager or
  ``torch.compile`` PyTorch, bf16 + channels_last on GPUs; the reference.

Every backend subclasses :class:`PredictorBase`, which owns what must not differ between
them: input checks, batching, the NaN/Inf guard, the sigmoid, TenCrop averaging, CAM
scaling and the :class:`~chexnet_dicom.model.prediction.Prediction` records.  This module
imports neither torch nor ONNX Runtime.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chexnet_dicom.errors import ConfigError, InferenceError
from chexnet_dicom.model.card import ModelCard
from chexnet_dicom.model.ood import METHODS, NEEDS_FEATURES, OodReference, load_reference
from chexnet_dicom.model.prediction import Prediction

__all__ = [
    "PredictorBase",
    "RuntimeChoice",
    "available_cpus",
    "cpu_flags",
    "cuda_may_be_present",
    "onnxruntime_available",
    "reference_for",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeChoice:
    """How the predictor runs.

    Attributes
    ----------
    device
        ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``).
    precision
        ``"fp32"`` or ``"bf16"`` (feature extractor; the head is always float32).
    channels_last
        NHWC memory format for the convolutions (torch backend).
    reason
        Why this choice was made (printed by ``chexdcm infer``).
    backend
        ``"torch"`` or ``"onnxruntime"``.
    """

    device: str
    precision: str
    channels_last: bool
    reason: str
    backend: str = "torch"


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def cuda_may_be_present() -> bool:
    """False when no NVIDIA driver is loaded, so CUDA cannot be available (no torch import)."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def cpu_flags() -> set[str]:
    """The CPU flags the kernel lists (``/proc/cpuinfo``, no torch import); empty when unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


def onnxruntime_available() -> bool:
    """True when ``onnxruntime`` (to run) and ``onnx`` (to export) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))  # = 1 / (1 + exp(-x)), no overflow


def reference_for(card: ModelCard, card_dir: str | os.PathLike[str]) -> OodReference | None:
    """The card's out-of-distribution statistics (sha256-checked), or None when it has none.

    Raises
    ------
    WeightsError
        The card names statistics that are missing or altered.
    """
    entry = getattr(card, "ood", None)
    if not entry:
        return None
    return load_reference(card_dir, entry)


class PredictorBase:
    """What every backend shares: checks, batching, guards and the result records.

    Subclasses set :attr:`runtime` and implement :meth:`_run` (one batch of crops in,
    float32 logits and raw CAMs out).

    Parameters
    ----------
    card
        The model card (thresholds, preprocessing, ``cam_scale``, labels).
    runtime
        How the subclass runs.
    threads
        CPU threads in use.
    batch_size
        Images per forward pass in :meth:`predict_many` (TenCrop: crops / 10).
    tta
        Override the card's test-time augmentation (``"none"`` or ``"tencrop"``);
        inputs must have been prepared the same way.
    ood_reference
        In-distribution statistics (:func:`reference_for`); None: no OOD score.
    ood_method
        ``"card"`` (the reference's default) or one of
        :data:`chexnet_dicom.model.ood.METHODS`.
    """

    def __init__(
        self,
        card: ModelCard,
        runtime: RuntimeChoice,
        *,
        threads: int,
        batch_size: int = 8,
        tta: str | None = None,
        ood_reference: OodReference | None = None,
        ood_method: str = "card",
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not math.isfinite(card.cam_scale) or card.cam_scale <= 0:
            raise ConfigError(f"model card cam_scale must be a positive number, got {card.cam_scale!r}")
        self.card = card
        self.runtime = runtime
        self.threads = int(threads)
        self.batch_size = int(batch_size)
        self.tta: str = card.preprocessing.tta if tta is None else tta
        if self.tta not in ("none", "tencrop"):
            raise ConfigError(f"tta must be none or tencrop, not {self.tta!r}")
        self._lock = threading.Lock()
        if ood_method != "card" and ood_method not in METHODS:
            raise ConfigError(f"ood method must be card or one of {', '.join(METHODS)}, not {ood_method!r}")
        self.ood_reference = ood_reference
        self.ood_method = (
            (ood_reference.default_method if ood_reference else "") if ood_method == "card" else ood_method
        )
        self._thresholds = np.array([card.threshold(name) for name in card.labels], dtype=np.float64)

    # ------------------------------------------------------------------ properties
    @property
    def precision(self) -> str:
        """``"fp32"`` or ``"bf16"``."""
        return self.runtime.precision

    @property
    def device(self) -> str:
        """Device name."""
        return self.runtime.device

    @property
    def backend(self) -> str:
        """``"torch"`` or ``"onnxruntime"``."""
        return self.runtime.backend

    @property
    def head_bias(self) -> np.ndarray:
        """(14,) float64 bias of the linear head (for :func:`~chexnet_dicom.model.cam.llr_maps`)."""
        raise NotImplementedError

    @property
    def crops_per_image(self) -> int:
        """1, or 10 with TenCrop."""
        return 10 if self.tta == "tencrop" else 1

    # ------------------------------------------------------------------ inference
    def _run(
        self, x: np.ndarray, *, cams: bool
    ) -> tuple[np.ndarray, np.ndarray | None] | tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Logits (N, 14), raw CAMs (N, 14, h, w) and pooled features (N, D) for a (N, 3, S, S) batch.

        Float32.  The features are the global average of the rectified last feature map
        (the linear head's input), None when the backend cannot give them; a backend
        returning only (logits, CAMs) gives no features.
        """
        raise NotImplementedError

    def _ood(
        self, features: np.ndarray | None, logits: np.ndarray
    ) -> tuple[np.ndarray | None, float | None, str]:
        """Scores of a batch (one per image), the threshold, and why there are none."""
        ref = self.ood_reference
        if ref is None:
            return (
                None,
                None,
                (
                    "the model card has no out-of-distribution reference statistics "
                    "(chexdcm weights calibrate-ood adds them)"
                ),
            )
        method = self.ood_method
        if method in NEEDS_FEATURES and features is None:
            return (
                None,
                None,
                (f"the {self.backend} graph gives no pooled features, which the {method} score needs"),
            )
        threshold = ref.thresholds.get(method)
        if threshold is None:
            return None, None, f"the reference statistics have no threshold for {method}"
        return ref.scores(method, features, logits), float(threshold), ""

    def _check_inputs(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        s = self.card.preprocessing.input_size
        want = (10, 3, s, s) if self.tta == "tencrop" else (3, s, s)
        out = []
        for i, a in enumerate(arrays):
            arr = np.asarray(a, dtype=np.float32)
            if arr.shape != want:
                raise InferenceError(
                    f"model input {i} has shape {arr.shape}, expected {want} "
                    f"(prepare it with prepare_model_input and this card's preprocessing, tta={self.tta!r})"
                )
            if not np.isfinite(arr).all():
                raise InferenceError(
                    f"model input {i} contains NaN or Inf: the image could not be prepared; "
                    "check the pixel data and its rendering provenance"
                )
            out.append(arr)
        return out

    def predict(self, model_input: np.ndarray, *, cams: bool = True) -> Prediction:
        """Predict one image.

        Parameters
        ----------
        model_input
            ``(3, S, S)`` or, with TenCrop, ``(10, 3, S, S)`` float32.
        cams
            Also return the 14 class activation maps (from the same pass).

        Returns
        -------
        Prediction
            Probabilities, the card's thresholds and (optionally) CAMs in ``cam_scale``
            units on the crop's feature grid: (14, h, w), or (10, 14, h, w) with TenCrop.
        """
        return self.predict_many([model_input], cams=cams)[0]

    def predict_many(self, model_inputs: Sequence[np.ndarray], *, cams: bool = True) -> list[Prediction]:
        """Predict several images, ``batch_size`` at a time.

        Raises
        ------
        InferenceError
            Wrong input shape, non-finite input, or non-finite model output.
        """
        arrays = self._check_inputs(model_inputs)
        if not arrays:
            return []
        k = self.crops_per_image
        results: list[Prediction] = []
        with self._lock:
            for start in range(0, len(arrays), self.batch_size):
                chunk = arrays[start : start + self.batch_size]
                x = np.ascontiguousarray(np.stack(chunk).reshape(-1, *chunk[0].shape[-3:]))
                out = self._run(x, cams=cams)
                logits, maps = out[0], out[1]
                feats = out[2] if len(out) > 2 else None
                if not np.isfinite(logits).all():
                    raise InferenceError(
                        f"the model produced NaN/Inf logits ({self.precision} on {self.device}, "
                        f"{self.backend}); the weights may be corrupt: re-fetch them, or retry with fp32"
                    )
                probs = _sigmoid(logits).reshape(len(chunk), k, -1).mean(axis=1)
                mean_logits = np.asarray(logits, dtype=np.float64).reshape(len(chunk), k, -1).mean(axis=1)
                mean_feats = None
                if feats is not None:
                    mean_feats = np.asarray(feats, dtype=np.float32).reshape(len(chunk), k, -1).mean(axis=1)
                    if not np.isfinite(mean_feats).all():
                        raise InferenceError("the model produced NaN/Inf features; check the weights")
                scores, ood_thr, ood_note = self._ood(mean_feats, mean_logits)
                cam_np = None
                if maps is not None:
                    cam_np = (np.asarray(maps, dtype=np.float32) / float(self.card.cam_scale)).astype(
                        np.float32, copy=False
                    )
                    if not np.isfinite(cam_np).all():
                        raise InferenceError("the model produced NaN/Inf activation maps; check the weights")
                    cam_np = cam_np.reshape(len(chunk), k, *cam_np.shape[1:])
                for i in range(len(chunk)):
                    img_cams = None
                    if cam_np is not None:
                        img_cams = cam_np[i, 0] if k == 1 else cam_np[i]
                    results.append(
                        Prediction(
                            probabilities=probs[i].astype(np.float64),
                            thresholds=self._thresholds.copy(),
                            model_name=self.card.name,
                            model_version=self.card.version,
                            weights_sha256=self.card.weights_sha256,
                            cams=img_cams,
                            precision=self.precision,
                            device=self.device,
                            backend=self.backend,
                            labels=tuple(self.card.labels),
                            logits=mean_logits[i],
                            features=None if mean_feats is None else mean_feats[i],
                            ood_score=None if scores is None else float(scores[i]),
                            ood_threshold=ood_thr if scores is not None else None,
                            ood_method=self.ood_method if scores is not None else "",
                            ood_note=ood_note,
                        )
                    )
        return results
