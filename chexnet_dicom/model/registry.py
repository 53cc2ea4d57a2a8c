"""Registry of published DenseNet-121 / CheXNet checkpoints and how to verify them.

Each entry names the file's URL, its on-disk format and the strongest hash its
publisher makes available:

* ``sha256``: a full SHA-256,
* ``sha256-prefix``: the first hex digits of the SHA-256 embedded in the file name,
  which is what torchvision checks (``torch.hub.download_url_to_file(..., hash_prefix)``
  with the prefix parsed from ``<name>-<hash>.pth``: ``digest[:len(prefix)] == prefix``),
* ``git-blob-sha1``: the git object id of a file committed to a GitHub repository,
  ``sha1(b"blob <size>\\0" + content)``, as shown by ``git ls-tree`` or the GitHub API.

Files are cached under ``$CHEXDCM_CACHE`` (default ``~/.cache/chexnet-dicom``):
``downloads/<filename>`` for the published file, ``bundles/<name>/`` for its
conversion into the project's own safetensors + card format.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chexnet_dicom.errors import WeightsError
from chexnet_dicom.model.card import CARD_SUFFIX

__all__ = [
    "DEFAULT_CHECKPOINT",
    "REGISTRY",
    "CheckpointEntry",
    "HashSpec",
    "bundle_dir",
    "cache_dir",
    "download_path",
    "file_digests",
    "get_entry",
    "git_blob_sha1",
    "verify_file",
]

HashKind = Literal["sha256", "sha256-prefix", "git-blob-sha1"]
FormatName = Literal["torchvision-imagenet", "arnoweng", "reproduce-chexnet"]

#: Registry entry used as the cached default by ``resolve_weights``.
DEFAULT_CHECKPOINT = "arnoweng-chexnet"


@dataclass(frozen=True)
class HashSpec:
    """A published hash of a file.

    Attributes
    ----------
    kind
        ``"sha256"``, ``"sha256-prefix"`` or ``"git-blob-sha1"``.
    value
        Lower-case hex digest (or digest prefix).
    """

    kind: HashKind
    value: str

    def __post_init__(self) -> None:
        v = self.value
        lengths = {"sha256": (64,), "git-blob-sha1": (40,), "sha256-prefix": tuple(range(8, 64))}
        if self.kind not in lengths:
            raise WeightsError(f"unknown hash kind {self.kind!r}")
        if len(v) not in lengths[self.kind] or any(c not in "0123456789abcdef" for c in v):
            raise WeightsError(f"{self.kind} value {v!r} is not a lower-case hex digest of the right length")

    def describe(self) -> str:
        """Return e.g. ``"git blob SHA-1 14922ae7..."``."""
        names = {"sha256": "sha256", "sha256-prefix": "sha256 prefix", "git-blob-sha1": "git blob SHA-1"}
        return f"{names[self.kind]} {self.value}"


@dataclass(frozen=True)
class CheckpointEntry:
    """A published checkpoint.

    Attributes
    ----------
    name
        Registry key used by ``chexdcm weights fetch NAME``.
    url
        Where the file is published.
    filename
        Name of the file in the download cache.
    format
        Loader to use (see :mod:`chexnet_dicom.model.weights`).
    hash
        Published hash, or None when the publisher gives none (fetch then needs ``--sha256``).
    size
        Exact size in bytes when published, else None.
    max_bytes
        Download cap.
    description
        One line for ``chexdcm weights list``.
    chexnet
        True for 14-finding CheXNet models, False for initialisation-only weights.
    """

    name: str
    url: str
    filename: str
    format: FormatName
    hash: HashSpec | None
    size: int | None
    max_bytes: int
    description: str
    chexnet: bool = True


REGISTRY: dict[str, CheckpointEntry] = {
    e.name: e
    for e in (
        CheckpointEntry(
            name="torchvision-densenet121",
            url="https://download.pytorch.org/models/densenet121-a639ec97.pth",
            filename="densenet121-a639ec97.pth",
            format="torchvision-imagenet",
            # torchvision publishes only the sha256 prefix in the file name and checks that.
            hash=HashSpec("sha256-prefix", "a639ec97"),
            size=None,
            max_bytes=64 << 20,
            description="torchvision ImageNet DenseNet-121 (initialisation only; 1000-class head dropped)",
            chexnet=False,
        ),
        CheckpointEntry(
            name="arnoweng-chexnet",
            url="https://github.com/arnoweng/CheXNet/raw/master/model.pth.tar",
            filename="model.pth.tar",
            format="arnoweng",
            hash=HashSpec("git-blob-sha1", "14922ae7de18767793f6ac85cf51df950327d96c"),
            size=None,
            max_bytes=128 << 20,
            description="arnoweng/CheXNet model.pth.tar (PyTorch 0.3; resize 256 + TenCrop 224)",
        ),
        CheckpointEntry(
            name="reproduce-chexnet",
            url="https://github.com/jrzech/reproduce-chexnet/raw/master/pretrained/checkpoint",
            filename="reproduce-chexnet-checkpoint",
            format="reproduce-chexnet",
            hash=None,  # no hash published: pass --sha256 to fetch after checking the file yourself
            size=None,
            max_bytes=256 << 20,
            description="jrzech/reproduce-chexnet pretrained/checkpoint (pickled model; resize 224)",
        ),
    )
}


def get_entry(name: str) -> CheckpointEntry:
    """Return the registry entry ``name`` or raise a WeightsError listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(
            f"unknown checkpoint {name!r}; known: {', '.join(sorted(REGISTRY))} (see `chexdcm weights list`)"
        ) from None


