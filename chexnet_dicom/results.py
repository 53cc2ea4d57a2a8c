"""The result vocabulary: one name per record, from the scan to the written outputs.

=====================  ================================================================
record                 what it is
=====================  ================================================================
``Instance``           a file the scan read (header once, gate decision, where its
                       pixels start) -- :mod:`chexnet_dicom.dicom.study`
``Skipped``            a file that is not analysed, with its reason -- same module
``LoadedImage``        a decoded and rendered image (``load_image``) --
                       :mod:`chexnet_dicom.dicom.load`
``Prediction``         the model's output for one image -- :mod:`chexnet_dicom.model.prediction`
:class:`ImageResult`   an analysed image: its header, display image and prediction, with
                       heatmaps mapped to the source grid on demand
:class:`StudyResult`   everything one study's analysis produced, or why it failed
=====================  ================================================================

Heatmaps are lazy: :meth:`ImageResult.heatmap` maps one finding's class activation map
to the source pixel grid when an output needs it (the SR regions of positive findings,
the overlay's finding), never all 14 at full resolution for every image.

Heatmap method: relative evidence
---------------------------------
The class activation map of finding *c* (Zhou et al. 2016; for this head it equals
Grad-CAM at the last feature layer, Selvaraju et al. 2017) is the finding's logit
contribution at each location of the 7x7 feature grid: the logit is its mean plus the
bias.  :meth:`ImageResult.evidence_grid` keeps the part of each location's contribution
*above the image's own mean* (the locations that raise the logit, as Grad-CAM keeps the
positive part with its ReLU) and divides it by its maximum, so 1 marks the location
that raises the finding's logit most and 0 the image average or below.  The map is
drawn and outlined only for findings present at their operating point, and only where
it reaches the card's ``cam_threshold`` (0.5: the locations contributing at least half
as much above the average as the strongest one).  A fixed global scale (the
previous method) left most maps blank: the demo model's activation maps are below zero
everywhere on most images, and an absolute scale clips them to nothing.


Study-level summary
-------------------
With several analysed images in one study, the study-level probability of a finding is
the **maximum** over the images (a finding visible on any frontal image is present in
the study); :func:`study_summary` also names the image that gave it.  Present / absent
uses the model card's operating point on that maximum.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from chexnet_dicom.dicom.pixels import DisplayImage
from chexnet_dicom.dicom.study import Skipped
from chexnet_dicom.errors import OutputError
from chexnet_dicom.model.cam import evidence_on_display, relative_evidence
from chexnet_dicom.model.card import ModelCard, Preprocessing
from chexnet_dicom.model.labels import LABELS, NUM_CLASSES
from chexnet_dicom.model.prediction import Prediction
from chexnet_dicom.vocab import Vocabulary

__all__ = [
    "FAILURE_REASONS",
    "Failure",
    "FindingSummary",
    "ImageResult",
    "StudyFailure",
    "StudyResult",
    "study_ref",
    "study_summary",
]


class StudyFailure(Vocabulary):
    """Why a whole study failed: the reason codes of :class:`Failure` (besides input reason codes)."""

    INFERENCE_FAILED = "INFERENCE_FAILED"
    OUTPUT_FAILED = "OUTPUT_FAILED"
    WRITE_FAILED = "WRITE_FAILED"
    NO_INSTANCES = "NO_INSTANCES"
    INTERNAL = "INTERNAL"


#: Why a whole study failed (the reason codes of :class:`Failure`), with their meaning.
FAILURE_REASONS: dict[str, str] = {
    StudyFailure.INFERENCE_FAILED: "the model could not produce a valid result for an image of the study",
    StudyFailure.OUTPUT_FAILED: "the DICOM results could not be built (the study's headers break a rule)",
    StudyFailure.WRITE_FAILED: "the results could not be written (disk full, permissions)",
    StudyFailure.NO_INSTANCES: "the node: none of the study's instances could be read when its analysis ran",
    StudyFailure.INTERNAL: "an unexpected failure (please report it)",
}

_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def study_ref(study_instance_uid: str) -> str:
    """Deterministic, path-safe name of a study: ``study-`` + 12 hex digits of sha256.

    Never the raw UID (UIDs and patient names must not become path components).
    """
    digest = hashlib.sha256(f"chexnet-dicom:study:{study_instance_uid}".encode()).hexdigest()
    return f"study-{digest[:12]}"


@dataclass(frozen=True)
class ImageResult:
    """One analysed image.

    Attributes
    ----------
    path
        The source file (shown to the user who named it; never logged).
    dataset
        The source header without pixel data (the outputs reference and copy it).
    display
        The display image the model saw, with its provenance.
    prediction
        Probabilities, thresholds and CAMs (model-input grid, ``cam_scale`` units).
    preprocessing
        How the display image became the model input (the CAMs' geometry).
    carried
        The image was analysed for an earlier version of the study's results and only
        its prediction and geometry were kept (:func:`chexnet_dicom.node.carry.restore_image`):
        the SR covers it again, but its pixels are gone, so no overlay is rebuilt.
    """

    path: str
    dataset: Dataset = field(repr=False)
    display: DisplayImage = field(repr=False)
    prediction: Prediction = field(repr=False)
    preprocessing: Preprocessing = field(repr=False)
    carried: bool = False
    _maps: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        probs = np.asarray(self.prediction.probabilities)
        if probs.shape != (NUM_CLASSES,) or not np.all(np.isfinite(probs)):
            raise OutputError(
                f"prediction must hold {NUM_CLASSES} finite probabilities, got shape {probs.shape}"
            )
        if tuple(self.prediction.labels) != LABELS:
            raise OutputError("prediction labels are not the 14 CheXNet findings in order")
        for kw in _REQUIRED_UIDS:
            if not str(self.dataset.get(kw, "") or ""):
                raise OutputError(f"source instance lacks {kw}; cannot reference it from a result")

    @property
    def flags(self) -> tuple[str, ...]:
        """Ingest provenance flags (e.g. a header that lied)."""
        return tuple(self.display.flags)

    @property
    def has_heatmaps(self) -> bool:
        """Whether the prediction carries class activation maps."""
        return self.prediction.cams is not None

    @property
    def source_shape(self) -> tuple[int, int]:
        """(Rows, Columns) of the source image."""
        return self.display.source_shape

    def evidence_grid(self, k: int) -> np.ndarray | None:
        """Finding ``k``'s relative evidence on the model's feature grid (see the module docstring).

        Returns
        -------
        numpy.ndarray or None
            float32, the CAMs' shape for one finding ((h, w), or (10, h, w) with TenCrop),
            in [0, 1]; None when the map is flat (no location stands out).

        Raises
        ------
        OutputError
            When the prediction carries no CAMs.
        """
        cams = self.prediction.cams
        if cams is None:
            raise OutputError("the prediction carries no CAMs; run the predictor with cams=True")
        return relative_evidence(cams, k)

    def display_heatmap(self, k: int) -> np.ndarray | None:
        """Finding ``k``'s relative evidence on the display grid, in [0, 1]; None when flat."""
        grid = self.evidence_grid(k)
        if grid is None:
            return None
        return evidence_on_display(grid, self.preprocessing, self.display.image.shape)

    def heatmap(self, k: int) -> np.ndarray | None:
        """Finding ``k``'s relative evidence on the source pixel grid (Rows, Columns), in [0, 1].

        Mapped back through the display orientation; computed on first use and kept.
        None when the map is flat (no location stands out).
        """
        if k not in self._maps:
            shown = self.display_heatmap(k)
            if shown is None:
                return None
            self._maps[k] = np.clip(self.display.to_source_grid(shown), 0.0, 1.0).astype(np.float32)
        return self._maps[k]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no PHI beyond the path the user passed)."""
        prov = self.display.provenance
        return {
            "path": self.path,
            "probabilities": self.prediction.as_dict(),
            "thresholds": {n: float(t) for n, t in zip(LABELS, self.prediction.thresholds, strict=True)},
            "present": [n for n, p in zip(LABELS, self.prediction.present, strict=True) if p],
            "ood": self.prediction.ood_dict(),
            "precision": self.prediction.precision,
            "device": self.prediction.device,
            "backend": self.prediction.backend,
            "display_shape": list(self.display.image.shape),
            "source_shape": list(self.display.source_shape),
            "decode_path": prov.get("decode_path", ""),
            "flags": list(self.flags),
            "steps": list(prov.get("steps", [])),
        }


@dataclass(frozen=True)
class FindingSummary:
    """A finding at study level (:func:`study_summary`).

    Attributes
    ----------
    probability
        Maximum probability over the analysed images.
    image_index
        0-based index of the image that gave it.
    threshold
        The finding's operating point.
    present
        ``probability >= threshold``.
    """

    probability: float
    image_index: int
    threshold: float
    present: bool


def study_summary(images: Sequence[ImageResult]) -> dict[str, FindingSummary]:
    """Study-level summary: per finding the maximum probability over the images.

    Returns
    -------
    dict
        Finding -> :class:`FindingSummary`, in label order; empty without images.
    """
    if not images:
        return {}
    probs = np.stack([np.asarray(im.prediction.probabilities, dtype=np.float64) for im in images])
    out: dict[str, FindingSummary] = {}
    for k, name in enumerate(LABELS):
        i = int(np.argmax(probs[:, k]))
        thr = float(images[i].prediction.thresholds[k])
        p = float(probs[i, k])
        out[name] = FindingSummary(probability=p, image_index=i, threshold=thr, present=bool(p >= thr))
    return out


@dataclass(frozen=True)
class Failure:
    """Why a study has no results.

    Attributes
    ----------
    reason
        A code of :data:`FAILURE_REASONS`, or an input reason code.
    message
        What went wrong and what to do (no PHI, no traceback).
    stage
        Where: ``"load"``, ``"predict"``, ``"assemble"``, ``"outputs"`` or ``"write"``.
    """

    reason: str
    message: str
    stage: str


@dataclass(frozen=True)
class StudyResult:
    """Everything one study's analysis produced.

    Attributes
    ----------
    study_uid
        StudyInstanceUID (never shown; :attr:`ref` is).
    card
        The model card of the weights that produced it.
    images
        Analysed images, in the order of the selection rule.
    skipped
        Files of the study that were not analysed, with reasons.
    failure
        Set when the study as a whole failed (then it has no outputs).
    timings
        Seconds per stage: ``read`` (scan share, read, decode, render), ``predict``
        (model input, forward pass), and ``write`` once written.
    """

    study_uid: str = field(repr=False)
    card: ModelCard = field(repr=False)
    images: tuple[ImageResult, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    failure: Failure | None = None
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def ref(self) -> str:
        """Path-safe study reference (:func:`study_ref`)."""
        return study_ref(self.study_uid)

    @property
    def failed(self) -> bool:
        """Whether the study as a whole failed."""
        return self.failure is not None

    @property
    def summary(self) -> dict[str, FindingSummary]:
        """:func:`study_summary` of the analysed images."""
        return study_summary(self.images)

    def with_failure(self, failure: Failure) -> StudyResult:
        """The same study, failed (its images are dropped: nothing of it is written)."""
        return dataclasses.replace(self, images=(), failure=failure)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of the study's results."""
        return {
            "study": self.ref,
            "images": [im.to_dict() for im in self.images],
            "skipped": [s.to_dict() for s in self.skipped],
            "summary": {name: dataclasses.asdict(s) for name, s in self.summary.items()},
            "failure": dataclasses.asdict(self.failure) if self.failure else None,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
