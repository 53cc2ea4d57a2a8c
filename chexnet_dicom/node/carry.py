"""What a node's analysed study leaves for later versions of its results (no pixels).

A study that gains images after its results went out is analysed again (the node keeps
studies open).  Its new SR must cover the earlier images too, whose pixels may be gone
by then (received images are purged after delivery), so each analysed image leaves
behind a :class:`CarriedImage`: the source header and the prediction with the display
geometry that places its heatmaps.  :func:`restore_image` turns one back into an
:class:`~chexnet_dicom.results.ImageResult` (``carried=True``: the SR covers it, no
overlay is rebuilt) and :func:`combine` merges them with the new analysis.

The header bytes come from the listener's one read of each file (kept in the ledger)
(:attr:`~chexnet_dicom.dicom.read.ScannedHeader.raw`): :func:`carry` does not open the
files again.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chexnet_dicom.config import IngestLimits
from chexnet_dicom.dicom.attrs import ordering_int, text
from chexnet_dicom.dicom.pixels import DisplayImage
from chexnet_dicom.dicom.read import read_header
from chexnet_dicom.dicom.study import Skipped, StudyScan
from chexnet_dicom.model.card import ModelCard, Preprocessing
from chexnet_dicom.model.prediction import Prediction
from chexnet_dicom.results import ImageResult, StudyResult

__all__ = [
    "CarriedImage",
    "CarriedSkip",
    "carry",
    "header_bytes",
    "combine",
    "restore_image",
    "restore_skip",
    "source_header",
]


@dataclass(frozen=True)
class CarriedImage:
    """What an analysed image leaves for a later version of its study's results (no pixels).

    Attributes
    ----------
    header
        The source file's bytes up to its pixel data (file meta and header).
    prediction
        The model's output, CAMs included.
    source_shape, display_shape
        (Rows, Columns) of the stored image and of the display image the model saw.
    orientation_ops, decode_factor, provenance
        As in :class:`~chexnet_dicom.dicom.pixels.DisplayImage`.
    """

    header: bytes = field(repr=False)
    prediction: Prediction = field(repr=False)
    source_shape: tuple[int, int]
    display_shape: tuple[int, int]
    orientation_ops: tuple[str, ...] = ()
    decode_factor: int = 1
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class CarriedSkip:
    """An instance a study's analysis did not analyse, kept for later versions of its SR.

    Attributes
    ----------
    header
        The file's bytes up to its pixel data.
    status, reason, message
        As in :class:`~chexnet_dicom.dicom.study.Skipped`.
    """

    header: bytes = field(repr=False)
    status: str
    reason: str
    message: str


def source_header(path: str | os.PathLike[str], limits: IngestLimits | None = None) -> bytes:
    """A file's bytes up to its pixel data: its header, byte for byte, without re-encoding.

    Raises
    ------
    InputError
        The file cannot be read as DICOM.
    """
    scanned = read_header(path, limits=limits)
    with open(path, "rb") as fh:
        if scanned.location is None:  # nothing after the header
            return fh.read((limits or IngestLimits()).max_file_bytes)
        return fh.read(scanned.location.offset)


def header_bytes(found: StudyScan) -> dict[str, bytes | None]:
    """Path -> header bytes of every instance of a scan read with ``keep_raw`` (what :func:`carry` needs)."""
    return {inst.path: inst.scanned.raw for study in found.studies for inst in study.instances}


def carry(
    result: StudyResult,
    limits: IngestLimits | None = None,
    headers: Mapping[str, bytes | None] | None = None,
) -> tuple[dict[str, CarriedImage], dict[str, CarriedSkip]]:
    """What a study's analysed and skipped instances leave behind, by SOP Instance UID.

    Carried images of an earlier version (``carried=True``) are not included: the
    caller still holds them.  Skipped files without a header or whose file is gone are
    left out.

    Parameters
    ----------
    result
        The new analysis.
    limits
        Size caps for a header read again.
    headers
        Path -> the header bytes the scan kept (:func:`header_bytes`); a file missing
        from it (a deflated one, a duplicate copy) is read again (:func:`source_header`).

    Returns
    -------
    images, skipped : dict
    """
    kept = headers or {}

    def header_of(path: str) -> bytes:
        raw = kept.get(path)
        return raw if raw is not None else source_header(path, limits)

    images: dict[str, CarriedImage] = {}
    for im in result.images:
        if im.carried:
            continue
        d = im.display
        images[str(im.dataset.SOPInstanceUID)] = CarriedImage(
            header=header_of(im.path),
            prediction=im.prediction,
            source_shape=(int(d.source_shape[0]), int(d.source_shape[1])),
            display_shape=(int(d.image.shape[0]), int(d.image.shape[1])),
            orientation_ops=tuple(d.orientation_ops),
            decode_factor=int(d.decode_factor),
            provenance=dict(d.provenance),
        )
    skipped: dict[str, CarriedSkip] = {}
    for sk in result.skipped:
        if sk.dataset is None or not sk.path or not os.path.isfile(sk.path):
            continue
        uid = text(sk.dataset, "SOPInstanceUID")
        if uid:
            skipped[uid] = CarriedSkip(header_of(sk.path), sk.status, sk.reason, sk.message)
    return images, skipped


def restore_image(
    carried: CarriedImage, preprocessing: Preprocessing, limits: IngestLimits | None = None
) -> ImageResult:
    """An :class:`~chexnet_dicom.results.ImageResult` again, from what the image left behind.

    Its display image is a zero-strided placeholder of the right shape (no memory): the
    heatmaps and SR regions need only the geometry; ``carried=True`` keeps overlays from
    being rebuilt from it.
    """
    header = read_header(io.BytesIO(carried.header), limits=limits).dataset
    display = DisplayImage(
        image=np.broadcast_to(np.float32(0.0), carried.display_shape),
        source_shape=carried.source_shape,
        orientation_ops=carried.orientation_ops,
        decode_factor=carried.decode_factor,
        provenance=carried.provenance,
    )
    return ImageResult(
        path="",
        dataset=header,
        display=display,
        prediction=carried.prediction,
        preprocessing=preprocessing,
        carried=True,
    )


def restore_skip(carried: CarriedSkip, limits: IngestLimits | None = None) -> Skipped:
    """A :class:`~chexnet_dicom.dicom.study.Skipped` again (its file may be gone)."""
    header = read_header(io.BytesIO(carried.header), limits=limits).dataset
    return Skipped("", carried.status, carried.reason, carried.message, header)  # type: ignore[arg-type]


def _image_order(image: ImageResult) -> tuple[Any, ...]:
    ds = image.dataset
    numbers = [ordering_int(ds, k) for k in ("SeriesNumber", "InstanceNumber")]
    return (
        *((1, 0) if n is None else (0, n) for n in numbers),
        text(ds, "SeriesInstanceUID"),
        text(ds, "SOPInstanceUID"),
    )


def combine(
    study_uid: str,
    card: ModelCard,
    new: StudyResult | None,
    carried_images: Sequence[ImageResult] = (),
    carried_skipped: Sequence[Skipped] = (),
) -> StudyResult:
    """One study's result over its new analysis and what earlier versions left behind.

    An instance analysed anew (a changed copy of an earlier one) replaces its carried
    version; images are in the selection rule's order, skipped files new ones first.

    Parameters
    ----------
    study_uid
        The study.
    card
        The model card.
    new
        The analysis of the instances that arrived since (None: none did); a failed
        one is returned as it is.
    carried_images, carried_skipped
        From :func:`restore_image` and :func:`restore_skip`.
    """
    if new is not None and new.failed:
        return new
    fresh = list(new.images) if new is not None else []
    fresh_skipped = list(new.skipped) if new is not None else []
    seen = {text(im.dataset, "SOPInstanceUID") for im in fresh}
    seen |= {text(s.dataset, "SOPInstanceUID") for s in fresh_skipped if s.dataset is not None}
    images = fresh + [im for im in carried_images if text(im.dataset, "SOPInstanceUID") not in seen]
    analysed = {text(im.dataset, "SOPInstanceUID") for im in images}
    skipped = fresh_skipped + [
        s
        for s in carried_skipped
        if s.dataset is not None and text(s.dataset, "SOPInstanceUID") not in seen | analysed
    ]
    images.sort(key=_image_order)
    return StudyResult(
        study_uid=study_uid,
        card=card,
        images=tuple(images),
        skipped=tuple(skipped),
        timings=dict(new.timings) if new is not None else {},
    )