def cache_dir() -> Path:
    """Return the cache root: ``$CHEXDCM_CACHE`` or ``~/.cache/chexnet-dicom``."""
    env = os.environ.get("CHEXDCM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "chexnet-dicom"


def download_path(entry: CheckpointEntry) -> Path:
    """Where the published file of ``entry`` lives in the cache (also for manual placement)."""
    return cache_dir() / "downloads" / entry.filename


def bundle_dir(entry: CheckpointEntry) -> Path:
    """Folder of the converted safetensors + card bundle of ``entry``."""
    return cache_dir() / "bundles" / entry.name


def bundle_card(entry: CheckpointEntry) -> Path:
    """The card of ``entry``'s converted bundle in the cache (``<name>.card.json``)."""
    return bundle_dir(entry) / f"{entry.name}{CARD_SUFFIX}"


def git_blob_sha1(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the git object id of a file: ``sha1(b"blob <size>\\0" + content)``."""
    p = Path(path)
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % p.stat().st_size)
    with p.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_digests(path: str | Path, chunk: int = 1 << 20) -> dict[str, str]:
    """Return ``{"sha256": ..., "git-blob-sha1": ...}`` of a file in one pass."""
    p = Path(path)
    sha = hashlib.sha256()
    blob = hashlib.sha1(usedforsecurity=False)
    blob.update(b"blob %d\0" % p.stat().st_size)
    with p.open("rb") as fh:
        while block := fh.read(chunk):
            sha.update(block)
            blob.update(block)
    return {"sha256": sha.hexdigest(), "git-blob-sha1": blob.hexdigest()}


def verify_file(
    path: str | Path, spec: HashSpec, *, size: int | None = None, advice: str | None = None
) -> dict[str, str]:
    """Check a file against a published hash (and size when known).

    Parameters
    ----------
    path
        The file.
    spec
        The published hash.
    size
        The published size in bytes, if any.
    advice
        What the user should do on a mismatch (default: delete the file and fetch it again).

    Returns
    -------
    dict
        The file's ``sha256`` and ``git-blob-sha1``.

    Raises
    ------
    WeightsError
        On a size or hash mismatch (the message names both values).
    """
    p = Path(path)
    todo = advice or f"delete {p} and fetch it again"
    actual_size = p.stat().st_size
    if size is not None and actual_size != size:
        raise WeightsError(
            f"{p.name} is {actual_size} bytes, the publisher says {size}: the file is truncated or "
            f"not the published one; {todo}"
        )
    digests = file_digests(p)
    if spec.kind == "sha256-prefix":
        ok = digests["sha256"].startswith(spec.value)
        actual = digests["sha256"][: len(spec.value)]
    else:
        actual = digests[spec.kind]
        ok = actual == spec.value
    if not ok:
        raise WeightsError(
            f"{spec.describe()} expected for {p.name}, the file has {actual}: it is corrupt or was "
            f"tampered with; {todo}"
        )
    return digests
