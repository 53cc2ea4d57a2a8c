"""Synthetic foreign checkpoints, built from the public DenseNet-121 architecture.

Nothing here uses the loader's key map.  :func:`densenet121_spec` writes the key names
and tensor shapes of torchvision's DenseNet-121 (Huang et al. 2017; torchvision
``densenet121``: growth rate 32, blocks (6, 12, 24, 16), 64 initial features,
bottleneck size 4, a 1000-class ``Linear`` head) in the naming each published file
uses.  ``python -m tests.helpers.checkpoints`` regenerates the committed lists in
``chexnet_dicom/model/data/keys/``; the fixtures are built from those committed lists
(a test checks that the generator and the lists agree).

Checkpoints are saved as the originals were: the legacy (non-zip) ``torch.save``
serialization, and for files written by PyTorch 0.3 the 0.3 pickle layout
(``torch._utils._rebuild_tensor`` without ``requires_grad``; whole modules with
``Parameter(data)`` objects and no BatchNorm ``num_batches_tracked``).

:func:`reference_forward` is an independent functional implementation of torchvision's
DenseNet-121 forward pass (``F.conv2d``, ``F.batch_norm``, ...) driven directly by a
checkpoint's own tensors under their own names.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

GROWTH = 32
BLOCKS = (6, 12, 24, 16)
INIT_FEATURES = 64
BN_SIZE = 4
BN_EPS = 1e-5

KEYS_DIR = Path(__file__).resolve().parents[2] / "chexnet_dicom" / "model" / "data" / "keys"

Entry = tuple[str, tuple[int, ...], str]


def _layer_name(kind: str, idx: int, dotted: bool) -> str:
    return f"{kind}.{idx}" if dotted else f"{kind}{idx}"


def densenet121_spec(
    *,
    dotted: bool,
    counters: bool,
    head: Literal["imagenet", "chexnet"],
    prefix: str = "",
    blocks: tuple[int, ...] = BLOCKS,
) -> list[Entry]:
    """Key names, shapes and dtypes of a torchvision DenseNet-121 state dict.

    Parameters
    ----------
    dotted
        Old (torchvision <= 0.2) dense layer names ``norm.1``, ``conv.1``, ``norm.2``, ``conv.2``.
    counters
        BatchNorm ``num_batches_tracked`` (PyTorch >= 0.4).
    head
        ``imagenet``: ``classifier`` Linear(1024, 1000); ``chexnet``: ``classifier.0`` Linear(1024, 14).
    prefix
        Wrapper prefix (``module.densenet121.`` for arnoweng).
    blocks
        Layers per dense block ((6, 12, 24, 16) for DenseNet-121; other values only to
        check the generator against torchvision's published parameter counts).
    """
    out: list[Entry] = []

    def bn(name: str, c: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            out.append((f"{prefix}{name}.{p}", (c,), "float32"))
        if counters:
            out.append((f"{prefix}{name}.num_batches_tracked", (), "int64"))

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        out.append((f"{prefix}{name}.weight", (cout, cin, k, k), "float32"))

    conv("features.conv0", INIT_FEATURES, 3, 7)
    bn("features.norm0", INIT_FEATURES)
    c = INIT_FEATURES
    for b, n in enumerate(blocks, 1):
        for i in range(1, n + 1):
            cin = c + (i - 1) * GROWTH
            base = f"features.denseblock{b}.denselayer{i}."
            bn(base + _layer_name("norm", 1, dotted), cin)
            conv(base + _layer_name("conv", 1, dotted), BN_SIZE * GROWTH, cin, 1)
            bn(base + _layer_name("norm", 2, dotted), BN_SIZE * GROWTH)
            conv(base + _layer_name("conv", 2, dotted), GROWTH, BN_SIZE * GROWTH, 3)
        c += n * GROWTH
        if b != len(blocks):
            bn(f"features.transition{b}.norm", c)
            conv(f"features.transition{b}.conv", c // 2, c, 1)
            c //= 2
    bn("features.norm5", c)
    if head == "imagenet":
        out += [
            (f"{prefix}classifier.weight", (1000, c), "float32"),
            (f"{prefix}classifier.bias", (1000,), "float32"),
        ]
    else:
        out += [
            (f"{prefix}classifier.0.weight", (14, c), "float32"),
            (f"{prefix}classifier.0.bias", (14,), "float32"),
        ]
    return out


#: committed list file -> how the generator writes it (and which published file it describes).
SPECS: dict[str, dict[str, Any]] = {
    # download.pytorch.org/models/densenet121-a639ec97.pth (2017, PyTorch 0.2/0.3)
    "torchvision_densenet121_imagenet.tsv": {"dotted": True, "counters": False, "head": "imagenet"},
    # torchvision >= 0.3 densenet121().state_dict() (new names, PyTorch >= 0.4 counters)
    "torchvision_densenet121_current.tsv": {"dotted": False, "counters": True, "head": "imagenet"},
    # arnoweng/CheXNet model.pth.tar ['state_dict'] (PyTorch 0.3, DataParallel)
    "arnoweng_chexnet_state_dict.tsv": {
        "dotted": True,
        "counters": False,
        "head": "chexnet",
        "prefix": "module.densenet121.",
    },
    # jrzech/reproduce-chexnet pretrained/checkpoint ['model'].state_dict() (PyTorch 0.3, torchvision 0.2)
    "reproduce_chexnet_model.tsv": {"dotted": True, "counters": False, "head": "chexnet"},
}


def format_spec(entries: list[Entry]) -> str:
    """Render entries as ``key<TAB>shape<TAB>dtype`` lines."""
    return "".join(f"{k}\t{','.join(map(str, s))}\t{d}\n" for k, s, d in entries)


def read_spec(name: str) -> list[Entry]:
    """Read a committed key list."""
    entries: list[Entry] = []
    for line in (KEYS_DIR / name).read_text(encoding="utf-8").splitlines():
        key, shape, dtype = line.split("\t")
        entries.append((key, tuple(int(v) for v in shape.split(",")) if shape else (), dtype))
    return entries


def random_state(entries: list[Entry], seed: int) -> collections.OrderedDict[str, torch.Tensor]:
    """Random tensors for a spec, scaled so that a 121-layer forward stays well conditioned."""
    g = torch.Generator().manual_seed(seed)
    sd: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
    for key, shape, dtype in entries:
        if dtype == "int64":
            sd[key] = torch.randint(0, 10_000, shape, generator=g, dtype=torch.int64)
            continue
        leaf = key.rsplit(".", 1)[1]
        if len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            t = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif len(shape) == 2:
            t = torch.randn(shape, generator=g) * (1.0 / shape[1]) ** 0.5
        elif leaf in ("weight", "running_var"):
            t = 0.75 + 0.5 * torch.rand(shape, generator=g)
        else:  # bias, running_mean
            t = 0.1 * torch.randn(shape, generator=g)
        sd[key] = t.contiguous()
    return sd


# --------------------------------------------------------------------------- reference


def reference_forward(
    sd: dict[str, torch.Tensor], x: torch.Tensor, *, dotted: bool, prefix: str = ""
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """torchvision DenseNet-121 forward (eval mode) from a checkpoint's own tensors.

    Returns
    -------
    (features, logits)
        ``features`` after ``norm5`` (before the final ReLU); ``logits`` of the
        ``classifier.0`` Linear (the CheXNet Sigmoid not applied), or None for an
        ImageNet checkpoint (its head is not part of the comparison).
    """

    def t(name: str) -> torch.Tensor:
        return sd[prefix + name]

    def bn(h: torch.Tensor, name: str) -> torch.Tensor:
        return F.batch_norm(
            h,
            t(f"{name}.running_mean"),
            t(f"{name}.running_var"),
            t(f"{name}.weight"),
            t(f"{name}.bias"),
            training=False,
            eps=BN_EPS,
        )

    h = F.conv2d(x, t("features.conv0.weight"), stride=2, padding=3)
    h = F.max_pool2d(F.relu(bn(h, "features.norm0")), kernel_size=3, stride=2, padding=1)
    for b, n in enumerate(BLOCKS, 1):
        feats = [h]
        for i in range(1, n + 1):
            base = f"features.denseblock{b}.denselayer{i}."
            y = torch.cat(feats, 1)
            y = F.conv2d(
                F.relu(bn(y, base + _layer_name("norm", 1, dotted))),
                t(base + _layer_name("conv", 1, dotted) + ".weight"),
            )
            y = F.conv2d(
                F.relu(bn(y, base + _layer_name("norm", 2, dotted))),
                t(base + _layer_name("conv", 2, dotted) + ".weight"),
                padding=1,
            )
            feats.append(y)
        h = torch.cat(feats, 1)
        if b != len(BLOCKS):
            h = F.conv2d(
                F.relu(bn(h, f"features.transition{b}.norm")), t(f"features.transition{b}.conv.weight")
            )
            h = F.avg_pool2d(h, kernel_size=2, stride=2)
    features = bn(h, "features.norm5")
    if prefix + "classifier.0.weight" not in sd:
        return features, None
    pooled = F.adaptive_avg_pool2d(F.relu(features), 1).flatten(1)
    return features, F.linear(pooled, t("classifier.0.weight"), t("classifier.0.bias"))


# --------------------------------------------------------------------------- saving


class _Torch03Pickler(pickle.Pickler):
    """Pickle tensors and Parameters the way PyTorch 0.3 did (see module docstring)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, nn.Parameter):
            state = (obj.requires_grad, False, collections.OrderedDict())  # requires_grad, volatile, hooks
            return (nn.Parameter, (obj.data,), state)
        if type(obj) is torch.Tensor:
            return (
                torch._utils._rebuild_tensor,
                (obj._typed_storage(), obj.storage_offset(), tuple(obj.size()), obj.stride()),
            )
        return NotImplemented


