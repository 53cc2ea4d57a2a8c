"""``write_outputs``: a study's built outputs into its folder, each file atomically.

Every file goes through :func:`chexnet_dicom.atomic.atomic_write` (unique temporary,
fsync, rename, folder fsync), the overlays and previews first and ``result.json`` last,
so a folder whose sidecar is there holds the complete set.  Overlays and previews of an
earlier run that the new result no longer has (``sc-*``/``preview-*`` names only) are
removed, so the folder always shows one result.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.dicom.read import read_dataset
from chexnet_dicom.errors import InputError
from chexnet_dicom.outputs.build import SIDECAR_NAME, SR_NAME, StudyOutputs
from chexnet_dicom.outputs.identity import series_uid
from chexnet_dicom.outputs.sr import sr_uid
from chexnet_dicom.results import StudyResult

__all__ = ["PNG_COMPRESS_LEVEL", "earlier_sr", "write_dataset", "write_outputs", "write_png"]

logger = logging.getLogger(__name__)

#: zlib level of the PNG previews: 1 writes several times faster than Pillow's default 6
#: for files about 10 % larger (the pixels are the same: PNG is lossless).
PNG_COMPRESS_LEVEL = 1

_OUR_NAMES = re.compile(r"(sc-\d+-[a-z0-9-]+\.dcm|preview-\d+-[a-z0-9-]+\.png)")


def write_dataset(ds: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` as a DICOM Part 10 file, atomically.

    Parameters
    ----------
    ds
        A dataset with file meta information.
    path
        Destination file.

    Returns
    -------
    Path
        The written file.
    """
    return atomic_write(path, lambda tmp: pydicom.dcmwrite(tmp, ds, enforce_file_format=True))


def write_png(rgb: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write an RGB (or grey) uint8 array as a PNG, atomically.

    Returns
    -------
    Path
        The written file.
    """
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL))


def write_outputs(outputs: StudyOutputs, folder: str | os.PathLike[str]) -> list[Path]:
    """Write a study's outputs into ``folder`` (created if needed).

    Parameters
    ----------
    outputs
        From :func:`chexnet_dicom.outputs.build.build_outputs`.
    folder
        The study's output folder.

    Returns
    -------
    list of Path
        The files written, in the order written.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, sc in outputs.overlays:
        written.append(write_dataset(sc, out / name))
    for name, rgb in outputs.previews:
        written.append(write_png(rgb, out / name))
    if outputs.sr is not None:
        written.append(write_dataset(outputs.sr, out / SR_NAME))
    written.append(atomic_write(out / SIDECAR_NAME, outputs.sidecar_text))
    keep = set(outputs.names)
    for stale in sorted(out.iterdir()):
        if _OUR_NAMES.fullmatch(stale.name) and stale.name not in keep and stale.is_file():
            stale.unlink()
            logger.info("removed %s of an earlier result of this study", stale.name)
    return written


def earlier_sr(folder: str | os.PathLike[str], result: StudyResult) -> list[Dataset]:
    """The SR an earlier run wrote for this study into ``folder``, when the new one supersedes it.

    An SR in ``folder`` is earlier when it belongs to the same study, lies in this model's
    SR series (same weights) and describes other instances than ``result`` (the study
    gained or lost images): the new SR then lists it in PredecessorDocumentsSequence.  An
    SR of the same instances is the same document (same UID) and is simply rewritten.

    Parameters
    ----------
    folder
        The study's output folder.
    result
        The new analysis of the study.

    Returns
    -------
    list of Dataset
        Zero or one SR.
    """
    path = Path(folder) / SR_NAME
    if not path.is_file():
        return []
    try:
        old = read_dataset(path)
    except InputError:
        logger.warning("an unreadable %s in the output folder is replaced", SR_NAME)
        return []
    sha = result.card.weights_sha256
    with_header = [s for s in result.skipped if s.dataset is not None]
    if (
        str(old.get("StudyInstanceUID", "")) != result.study_uid
        or str(old.get("SeriesInstanceUID", "")) != series_uid("sr", result.study_uid, sha)
        or str(old.get("SOPInstanceUID", "")) == sr_uid(result.images, with_header, sha)
    ):
        return []
    return [old]
