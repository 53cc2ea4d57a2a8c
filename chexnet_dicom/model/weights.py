"""Foreign checkpoint loaders, import into the project's bundle format, and weights resolution.

Formats (see :mod:`chexnet_dicom.model.registry` for where they are published):

``torchvision-imagenet``
    ``densenet121-a639ec97.pth``: a state dict with keys ``features.*`` and a
    1000-class ``classifier``; dense layers use the old dotted names
    (``norm.1``, ``conv.1``, ``norm.2``, ``conv.2``) in the published file and
    ``norm1``... in newer saves; no ``num_batches_tracked`` in the published file.
    Used for initialisation: the ImageNet head is dropped explicitly, everything else
    is loaded strictly and the 14-class head keeps the network's own initialisation.
``arnoweng``
    ``model.pth.tar``: ``{'state_dict': ...}`` of ``DataParallel(DenseNet121)``, keys
    ``module.densenet121.features...`` in the old dotted naming, head
    ``module.densenet121.classifier.0`` (their ``classifier.1`` was a parameter-free
    Sigmoid; our network returns logits, so the Linear maps 1:1).  PyTorch 0.3,
    legacy serialization.
``reproduce-chexnet``
    ``pretrained/checkpoint``: ``{'model': <pickled torchvision DenseNet>, 'best_loss',
    'epoch', ...}``.  The model is unpickled into inert placeholders by
    :mod:`chexnet_dicom.model.safe_unpickle` (torchvision is never imported) and its
    state dict walked out of ``_parameters``/``_buffers``/``_modules``.

The key map is explicit code (:func:`map_torchvision_key`); every source key is
either mapped, or dropped by name (the ImageNet head only), or an error; the result
is loaded with :func:`~chexnet_dicom.model.card.load_state_dict_strict`.  Checkpoints
saved before PyTorch 0.4 carry no BatchNorm ``num_batches_tracked`` counters: when a
checkpoint has none at all they are set to 0 (they only matter for ``momentum=None``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from chexnet_dicom.errors import WeightsError
from chexnet_dicom.model.card import (
    ModelCard,
    Preprocessing,
    load_state_dict_strict,
    save_bundle,
)
from chexnet_dicom.model.download import fetch_file
from chexnet_dicom.model.labels import LABELS, NUM_CLASSES
from chexnet_dicom.model.network import build_network
from chexnet_dicom.model.registry import (
    FormatName,
    HashSpec,
    bundle_card,
    file_digests,
    get_entry,
    verify_file,
)
from chexnet_dicom.model.safe_unpickle import module_state_dict, pickled_class_name, safe_torch_load

__all__ = [
    "FORMATS",
    "ImportedCheckpoint",
    "detect_format",
    "fetch",
    "import_checkpoint",
    "load_checkpoint",
    "load_imagenet_init",
    "map_torchvision_key",
    "network_from_torchvision_state",
]

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = get_args(FormatName)


_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
# torchvision dense layer: old dotted (norm.1) or new (norm1) naming.
_DENSE_LAYER = re.compile(rf"^features\.denseblock([1-4])\.denselayer(\d+)\.(norm|conv)\.?([12])\.{_BN}$")
# Keys whose names are identical in torchvision and MONAI.
_SAME_NAME = re.compile(
    rf"^features\.(conv0\.weight|norm0\.{_BN}|transition[1-3]\.norm\.{_BN}|transition[1-3]\.conv\.weight|norm5\.{_BN})$"
)

HeadStyle = Literal["imagenet", "sequential"]


def map_torchvision_key(key: str, head: HeadStyle) -> str | None:
    """Map one torchvision DenseNet-121 state-dict key to the MONAI DenseNet121 name.

    Parameters
    ----------
    key
        Source key without any wrapper prefix (``features.denseblock1.denselayer1.norm.1.weight``).
    head
        ``"imagenet"``: ``classifier.{weight,bias}`` is the 1000-class ImageNet head and is
        dropped (returns None); ``"sequential"``: ``classifier.0.{weight,bias}`` is the
        CheXNet ``Linear`` of ``Sequential(Linear, Sigmoid)`` and maps to ``class_layers.out``.

    Returns
    -------
    str or None
        The MONAI key, or None for the explicitly dropped ImageNet head.

    Raises
    ------
    WeightsError
        For any key the map does not know.
    """
    m = _DENSE_LAYER.match(key)
    if m:
        block, layer, kind, idx, param = m.groups()
        return f"features.denseblock{block}.denselayer{layer}.layers.{kind}{idx}.{param}"
    if _SAME_NAME.match(key):
        return key
    if head == "imagenet" and key in ("classifier.weight", "classifier.bias"):
        return None
    if head == "sequential" and key in ("classifier.0.weight", "classifier.0.bias"):
        return "class_layers.out." + key.rsplit(".", 1)[1]
    raise WeightsError(
        f"checkpoint key {key!r} has no place in DenseNet-121 ({head} head); is this a DenseNet-121?"
    )


def _strip_prefix(state: Mapping[str, Any], prefix: str, what: str) -> dict[str, Any]:
    bad = [k for k in state if not k.startswith(prefix)]
    if bad:
        raise WeightsError(f"{what}: expected every key to start with {prefix!r}, found {bad[:3]}")
    return {k[len(prefix) :]: v for k, v in state.items()}


def _tensor_dict(state: object, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not state:
        raise WeightsError(f"{what}: expected a non-empty state dict, found {type(state).__name__}")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise WeightsError(f"{what}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = v
    return out


def _map_state(state: Mapping[str, torch.Tensor], head: HeadStyle, net: nn.Module) -> dict[str, torch.Tensor]:
    """Apply :func:`map_torchvision_key`, check duplicates, finiteness and the label count."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = map_torchvision_key(key, head)
        if target is None:
            log.debug("dropping %s %s (ImageNet head)", key, tuple(value.shape))
            continue
        if target in mapped:
            raise WeightsError(f"checkpoint holds {target} twice (old and new key styles mixed?)")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise WeightsError(f"checkpoint tensor {key} contains NaN or infinite values")
        mapped[target] = value
    if head == "sequential":
        w = mapped.get("class_layers.out.weight")
        if w is not None and w.shape[0] != NUM_CLASSES:
            raise WeightsError(
                f"the checkpoint's head has {w.shape[0]} outputs; chexnet-dicom needs the {NUM_CLASSES} "
                f"CheXNet findings in order ({', '.join(LABELS)}): this is not a CheXNet checkpoint"
            )
    own = net.state_dict()
    counters = [k for k in own if k.endswith(".num_batches_tracked")]
    if not any(k.endswith(".num_batches_tracked") for k in mapped):
        # Pre-0.4 checkpoint: no BatchNorm counters anywhere, set them explicitly.
        for k in counters:
            mapped[k] = torch.zeros((), dtype=torch.long)
    return mapped


