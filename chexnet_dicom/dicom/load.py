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

Crossing a process boundary
---------------------------
A live pydicom dataset is not plain data: a converted value may hold a local function
(pydicom wraps an implicit-VR LUT Descriptor in a ``MultiValue`` around one), and then
it cannot be pickled.  What a decode worker, a node worker or a Ray task receives is an
:class:`ImageFile` instead (:func:`image_file` of the scan's header): the path, where the
pixel data starts and the raw header bytes when the reader kept them.  The worker parses
those bytes with the same safe reader, and what it sends back is the display image and
the model input (numpy arrays and a dictionary); the caller pairs them with the header it
already holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import BinaryIO

from pydicom.dataset import Dataset

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.decode import decode_stored
from chexnet_dicom.dicom.pixels import DisplayImage, render
from chexnet_dicom.dicom.read import (
    PixelLocation,
    ScannedHeader,
    header_from_raw,
    read_dataset,
    read_header,
    read_pixels,
    without_pixels,
)

__all__ = ["ImageFile", "ImageSource", "LoadedImage", "image_file", "load_image"]


@dataclass(frozen=True)
class ImageFile:
    """Where one image is, as plain data: what crosses a process boundary instead of a dataset.

    Attributes
    ----------
    path
        The file.
    location
        Where its pixel data starts (and the file's size and mtime when the header was
        read); None for a deflated file, whose pixels need a full read.
    header
        The file's bytes up to the pixel data when the scan kept them; None: the worker
        reads the header from the file again.
    """

    path: str
    location: PixelLocation | None = None
    header: bytes | None = field(default=None, repr=False)

    def scanned(self, config: IngestConfig | None = None) -> ScannedHeader:
        """The header again, parsed by the safe reader (from the kept bytes, else from the file).

        Raises
        ------
        InputError
            As :func:`~chexnet_dicom.dicom.read.read_header`.
        """
        limits = (config or IngestConfig()).limits
        if self.header is not None and self.location is not None:
            return header_from_raw(self.header, self.location, limits=limits)
        return read_header(self.path, limits=limits)


def image_file(scanned: ScannedHeader, path: str | os.PathLike[str] | None = None) -> ImageFile:
    """The :class:`ImageFile` of a header the scan read (picklable whatever the header holds).

    Parameters
    ----------
    scanned
        The scan's header.
    path
        The file, when the header does not know it (read from bytes).

    Raises
    ------
    TypeError
        The header was read from bytes or a stream and no path is given.
    """
    where = (
        scanned.location.path if scanned.location is not None else getattr(scanned.dataset, "filename", None)
    )
    if path is not None:
        where = os.fspath(path)
    if not isinstance(where, str) or not where:
        raise TypeError("a header read from bytes or a stream has no file a worker could read")
    return ImageFile(where, scanned.location, scanned.raw)


#: What :func:`load_image` reads from.
ImageSource = str | os.PathLike[str] | bytes | BinaryIO | Dataset | ScannedHeader | ImageFile


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
        data), the :class:`~chexnet_dicom.dicom.read.ScannedHeader` the scan read, or
        an :class:`ImageFile` (what a worker process receives).
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
    if isinstance(source, ImageFile):
        source = source.scanned(cfg)
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
    display = render(ds, stored, policy=cfg.pixels, max_grid_side=cfg.limits.max_grid_side)
    return LoadedImage(dataset=without_pixels(ds), display=display)
