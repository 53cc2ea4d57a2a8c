"""ONNX Runtime backend: the bundle exported once, verified, cached, run in float32.

Why: eager PyTorch spends most of a batch-1 DenseNet-121 pass on per-operator overhead
(about 400 small operators, concatenations and layout changes); ONNX Runtime's CPU
graph (BatchNorm folded into the convolutions that precede it, fused activations,
blocked layouts) is several times faster on the same cores (``benchmarks/infer.py``),
stays float32, and a process that finds the exported graph in the cache never imports
torch or MONAI, which is most of ``chexdcm infer``'s start-up.

The exported graph
------------------
``input`` (N, 3, S, S) float32 -> ``logits`` (N, 14), ``cams`` (N, 14, h, w) and
``features`` (N, 1024): the feature extractor, then the CheXNet head exactly as the
torch predictor computes it (ReLU, global average pool, linear layer for the logits;
the linear layer's weights applied at every location, without bias, for the class
activation maps, see :mod:`chexnet_dicom.model.cam`; the pooled vector itself is
``features``, what the out-of-distribution score of :mod:`chexnet_dicom.model.ood`
reads).  Asking only for ``logits`` and ``features`` skips the maps.  A graph of format
1 (no ``features`` output) still runs: its predictions carry no feature-based score,
and say so.

Trust
-----
The graph is exported from the verified bundle (sha256 against the card), then run on
random inputs next to the PyTorch network it came from; it is only used, and only
cached, if every logit and map agrees within :data:`EXPORT_TOLERANCE`.  The cache entry
``$CHEXDCM_CACHE/onnx/<weights sha256>-s<input size>-v<format>.onnx`` has a JSON record
beside it with the graph's own sha256, checked on every load (a truncated or altered
file is re-exported, never run), and is written atomically.  When the cache cannot be
written the graph is exported again in memory each run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.errors import ConfigError, InferenceError, ModelError, WeightsError
from chexnet_dicom.model.card import ModelCard, sha256_file, verified_weights
from chexnet_dicom.model.ood import OodReference
from chexnet_dicom.model.predictor import PredictorBase, RuntimeChoice, available_cpus, reference_for
from chexnet_dicom.model.registry import cache_dir

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "EXPORT_TOLERANCE",
    "ONNX_FORMAT_VERSION",
    "OrtPredictor",
    "export_onnx",
    "onnx_model_bytes",
]

log = logging.getLogger(__name__)

#: Bump when the exported graph changes (inputs, outputs, head): old cache entries are ignored.
ONNX_FORMAT_VERSION = 2
OPSET = 17
#: Largest accepted |ONNX - PyTorch| on a logit or a CAM value when an export is checked.
EXPORT_TOLERANCE = 1e-3
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "cams", "features")
HEAD_BIAS_KEY = "class_layers.out.bias"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _head_module(net: nn.Module) -> nn.Module:
    """The network with the CheXNet head's three outputs (logits, raw CAMs, pooled features)."""
    import torch
    from torch import nn

    from chexnet_dicom.model.network import head

    class _LogitsAndCams(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            features = net.features
            assert isinstance(features, nn.Module)
            self.features: nn.Module = features
            self.out = head(net)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            rect = torch.relu(self.features(x))
            pooled = rect.mean(dim=(2, 3))
            logits = self.out(pooled)
            cams = torch.nn.functional.conv2d(rect, self.out.weight[:, :, None, None])
            return logits, cams, pooled

    return _LogitsAndCams(net).eval()


def _export_bytes(module: nn.Module, input_size: int) -> tuple[bytes, str]:
    """Serialise ``module`` to ONNX with a dynamic batch axis; return (bytes, exporter)."""
    import torch

    x = torch.zeros(2, 3, input_size, input_size)
    dynamic = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    with warnings.catch_warnings(), torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        try:  # the TorchScript exporter: one self-contained file in about 1 s
            torch.onnx.export(
                module,
                (x,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
            return path.read_bytes(), f"torch.onnx (TorchScript) {torch.__version__}"
        except (TypeError, RuntimeError, ImportError, AttributeError) as exc:  # removed in a later torch
            log.info("TorchScript ONNX exporter unavailable (%s); using torch.export", type(exc).__name__)
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            module,
            (x,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"x": {0: batch}},
        )
        if program is None:  # pragma: no cover - torch.export always returns a program
            raise ModelError("torch.onnx.export returned no program")
        program.save(str(path), external_data=False)
        return path.read_bytes(), f"torch.onnx (torch.export) {torch.__version__}"


def _session(model: bytes, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError(
            "onnxruntime is not installed: pip install onnxruntime, or use --backend torch"
        ) from exc
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # Threads that spin while waiting collapse throughput when the cores are shared
    # (the same effect as OMP_WAIT_POLICY for torch, see model/torch_backend.py).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors (Fail, InvalidGraph, ...)
        raise ModelError(
            f"ONNX Runtime cannot load the graph ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc


def _check_export(model: bytes, module: nn.Module, input_size: int) -> float:
    """Run the graph and the torch module on the same random batch; return the max |difference|."""
    import torch

    x = np.random.default_rng(0).standard_normal((3, 3, input_size, input_size)).astype(np.float32)
    logits, cams, feats = _session(model, 1).run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    with torch.no_grad():
        ref_logits, ref_cams, ref_feats = module(torch.from_numpy(x))
    scale = max(1.0, float(ref_cams.abs().max()))
    diff = max(
        float(np.abs(logits - ref_logits.numpy()).max()),
        float(np.abs(cams - ref_cams.numpy()).max()) / scale,
        float(np.abs(feats - ref_feats.numpy()).max()) / max(1.0, float(ref_feats.abs().max())),
    )
    if not np.isfinite(diff) or diff > EXPORT_TOLERANCE:
        raise ModelError(
            f"the ONNX export disagrees with PyTorch by {diff:.2e} (> {EXPORT_TOLERANCE:g}); "
            "use --backend torch"
        )
    return diff


def export_onnx(card_path: str | os.PathLike[str], *, verify: bool = True) -> tuple[bytes, dict[str, Any]]:
    """Export a bundle to a checked ONNX graph (needs torch and MONAI).

    Parameters
    ----------
    card_path
        ``*.card.json`` file.
    verify
        Check the weights' sha256 against the card first.

    Returns
    -------
    (bytes, dict)
        The serialised graph and its record (format, weights sha256, input size,
        graph sha256, exporter, measured difference to PyTorch).

    Raises
    ------
    WeightsError
        Missing or corrupt weights.
    ModelError
        The export failed or does not reproduce the PyTorch network.
    """
    from chexnet_dicom.model.card import load_bundle

    net, card = load_bundle(Path(card_path), verify=verify)
    module = _head_module(net)
    size = card.preprocessing.input_size
    try:
        model, exporter = _export_bytes(module, size)
    except Exception as exc:  # exporter failures are untyped (missing onnx/onnxscript, torch changes)
        raise ModelError(
            f"the ONNX export failed ({type(exc).__name__}: {str(exc)[:200]}); use --backend torch"
        ) from exc
    diff = _check_export(model, module, size)
    record = {
        "format": ONNX_FORMAT_VERSION,
        "weights_sha256": card.weights_sha256,
        "input_size": size,
        "sha256": _sha256(model),
        "exporter": exporter,
        "opset": OPSET,
        "max_abs_difference_to_torch": float(f"{diff:.3g}"),
    }
    log.info("exported %s to ONNX (%s, max |diff| to torch %.1e)", card.name, exporter, diff)
    return model, record


def _cache_paths(card: ModelCard) -> tuple[Path, Path]:
    stem = f"{card.weights_sha256}-s{card.preprocessing.input_size}-v{ONNX_FORMAT_VERSION}"
    folder = cache_dir() / "onnx"
    return folder / f"{stem}.onnx", folder / f"{stem}.json"


def _read_cached(card: ModelCard) -> bytes | None:
    model_path, record_path = _cache_paths(card)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        model = model_path.read_bytes()
    except (OSError, ValueError):
        return None
    expected = {
        "format": ONNX_FORMAT_VERSION,
        "weights_sha256": card.weights_sha256,
        "input_size": card.preprocessing.input_size,
    }
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in expected.items()):
        return None
    if record.get("sha256") != _sha256(model):
        log.warning("cached ONNX graph %s does not match its record: exporting again", model_path.name)
        return None
    return model


def onnx_model_bytes(
    card_path: str | os.PathLike[str], *, verify: bool = True
) -> tuple[bytes, ModelCard, str]:
    """The checked ONNX graph of a bundle: from the cache, else exported (and cached).

    Parameters
    ----------
    card_path
        ``*.card.json`` file.
    verify
        Check the weights' sha256 against the card.  Without it, weights that do not
        match their card are still exported (in memory) but never read from or written
        to the cache.

    Returns
    -------
    (bytes, ModelCard, str)
        The graph, the card, and where the graph came from (``"cache"``, ``"exported"``
        or ``"exported (not cached: ...)"``).
    """
    card, tensor_path = verified_weights(Path(card_path), verify=verify)
    # The cache is keyed by the card's weights hash: only weights that match it may use or
    # fill the cache, or an unverified run could store a wrong graph under a trusted key.
    trusted = verify or sha256_file(tensor_path) == card.weights_sha256
    if not trusted:
        model, _record = export_onnx(card_path, verify=False)
        log.warning("the weights file does not match its card: ONNX graph exported in memory, not cached")
        return model, card, "exported (not cached: the weights file does not match its card)"
    cached = _read_cached(card)
    if cached is not None:
        return cached, card, "cache"
    model, record = export_onnx(card_path, verify=True)  # re-hashes the bytes it actually loads
    model_path, record_path = _cache_paths(card)
    try:
        atomic_write(model_path, model)
        atomic_write(record_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        log.warning("could not cache the ONNX graph (%s): it will be exported again next run", exc)
        return model, card, f"exported (not cached: {exc.strerror or exc})"
    return model, card, "exported"


def _head_bias(tensor_path: Path) -> np.ndarray:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(tensor_path), framework="numpy") as f:
            return np.asarray(f.get_tensor(HEAD_BIAS_KEY), dtype=np.float64)
    except (SafetensorError, OSError, KeyError, TypeError) as exc:  # TypeError: a dtype numpy lacks
        raise WeightsError(f"cannot read the head bias from {tensor_path.name}: {exc}") from exc


class OrtPredictor(PredictorBase):
    """CheXNet inference with ONNX Runtime on the CPU (float32).

    Same interface and results as :class:`chexnet_dicom.model.torch_backend.TorchPredictor`
    (probabilities measured within 3e-7 of its float32 path; tests bound the difference
    at 1e-4).
    Build it with :meth:`from_card`.

    Parameters
    ----------
    model
        Checked ONNX graph from :func:`onnx_model_bytes`.
    card
        Its model card.
    head_bias
        (14,) bias of the linear head.
    threads
        CPU threads (None: :func:`~chexnet_dicom.model.predictor.available_cpus`).
    batch_size, tta
        See :class:`~chexnet_dicom.model.predictor.PredictorBase`.
    source
        Where the graph came from (for the log).
    ood_reference, ood_method
        See :class:`~chexnet_dicom.model.predictor.PredictorBase`.
    """

    def __init__(
        self,
        model: bytes,
        card: ModelCard,
        head_bias: np.ndarray,
        *,
        threads: int | None = None,
        batch_size: int = 8,
        tta: str | None = None,
        source: str = "",
        ood_reference: OodReference | None = None,
        ood_method: str = "card",
    ) -> None:
        n = available_cpus() if threads is None else int(threads)
        if n < 1:
            raise ConfigError(f"thread count must be >= 1, got {n}")
        runtime = RuntimeChoice(
            "cpu",
            "fp32",
            False,
            f"ONNX Runtime on the CPU, float32 (graph: {source or 'given'})",
            "onnxruntime",
        )
        super().__init__(
            card,
            runtime,
            threads=n,
            batch_size=batch_size,
            tta=tta,
            ood_reference=ood_reference,
            ood_method=ood_method,
        )
        self._bias = np.asarray(head_bias, dtype=np.float64)
        self._session = _session(model, n)
        # a graph exported by format 1 has no feature output: it runs, without feature scores
        self._has_features = OUTPUT_NAMES[2] in {o.name for o in self._session.get_outputs()}
        log.info("predictor ready: onnxruntime cpu fp32 threads=%d tta=%s graph=%s", n, self.tta, source)

    @classmethod
    def from_card(
        cls,
        card_path: str | os.PathLike[str],
        *,
        verify: bool = True,
        threads: int | None = None,
        batch_size: int = 8,
        tta: str | None = None,
        ood_method: str = "card",
    ) -> OrtPredictor:
        """Verify a bundle, get its ONNX graph (cache or export) and build the predictor."""
        model, card, source = onnx_model_bytes(card_path, verify=verify)
        bias = _head_bias(Path(card_path).parent / card.weights_file)
        return cls(
            model,
            card,
            bias,
            threads=threads,
            batch_size=batch_size,
            tta=tta,
            source=source,
            ood_reference=reference_for(card, Path(card_path).parent),
            ood_method=ood_method,
        )

    @property
    def head_bias(self) -> np.ndarray:
        """(14,) float64 bias of the linear head (for :func:`~chexnet_dicom.model.cam.llr_maps`)."""
        return self._bias.copy()

    def _run(self, x: np.ndarray, *, cams: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        names = [OUTPUT_NAMES[0]] + ([OUTPUT_NAMES[1]] if cams else [])
        names += [OUTPUT_NAMES[2]] if self._has_features else []
        try:
            outs = self._session.run(names, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
        except Exception as exc:  # e.g. out of memory: onnxruntime's errors are untyped
            raise InferenceError(
                f"ONNX Runtime failed on a batch of {len(x)} ({type(exc).__name__}: {str(exc)[:200]}); "
                "retry with a smaller batch or --backend torch"
            ) from exc
        got = dict(zip(names, outs, strict=True))
        maps = got.get(OUTPUT_NAMES[1])
        feats = got.get(OUTPUT_NAMES[2])
        return (
            np.asarray(got[OUTPUT_NAMES[0]], dtype=np.float32),
            None if maps is None else np.asarray(maps, dtype=np.float32),
            None if feats is None else np.asarray(feats, dtype=np.float32),
        )