def network_from_torchvision_state(state: Mapping[str, torch.Tensor], head: HeadStyle) -> nn.Module:
    """Build the MONAI DenseNet121 from a torchvision-named DenseNet-121 state dict.

    Parameters
    ----------
    state
        Tensors under torchvision names (wrapper prefixes already removed).
    head
        ``"imagenet"`` (1000-class head dropped, 14-class head keeps its own init) or
        ``"sequential"`` (CheXNet ``classifier.0`` mapped to ``class_layers.out``).

    Returns
    -------
    torch.nn.Module
        The network on CPU in eval mode.

    Raises
    ------
    WeightsError
        Unknown, missing or mis-shaped tensors, non-finite values, a head that is not 14 findings.
    """
    net = build_network(NUM_CLASSES)
    mapped = _map_state(state, head, net)
    if head == "imagenet":
        # The 14-class head is not in the checkpoint: keep the network's own init, explicitly.
        own = net.state_dict()
        for k in ("class_layers.out.weight", "class_layers.out.bias"):
            mapped[k] = own[k].clone()
    load_state_dict_strict(net, mapped)
    net.eval()
    return net


def detect_format(obj: object) -> FormatName:
    """Guess the format of an object returned by :func:`~chexnet_dicom.model.safe_unpickle.safe_torch_load`.

    Raises
    ------
    WeightsError
        If it is none of :data:`FORMATS`.
    """
    if isinstance(obj, Mapping):
        if "model" in obj and pickled_class_name(obj["model"]):
            return "reproduce-chexnet"
        sd = obj.get("state_dict")
        if isinstance(sd, Mapping) and any(str(k).startswith("module.densenet121.") for k in sd):
            return "arnoweng"
        if any(str(k).startswith("features.") for k in obj) and "classifier.weight" in obj:
            return "torchvision-imagenet"
    raise WeightsError(
        "unrecognised checkpoint layout; expected a torchvision DenseNet-121 state dict, arnoweng "
        "{'state_dict': module.densenet121.*} or reproduce-chexnet {'model': DenseNet}"
    )


