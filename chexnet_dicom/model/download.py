"""Verified, atomic, cached download of published checkpoints.

The file is streamed into a unique temporary file in the destination folder
(:func:`chexnet_dicom.atomic.atomic_write`), capped at the entry's ``max_bytes``, checked
against the published hash, and only then fsync'ed and renamed onto ``<dest>`` (and the
folder fsync'ed).  Any failure removes the partial file, so the cache only ever holds
verified files.  A file that
already sits at the destination (downloaded earlier or placed there by hand) is
verified and used without touching the network.
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from pathlib import Path

from chexnet_dicom import __version__
from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.errors import WeightsError
from chexnet_dicom.model.registry import CheckpointEntry, HashSpec, download_path, verify_file

__all__ = ["DEFAULT_TIMEOUT_S", "fetch_file", "manual_placement_hint"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


def manual_placement_hint(entry: CheckpointEntry, spec: HashSpec | None, dest: Path) -> str:
    """Text telling the user where to put the file by hand and how it will be checked."""
    check = f"it must match the {spec.describe()}" if spec is not None else "pass --sha256 after checking it"
    return (
        f"download {entry.url} on a machine with internet access and copy it to {dest} "
        f"({check}); then run `chexdcm weights fetch {entry.name}` again, which verifies it offline"
    )


def _stream(url: str, out: Path, *, max_bytes: int, timeout: float) -> int:
    if not url.startswith(("https://", "http://")):
        raise WeightsError(f"refusing to download from {url!r}: only http(s) URLs are allowed")
    req = urllib.request.Request(url, headers={"User-Agent": f"chexnet-dicom/{__version__}"})
    total = 0
    with urllib.request.urlopen(req, timeout=timeout) as resp, out.open("wb") as fh:
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise WeightsError(f"{url} announces {declared} bytes, above the {max_bytes}-byte cap")
        while block := resp.read(_CHUNK):
            total += len(block)
            if total > max_bytes:
                raise WeightsError(f"{url} sent more than the {max_bytes}-byte cap; refusing it")
            fh.write(block)
        if declared is not None and declared.isdigit() and total != int(declared):
            raise WeightsError(f"download of {url} stopped after {total} of {declared} bytes; try again")
    return total


def fetch_file(
    entry: CheckpointEntry,
    *,
    dest: Path | None = None,
    expected: HashSpec | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Return a verified local copy of a published checkpoint, downloading it if needed.

    Parameters
    ----------
    entry
        The registry entry.
    dest
        Target file; default :func:`~chexnet_dicom.model.registry.download_path`.
    expected
        Extra hash to check (required when the entry publishes none); the published
        hash is always checked too.
    timeout
        Socket timeout in seconds.

    Returns
    -------
    Path
        The verified file.

    Raises
    ------
    WeightsError
        No hash to verify against, a network failure (the message says where to put
        the file by hand), an oversized answer, or a hash/size mismatch.
    """
    specs = [s for s in (entry.hash, expected) if s is not None]
    target = dest or download_path(entry)
    if not specs:
        raise WeightsError(
            f"{entry.name} has no published hash, so it cannot be downloaded verified; "
            f"check the file yourself and pass its sha256 with --sha256, or "
            f"`chexdcm weights import {entry.format} FILE --out DIR` ({entry.url})"
        )
    spec = specs[0]
    if target.is_file():
        log.info("verifying cached %s", entry.name)
        for s in specs:
            verify_file(target, s, size=entry.size)
        return target
    received = 0

    def download_and_verify(tmp: Path) -> None:
        # Streamed into the atomic temporary file and verified there: only a file that
        # matches its published hash is ever renamed onto the target.
        nonlocal received
        try:
            received = _stream(entry.url, tmp, max_bytes=entry.max_bytes, timeout=timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise WeightsError(
                f"cannot download {entry.name} ({why}); offline? "
                + manual_placement_hint(entry, spec, target)
            ) from exc
        for s in specs:
            verify_file(
                tmp,
                s,
                size=entry.size,
                advice=f"nothing was stored; check the source {entry.url} or the network path (proxy, captive portal)",
            )

    log.info("downloading %s from %s", entry.name, entry.url)
    atomic_write(target, download_and_verify)
    log.info("stored %s (%d bytes, verified %s)", entry.name, received, spec.kind)
    return target