_torch03_pickle = types.ModuleType("torch03_pickle")
_torch03_pickle.Pickler = _Torch03Pickler  # type: ignore[attr-defined]
_torch03_pickle.Unpickler = pickle.Unpickler  # type: ignore[attr-defined]
_torch03_pickle.load = pickle.load  # type: ignore[attr-defined]
_torch03_pickle.dump = pickle.dump  # type: ignore[attr-defined]
_torch03_pickle.HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL  # type: ignore[attr-defined]


def save_legacy(obj: Any, path: Path, *, torch03: bool, cuda: bool = False) -> Path:
    """``torch.save`` in the legacy (non-zip) serialization, optionally with the 0.3 pickle layout.

    ``cuda=True`` rewrites the storage records as a file saved from GPU memory has them
    (``torch.cuda.FloatStorage`` with location ``cuda:0``), as arnoweng's DataParallel
    training on GPUs wrote them; loading must map them to the CPU.
    """
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # Fake torchvision classes have no retrievable source (a legacy-format nicety).
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
        if torch03:
            torch.save(obj, buf, pickle_module=_torch03_pickle, _use_new_zipfile_serialization=False)
        else:
            torch.save(obj, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    if cuda:
        cpu = b"X\x03\x00\x00\x00cpu"  # BINUNICODE 'cpu' (memoized: one occurrence)
        if data.count(cpu) != 1 or data.count(b"ctorch\nFloatStorage\n") != 1:
            raise AssertionError("unexpected legacy pickle layout")
        data = data.replace(cpu, b"X\x06\x00\x00\x00cuda:0").replace(
            b"ctorch\nFloatStorage\n", b"ctorch.cuda\nFloatStorage\n"
        )
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- whole-model pickle


@contextlib.contextmanager
def fake_torchvision() -> Iterator[types.ModuleType]:
    """Provide ``torchvision.models.densenet`` with DenseNet classes while pickling, then remove it.

    The classes follow torchvision 0.2's ``densenet.py`` structure: ``_DenseLayer``,
    ``_DenseBlock`` and ``_Transition`` are ``nn.Sequential`` subclasses and the dense
    layer's children are named ``norm.1``, ``relu.1``, ``conv.1``, ``norm.2``, ``relu.2``, ``conv.2``.
    """
    names = ("torchvision", "torchvision.models", "torchvision.models.densenet")
    if any(n in sys.modules for n in names):
        raise RuntimeError("a real torchvision is imported; the fixture must not shadow it")
    mods = {n: types.ModuleType(n) for n in names}
    dn = mods["torchvision.models.densenet"]
    for cls_name, base in (
        ("DenseNet", nn.Module),
        ("_DenseBlock", nn.Sequential),
        ("_DenseLayer", nn.Sequential),
        ("_Transition", nn.Sequential),
    ):
        cls = type(cls_name, (base,), {"__module__": dn.__name__})
        cls.__qualname__ = cls_name
        setattr(dn, cls_name, cls)
    mods["torchvision"].models = mods["torchvision.models"]  # type: ignore[attr-defined]
    mods["torchvision.models"].densenet = dn  # type: ignore[attr-defined]
    sys.modules.update(mods)
    try:
        yield dn
    finally:
        for n in names:
            sys.modules.pop(n, None)


def build_pickled_densenet(dn: types.ModuleType, *, counters: bool) -> nn.Module:
    """A torchvision-0.2 style DenseNet-121 module tree with the CheXNet head, random values."""

    def bn(c: int) -> nn.BatchNorm2d:
        m = nn.BatchNorm2d(c)
        if not counters:
            del m._buffers["num_batches_tracked"]
        return m

    features = nn.Sequential(
        collections.OrderedDict(
            [
                ("conv0", nn.Conv2d(3, INIT_FEATURES, 7, stride=2, padding=3, bias=False)),
                ("norm0", bn(INIT_FEATURES)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
            ]
        )
    )
    c = INIT_FEATURES
    for b, n in enumerate(BLOCKS, 1):
        block = dn._DenseBlock()
        for i in range(1, n + 1):
            cin = c + (i - 1) * GROWTH
            layer = dn._DenseLayer()
            # torchvision 0.2 used add_module("norm.1", ...); modern torch refuses dots there.
            layer._modules["norm.1"] = bn(cin)
            layer._modules["relu.1"] = nn.ReLU(inplace=True)
            layer._modules["conv.1"] = nn.Conv2d(cin, BN_SIZE * GROWTH, 1, bias=False)
            layer._modules["norm.2"] = bn(BN_SIZE * GROWTH)
            layer._modules["relu.2"] = nn.ReLU(inplace=True)
            layer._modules["conv.2"] = nn.Conv2d(BN_SIZE * GROWTH, GROWTH, 3, padding=1, bias=False)
            layer.drop_rate = 0
            block.add_module(f"denselayer{i}", layer)
        features.add_module(f"denseblock{b}", block)
        c += n * GROWTH
        if b != len(BLOCKS):
            trans = dn._Transition()
            trans.add_module("norm", bn(c))
            trans.add_module("relu", nn.ReLU(inplace=True))
            trans.add_module("conv", nn.Conv2d(c, c // 2, 1, bias=False))
            trans.add_module("pool", nn.AvgPool2d(2, stride=2))
            features.add_module(f"transition{b}", trans)
            c //= 2
    features.add_module("norm5", bn(c))
    model = dn.DenseNet()
    model.features = features
    model.classifier = nn.Sequential(nn.Linear(c, 14), nn.Sigmoid())
    return model


def fill_module(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Copy ``sd`` into the module tree in place (names as ``model.state_dict()``)."""
    own = model.state_dict(keep_vars=True)
    if list(own) != list(sd):
        raise AssertionError("module tree does not match the key list")
    with torch.no_grad():
        for k, v in sd.items():
            own[k].copy_(v)


def save_reproduce_checkpoint(path: Path, sd: dict[str, torch.Tensor], *, torch03: bool) -> Path:
    """Write ``{'model': DenseNet, 'best_loss', 'epoch', 'rng_state', 'LR'}`` like reproduce-chexnet."""
    counters = any(k.endswith("num_batches_tracked") for k in sd)
    with fake_torchvision() as dn:
        model = build_pickled_densenet(dn, counters=counters)
        fill_module(model, sd)
        model.eval()
        state = {
            "model": model,
            "best_loss": 0.1489,
            "epoch": 7,
            "rng_state": torch.get_rng_state(),
            "LR": 0.001,
        }
        return save_legacy(state, path, torch03=torch03)


def pickle_bytes(obj: Any) -> bytes:
    """Plain pickle of ``obj`` (for hostile-pickle tests)."""
    buf = io.BytesIO()
    pickle.dump(obj, buf, protocol=2)
    return buf.getvalue()


def main() -> None:
    """Regenerate the committed key lists."""
    KEYS_DIR.mkdir(parents=True, exist_ok=True)
    for name, kwargs in SPECS.items():
        (KEYS_DIR / name).write_text(format_spec(densenet121_spec(**kwargs)), encoding="utf-8")


if __name__ == "__main__":
    main()


# --------------------------------------------------------------------------- local HTTP server


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (ephemeral port); yields the base URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