def _reproduce_state(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    model = obj.get("model")
    cls = pickled_class_name(model)
    prefix = ""
    if cls.startswith("torch.nn.parallel."):  # DataParallel / DistributedDataParallel wrapper
        prefix = "module."
        children = getattr(model, "pickled_state", None) or {}
        inner = children.get("_modules", {}).get("module") if isinstance(children, dict) else None
        cls = pickled_class_name(inner)
    if cls != "torchvision.models.densenet.DenseNet":
        raise WeightsError(
            f"the checkpoint's 'model' is {cls or type(model).__name__}, not a torchvision DenseNet"
        )
    state = module_state_dict(model)
    return _strip_prefix(state, prefix, "reproduce-chexnet model") if prefix else dict(state)


def load_checkpoint(path: str | Path, fmt: str = "auto") -> tuple[nn.Module, FormatName]:
    """Load a foreign checkpoint into the MONAI DenseNet121 (CPU, fp32, eval mode).

    Parameters
    ----------
    path
        The checkpoint file (never unpickled unsafely).
    fmt
        One of :data:`FORMATS` or ``"auto"``.

    Returns
    -------
    (torch.nn.Module, str)
        The network and the format it was read as.  For ``torchvision-imagenet`` the
        14-class head is the network's random initialisation.

    Raises
    ------
    WeightsError
        Unknown format, refused pickle content, missing/unexpected/mis-shaped tensors,
        a head that is not 14 findings.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise WeightsError(f"unknown checkpoint format {fmt!r}; use one of {', '.join(FORMATS)} or auto")
    obj = safe_torch_load(path)
    found = detect_format(obj)
    if fmt != "auto" and fmt != found:
        raise WeightsError(f"{Path(path).name} has the layout of format {found!r}, not {fmt!r}")
    state: dict[str, torch.Tensor]
    if found == "torchvision-imagenet":
        state = _tensor_dict(obj, "torchvision state dict")
        net = network_from_torchvision_state(state, "imagenet")
    elif found == "arnoweng":
        assert isinstance(obj, Mapping)
        raw = _tensor_dict(obj["state_dict"], "arnoweng state_dict")
        state = _strip_prefix(raw, "module.densenet121.", "arnoweng state_dict")
        net = network_from_torchvision_state(state, "sequential")
    else:
        assert isinstance(obj, Mapping)
        net = network_from_torchvision_state(_reproduce_state(obj), "sequential")
    log.info("loaded a %s checkpoint", found)
    return net, found


def load_imagenet_init(path: str | Path) -> nn.Module:
    """Network initialised from torchvision's ImageNet DenseNet-121 (head: own random init)."""
    net, _ = load_checkpoint(path, "torchvision-imagenet")
    return net


@dataclass(frozen=True)
class ImportedCheckpoint:
    """Result of :func:`import_checkpoint`: the bundle's card path and the source's digests."""

    card_path: Path
    format: FormatName
    sha256: str
    git_blob_sha1: str


_CARD_DEFAULTS: dict[str, dict[str, Any]] = {
    "torchvision-imagenet": {
        "name": "densenet121-imagenet-init",
        "preprocessing": Preprocessing(resize=256, input_size=224),
        "intended_use": (
            "Initialisation for training only: ImageNet features with an untrained 14-class head. "
            "Its predictions are meaningless. Research use only."
        ),
        "training": {"data": "ImageNet-1k (torchvision DenseNet121_Weights.IMAGENET1K_V1)", "head": "random"},
        "license": "BSD-3-Clause (pytorch/vision); ImageNet terms of use apply to the training data",
    },
    "arnoweng": {
        "name": "chexnet-arnoweng",
        "preprocessing": Preprocessing(resize=256, input_size=224, tta="tencrop"),
        "intended_use": "Research use only. Not for clinical use. Third-party CheXNet reimplementation.",
        "training": {
            "data": "NIH ChestX-ray14 (arnoweng/CheXNet split)",
            "recipe": "arnoweng/CheXNet model.py: resize 256, TenCrop 224, ImageNet mean/std",
        },
        "license": "not stated (no license file in arnoweng/CheXNet): check before redistributing",
    },
    "reproduce-chexnet": {
        "name": "chexnet-reproduce",
        "preprocessing": Preprocessing(resize=224, input_size=224),
        "intended_use": "Research use only. Not for clinical use. Third-party CheXNet reproduction.",
        "training": {
            "data": "NIH ChestX-ray14 (reproduce-chexnet split)",
            "recipe": "jrzech/reproduce-chexnet: Scale 224 + CenterCrop 224, ImageNet mean/std, SGD",
        },
        "license": "BSD-3-Clause (jrzech/reproduce-chexnet)",
    },
}


def import_checkpoint(
    path: str | Path,
    out_dir: str | Path,
    *,
    fmt: str = "auto",
    stem: str | None = None,
    dtype: torch.dtype = torch.float32,
    source_url: str | None = None,
    expected: HashSpec | None = None,
) -> ImportedCheckpoint:
    """Convert a foreign checkpoint into a safetensors + card bundle.

    Parameters
    ----------
    path
        The foreign checkpoint.
    out_dir
        Folder for ``<stem>.safetensors`` and ``<stem>.card.json``.
    fmt
        One of :data:`FORMATS` or ``"auto"``.
    stem
        File stem; default the format's model name.
    dtype
        Storage dtype of floating tensors (fp32 by default: imported weights keep their values).
    source_url
        Where the file came from, recorded in the card.
    expected
        Hash to verify the file against before loading it.

    Returns
    -------
    ImportedCheckpoint
    """
    p = Path(path)
    digests = verify_file(p, expected) if expected is not None else file_digests(p)
    net, found = load_checkpoint(p, fmt)
    defaults = _CARD_DEFAULTS[found]
    where = f" from {source_url}" if source_url else ""
    card = ModelCard(
        name=str(defaults["name"]),
        version=f"import-{digests['sha256'][:12]}",
        preprocessing=defaults["preprocessing"],
        intended_use=str(defaults["intended_use"]),
        training={
            **defaults["training"],
            "imported_file": {
                "format": found,
                "sha256": digests["sha256"],
                "git_blob_sha1": digests["git-blob-sha1"],
            },
        },
        license=str(defaults["license"]),
        source=f"imported {found} checkpoint{where} (sha256 {digests['sha256']}) by chexdcm weights import",
    )
    card_path = save_bundle(net, card, out_dir, stem or str(defaults["name"]), dtype=dtype)
    log.info("imported %s checkpoint into %s", found, card_path.name)
    return ImportedCheckpoint(card_path, found, digests["sha256"], digests["git-blob-sha1"])


def fetch(
    name: str, *, expected: HashSpec | None = None, convert: bool = True, timeout: float = 60.0
) -> tuple[Path, Path | None]:
    """Download (or verify the cached copy of) a registry checkpoint and convert it to a bundle.

    Parameters
    ----------
    name
        Registry name (``chexdcm weights list``).
    expected
        Hash to use when the registry publishes none (or to pin a stronger one).
    convert
        Also write the bundle under ``bundles/<name>/`` in the cache.
    timeout
        Network timeout in seconds.

    Returns
    -------
    (Path, Path or None)
        The verified published file and the bundle's card (None when not converted).
    """
    entry = get_entry(name)
    raw = fetch_file(entry, expected=expected, timeout=timeout)
    if not convert:
        return raw, None
    card = bundle_card(entry)
    digests = file_digests(raw)
    if card.is_file():
        existing = ModelCard.read(card)
        if existing.training.get("imported_file", {}).get("sha256") == digests["sha256"]:
            return raw, card
    imported = import_checkpoint(
        raw,
        card.parent,
        fmt=entry.format,
        stem=entry.name,
        source_url=entry.url,
        expected=expected or entry.hash,
    )
    return raw, imported.card_path
