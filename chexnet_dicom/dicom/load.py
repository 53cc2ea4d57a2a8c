"""``load_image``: the one function that reads, decodes and renders one image.

:func:`load_image` is module level and takes and returns plain, picklable data, so the
decode that ``chexdcm infer`` runs can run unchanged in a
:class:`~concurrent.futures.ProcessPoolExecutor` worker, a node worker or a Ray task::

    path | bytes | Dataset | ScannedHeader
      -> read (safe reader, header caps before any pixel byte)
      -> decode_stored (reduced resolution where the codec allows, the fastest decoder)
      -> render (Modality LUT, VOI, presentation, orientation, content checks)
      -> LoadedImage(header without pixel data, display image with its provenance)

A :class:`~chexnet_dicom.dicom.read.ScannedHeader` from the scan is completed with
:func:`~chexnet_dicom.dicom.read.read_pixels`: its header is not parsed again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.decode import decode_stored
from chexnet_dicom.dicom.pixels import DisplayImage, render
from chexnet_dicom.dicom.read import ScannedHeader, read_dataset, read_pixels, without_pixels

__all__ = ["ImageSource", "LoadedImage", "load_image"]

#: What :func:`load_image` reads from.
ImageSource = str | os.PathLike[str] | bytes | BinaryIO | Dataset | ScannedHeader


@dataclass(frozen=True)
class LoadedImage:
    """One decoded and rendered image: what the analysis needs of a source file.

    Picklable (numpy arrays, a dictionary and a pixel-free pydicom dataset), so it can
    cross a process boundary.

    Attributes
    ----------
    dataset
        The source header without its pixel data (the outputs reference and copy it).
    display
        The [0, 1] display image the model sees, with its provenance.
    """

    dataset: Dataset
    display: DisplayImage

    @property
    def flags(self) -> tuple[str, ...]:
        """Provenance flags of the rendering (a header that lied, an orientation applied)."""
        return tuple(self.display.flags)


def load_image(
    source: ImageSource,
    *,
    config: IngestConfig | None = None,
    target_size: int | None = None,
) -> LoadedImage:
    """Read, decode and render one DICOM image.

    Parameters
    ----------
    source
        A path, the file's bytes, a binary file object, a full dataset (with its pixel
        data), or the :class:`~chexnet_dicom.dicom.read.ScannedHeader` the scan read.
    config
        Reading limits and pixel policy; defaults when None.
    target_size
        Smallest side the caller needs; with ``config.pixels.fast_path`` the decoder may
        return a reduced image whose sides stay >= ``target_size`` (None: full
        resolution).

    Returns
    -------
    LoadedImage

    Raises
    ------
    InputError
        Any subclass: not DICOM, corrupt header, too large, unsupported codec, corrupt
        pixel data.
    """
    cfg = config or IngestConfig()
    if isinstance(source, Dataset):
        ds = source
    elif isinstance(source, ScannedHeader):
        if source.location is not None:
            ds = read_pixels(source.dataset, source.location, limits=cfg.limits)
        else:  # read from a deflated file: its pixels need a full (inflating) read
            filename = getattr(source.dataset, "filename", None)
            if not isinstance(filename, str):
                raise TypeError("a ScannedHeader read from bytes or a stream has no file to read pixels from")
            ds = read_dataset(filename, limits=cfg.limits)
    else:
        ds = read_dataset(source, limits=cfg.limits)
    stored = decode_stored(ds, limits=cfg.limits, target_size=target_size, fast_path=cfg.pixels.fast_path)
    display = render(ds, stored, policy=cfg.pixels)
    return LoadedImage(dataset=without_pixels(ds), display=display)
