"""Model card and the project's own weights format (safetensors + JSON card).

A *bundle* is two files side by side::

    <name>.safetensors     tensors of the MONAI DenseNet121 state dict (fp16 or fp32)
    <name>.card.json       this ModelCard (labels, preprocessing, operating points,
                           training data summary, metrics with CIs, sha256 of the tensors)

Loading verifies the sha256 of the tensor file against the card, the label list
against :data:`~chexnet_dicom.model.labels.LABELS`, and loads with ``strict=True``:
a missing, unexpected or mis-shaped tensor is a :class:`WeightsError`, never a
silently random layer.  safetensors never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.errors import WeightsError
from chexnet_dicom.model.labels import LABELS

if TYPE_CHECKING:  # torch is imported where tensors are handled: reading a card never needs it
    import torch
    from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelCard",
    "OperatingPoint",
    "Preprocessing",
    "device_uid_for",
    "load_bundle",
    "load_state_dict_strict",
    "policy_text",
    "save_bundle",
    "sha256_file",
    "verified_weights",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

CARD_SUFFIX = ".card.json"
TENSOR_SUFFIX = ".safetensors"
CARD_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Preprocessing:
    """How a [0, 1] display image (bright = dense, head up) becomes model input.

    Attributes
    ----------
    resize
        The image is resized to ``resize x resize`` (aspect ratio not kept, as CheXNet).
    input_size
        Side of the tensor the network sees; a centre crop when ``< resize``.
    tta
        ``"none"`` or ``"tencrop"`` (arnoweng test-time augmentation: the four corners
        and centre of the resized image and their mirrors, probabilities averaged).
    mean, std
        Per-channel normalisation of the 3 replicated grey channels.
    """

    resize: int = 256
    input_size: int = 224
    tta: Literal["none", "tencrop"] = "none"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not 16 <= self.input_size <= self.resize <= 4096:
            raise WeightsError(f"preprocessing needs 16 <= input_size <= resize, got {self}")
        if self.tta not in ("none", "tencrop"):
            raise WeightsError(f"unknown test-time augmentation {self.tta!r}")


@dataclass(frozen=True)
class OperatingPoint:
    """Decision threshold of one finding, chosen on validation data.

    Attributes
    ----------
    threshold
        Probability at or above which the finding is reported present.
    method
        How it was chosen (for example ``"youden:validation"``).
    sensitivity, specificity
        Measured at the threshold on the data named in ``method`` (None if unknown).
    sensitivity_ci, specificity_ci
        95% bootstrap confidence intervals (None if unknown).
    """

    threshold: float
    method: str = "unspecified"
    sensitivity: float | None = None
    specificity: float | None = None
    sensitivity_ci: tuple[float, float] | None = None
    specificity_ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class ModelCard:
    """Everything a user and a DICOM result need to know about a set of weights.

    Attributes
    ----------
    name, version
        Algorithm name and version written into DICOM results.
    labels
        Output order; must equal :data:`LABELS`.
    preprocessing
        Input preparation (:class:`Preprocessing`).
    operating_points
        Per-finding thresholds for present/absent.
    cam_threshold
        Level of the relative evidence map (:mod:`chexnet_dicom.results`: a finding's
        class activation above the image's mean, divided by its maximum) from which an
        overlay draws colour and the SR's image region of a present finding is outlined.
    cam_scale
        Fixed per-model unit of the stored class activation maps (the validation
        percentile the recipe names); the relative evidence map does not depend on it.
    training, metrics
        Free-form summaries: data, splits, positives per class, recipe; AUROC with CIs.
    intended_use
        Plain-language statement (demo weights: pipeline demonstration only).
    weights_file, weights_sha256, weights_dtype
        The tensor file (relative to the card), its sha256 and storage dtype.
    source
        Where the weights came from (``chexdcm train``, an imported checkpoint, ...).
    ood
        Out-of-distribution reference: the statistics file beside the card, its sha256,
        thresholds and the images they came from (:mod:`chexnet_dicom.model.ood`);
        empty when the weights were never calibrated.
    drift
        Drift-monitoring reference: the sample file beside the card
        (``<stem>.drift.npz``, :func:`chexnet_dicom.drift.load_reference`), its sha256,
        size and the images it came from; empty when never calibrated.
    """

    name: str
    version: str
    labels: tuple[str, ...] = LABELS
    architecture: str = "monai.networks.nets.DenseNet121(spatial_dims=2, in_channels=3, out_channels=14)"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    operating_points: dict[str, OperatingPoint] = field(default_factory=dict)
    cam_threshold: float = 0.5
    cam_scale: float = 1.0
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    intended_use: str = "Research use only. Not for clinical use."
    weights_file: str = ""
    weights_sha256: str = ""
    weights_dtype: str = "float16"
    source: str = ""
    license: str = "Apache-2.0"
    ood: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] = field(default_factory=dict)
    schema_version: int = CARD_SCHEMA_VERSION

    @property
    def device_uid(self) -> str:
        """A UID for the algorithm as a DICOM device, derived from the weights hash."""
        return device_uid_for(self.weights_sha256)

    def threshold(self, label: str) -> float:
        """Operating point of ``label`` (0.5 when the card has none)."""
        op = self.operating_points.get(label)
        return op.threshold if op is not None else 0.5

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Return the card as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build and validate a card from its JSON dictionary.

        Raises
        ------
        WeightsError
            On unknown keys, a wrong label list or invalid values.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WeightsError(f"model card has unknown keys: {', '.join(unknown)}")
        d = dict(data)
        try:
            if "preprocessing" in d:
                pre = dict(d["preprocessing"])
                for k in ("mean", "std"):
                    if k in pre:
                        pre[k] = tuple(float(v) for v in pre[k])
                d["preprocessing"] = Preprocessing(**pre)
            if "operating_points" in d:
                ops = {}
                for label, op in d["operating_points"].items():
                    op = dict(op)
                    for k in ("sensitivity_ci", "specificity_ci"):
                        if op.get(k) is not None:
                            op[k] = tuple(op[k])
                    ops[label] = OperatingPoint(**op)
                d["operating_points"] = ops
            if "labels" in d:
                d["labels"] = tuple(d["labels"])
            card = cls(**d)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"invalid model card: {exc}") from exc
        if tuple(card.labels) != LABELS:
            raise WeightsError(
                f"model card lists {len(card.labels)} labels {list(card.labels)[:3]}...; "
                f"chexnet-dicom needs the 14 CheXNet findings in order {list(LABELS)}"
            )
        bad = sorted(set(card.operating_points) - set(LABELS))
        if bad:
            raise WeightsError(f"operating points for unknown findings: {bad}")
        return card

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        """Read a ``*.card.json`` file."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise WeightsError(f"model card not found: {p}") from exc
        except (OSError, ValueError) as exc:
            raise WeightsError(f"model card {p} is not readable JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise WeightsError(f"model card {p} must be a JSON object")
        return cls.from_dict(data)


def policy_text(operating_points: dict[str, OperatingPoint]) -> str:
    """How the operating points were chosen, in words for a table header or a legend.

    ``"specificity>=0.90:validation"`` reads "fixed specificity >= 0.90 on the validation
    split", ``"youden:validation"`` "Youden's J on the validation split"; a card without
    operating points reads "no operating points in the model card: 0.5".
    """
    methods = sorted({op.method for op in operating_points.values()})
    if not methods:
        return "no operating points in the model card: 0.5"
    if len(methods) > 1:
        return "chosen per finding (see the model card)"
    kind, _, data = methods[0].partition(":")
    where = f" on the {data} split" if data else ""
    if kind == "youden":
        return f"Youden's J{where}"
    if kind.startswith("specificity>="):
        return f"fixed specificity >= {kind.removeprefix('specificity>=')}{where}"
    return methods[0]


def device_uid_for(sha256_hex: str) -> str:
    """Return ``2.25.<decimal of 128 bits of sha256("chexnet-dicom:device:" + hash)>``.

    Parameters
    ----------
    sha256_hex
        sha256 of the weights file.
    """
    digest = hashlib.sha256(f"chexnet-dicom:device:{sha256_hex}".encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_state_dict_strict(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``net`` with ``strict=True`` and shape checks, as WeightsError.

    Parameters
    ----------
    net
        Target module.
    state
        Tensors keyed exactly as ``net.state_dict()``.

    Raises
    ------
    WeightsError
        Listing missing, unexpected and mis-shaped keys.
    """
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} with wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise WeightsError("checkpoint does not match the network: " + "; ".join(parts))
    cast = {k: v.to(dtype=own[k].dtype) for k, v in state.items()}
    net.load_state_dict(cast, strict=True)


def save_bundle(
    net: nn.Module, card: ModelCard, directory: str | Path, stem: str, *, dtype: torch.dtype | None = None
) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.card.json`` atomically.

    Floating tensors are stored as ``dtype``; integer buffers (BatchNorm counters) as is.
    The card's ``weights_file``, ``weights_sha256`` and ``weights_dtype`` are filled in.

    Returns
    -------
    Path
        The card file.
    """
    import torch
    from safetensors.torch import save_file

    dtype = torch.float16 if dtype is None else dtype
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.detach().to("cpu", dtype=dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in net.state_dict().items()
    }
    tensor_path = out / f"{stem}{TENSOR_SUFFIX}"
    # One metadata key only: safetensors keeps metadata in a Rust HashMap whose order is
    # randomised per map, so two keys would make the file bytes (and its sha256) differ
    # between two saves of the same tensors.
    meta = json.dumps({"format": "chexnet-dicom", "labels": list(card.labels)}, sort_keys=True)
    atomic_write(tensor_path, lambda tmp: save_file(tensors, tmp, metadata={"chexnet-dicom": meta}))
    final = dataclasses.replace(
        card,
        weights_file=tensor_path.name,
        weights_sha256=sha256_file(tensor_path),
        weights_dtype=str(dtype).removeprefix("torch."),
    )
    card_path = out / f"{stem}{CARD_SUFFIX}"
    atomic_write(card_path, final.to_json())
    return card_path


def verified_weights(card_path: str | Path, *, verify: bool = True) -> tuple[ModelCard, Path]:
    """Read a bundle's card and check its tensor file against the card's sha256 (no torch).

    Parameters
    ----------
    card_path
        The ``*.card.json`` file.
    verify
        Hash the tensor file (on by default).

    Returns
    -------
    (ModelCard, Path)
        The card and its verified ``*.safetensors`` file.

    Raises
    ------
    WeightsError
        Missing files or hash mismatch.
    """
    card_p = Path(card_path)
    card = ModelCard.read(card_p)
    tensor_path = card_p.parent / card.weights_file
    if not card.weights_file or not tensor_path.is_file():
        raise WeightsError(f"weights file {tensor_path} named by {card_p.name} is missing")
    if verify:
        _check_digest(tensor_path, sha256_file(tensor_path), card)
    return card, tensor_path


def _check_digest(tensor_path: Path, actual: str, card: ModelCard) -> None:
    if actual != card.weights_sha256:
        raise WeightsError(
            f"sha256 of {tensor_path.name} is {actual[:16]}..., the card says "
            f"{card.weights_sha256[:16]}...: the file is corrupt or was tampered with; re-fetch it"
        )


def load_bundle(card_path: str | Path, *, verify: bool = True) -> tuple[nn.Module, ModelCard]:
    """Load a bundle written by :func:`save_bundle` into a fresh fp32 network on CPU.

    Parameters
    ----------
    card_path
        The ``*.card.json`` file.
    verify
        Check the tensor file's sha256 against the card (on by default).

    Returns
    -------
    (torch.nn.Module, ModelCard)
        The network in eval mode and its card.

    Raises
    ------
    WeightsError
        Missing files, hash mismatch, wrong labels or tensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    from chexnet_dicom.model.network import build_network

    card, tensor_path = verified_weights(card_path, verify=False)
    try:
        data = tensor_path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read {tensor_path.name}: {exc.strerror or exc}") from exc
    if verify:  # hash the very bytes that are loaded: a file swapped after a check is never used
        _check_digest(tensor_path, hashlib.sha256(data).hexdigest(), card)
    try:
        state = load(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {tensor_path.name}: {exc}") from exc
    net = build_network(len(card.labels))
    load_state_dict_strict(net, state)
    net.eval()
    return net, card
