"""Preprocessing cache: decode, window and resize every image once.

Decoding DICOM (JPEG 2000!) or PNG and resizing dominate the cost of a training step
on a GPU; the cache does it once and stores the resized [0, 1] display images as a
compact ``uint8`` or ``uint16`` array in ``images.npy`` (read back as a memory map, so
a 112,120-image cache at 256 px takes 7 GB on disk and almost no RAM).  ``index.json``
holds the keys in row order, the size, the dtype and a fingerprint of the source
files (path, size, mtime) and of the loader; a cache whose fingerprint differs is
rebuilt, never silently reused.

The stored image is ``round(resize_image(display, size) * max)`` where ``resize_image``
is :func:`chexnet_dicom.transforms.resize_image`, the same resize inference uses (see
:func:`chexnet_dicom.transforms.prepare_model_input`); the only difference from the
inference input is the quantisation step (1/255 or 1/65535).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.errors import ConfigError, InputError
from chexnet_dicom.logs import phi_ref
from chexnet_dicom.train.data import Record, read_training_image
from chexnet_dicom.transforms import decode_target_size, resize_image

__all__ = ["CACHE_VERSION", "ImageCache", "build_cache", "quantise"]

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: DICOM decoded at decode_target_size (twice the cache size)
CacheDtype = Literal["uint8", "uint16"]
_MAX = {"uint8": 255.0, "uint16": 65535.0}


def quantise(image: np.ndarray, dtype: CacheDtype) -> np.ndarray:
    """Map a [0, 1] float image to ``uint8``/``uint16`` with rounding."""
    top = _MAX[dtype]
    return np.clip(np.rint(np.asarray(image, np.float32) * top), 0, top).astype(dtype)


def _fingerprint(records: Sequence[Record], size: int, dtype: str) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{dtype}|resize_image:bilinear-F".encode())
    for r in records:
        try:
            st = os.stat(r.path)
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{r.key}|{r.path}|{stamp}\n".encode())
    return h.hexdigest()


def _prepare_one(args: tuple[str, int, str]) -> np.ndarray:
    path, size, dtype = args
    image = read_training_image(path, target_size=decode_target_size(size))
    return quantise(resize_image(image, size), dtype)  # type: ignore[arg-type]


class ImageCache:
    """A built cache: ``len(cache)`` images of ``size x size`` addressed by row or key.

    Parameters
    ----------
    directory
        Folder holding ``images.npy`` and ``index.json``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        index_path = self.directory / "index.json"
        try:
            self.index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"no readable cache index at {index_path}: {exc}") from exc
        self.keys: list[str] = list(self.index["keys"])
        self.size: int = int(self.index["size"])
        self.dtype: str = str(self.index["dtype"])
        self.scale = 1.0 / _MAX[self.dtype]
        self.array = np.load(self.directory / "images.npy", mmap_mode="r")
        if self.array.shape != (len(self.keys), self.size, self.size):
            raise ConfigError(f"cache {self.directory} is inconsistent; delete it to rebuild")
        self._row = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, key: str) -> int:
        """Row of ``key`` in :attr:`array`."""
        return self._row[key]

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of several keys."""
        return np.asarray([self._row[k] for k in keys], dtype=np.int64)

    def image(self, row: int) -> np.ndarray:
        """The cached image of ``row`` as float32 in [0, 1]."""
        return np.asarray(self.array[row], dtype=np.float32) * np.float32(self.scale)

    def load_all(self) -> np.ndarray:
        """Read the whole array into memory (small datasets)."""
        return np.array(self.array)


def build_cache(
    records: Sequence[Record],
    directory: str | os.PathLike[str],
    *,
    size: int,
    dtype: CacheDtype = "uint8",
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ImageCache:
    """Build (or reuse, when its fingerprint matches) the cache of ``records``.

    Parameters
    ----------
    records
        Images to cache, in row order.
    directory
        Output folder (created).
    size
        Side of the stored square images (the recipe's ``resize``).
    dtype
        ``"uint8"`` (8-bit sources such as NIH PNGs) or ``"uint16"`` (DICOM).
    workers
        Decoding processes (0 = in this process).
    progress
        Called with the number of images just finished.

    Returns
    -------
    ImageCache
        The opened cache.

    Raises
    ------
    InputError
        When an image cannot be decoded (the message names it by a PHI-safe reference).
    """
    if dtype not in _MAX:
        raise ConfigError(f"cache dtype must be uint8 or uint16, not {dtype!r}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(records, size, dtype)
    index_path = out / "index.json"
    if index_path.is_file():
        try:
            old = json.loads(index_path.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        if old.get("fingerprint") == fp and (out / "images.npy").is_file():
            log.info("reusing preprocessing cache in %s (%d images)", out, len(records))
            return ImageCache(out)
        index_path.unlink()
    jobs = [(str(r.path), size, dtype) for r in records]

    def fill(tmp: Path) -> None:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(records), size, size))
        if workers > 0:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for i, img in enumerate(pool.map(_prepare_one, jobs, chunksize=16)):
                    arr[i] = img
                    if progress:
                        progress(1)
        else:
            for i, job in enumerate(jobs):
                try:
                    arr[i] = _prepare_one(job)
                except InputError as exc:
                    raise type(exc)(
                        f"cannot cache image {phi_ref(records[i].key)}: {exc}", reason=exc.reason
                    ) from exc
                if progress:
                    progress(1)
        arr.flush()
        del arr

    atomic_write(out / "images.npy", fill)
    index = {
        "version": CACHE_VERSION,
        "size": size,
        "dtype": dtype,
        "fingerprint": fp,
        "keys": [r.key for r in records],
    }
    atomic_write(index_path, json.dumps(index))
    log.info("built preprocessing cache in %s (%d images, %d px, %s)", out, len(records), size, dtype)
    return ImageCache(out)
