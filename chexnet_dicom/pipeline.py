"""The one analysis path used by ``chexdcm infer``, the listener node and batch runs.

::

    files ─► dicom.study.scan (headers only: gate, group by study, select the images)
          ─► per accepted image: read_dataset ─► decode_stored(target_size=2 x card resize)
             ─► render  (== dicom.pixels.load_display, keeping the dataset for outputs)
          ─► prepare_model_input (the card's preprocessing) ─► TorchPredictor (one forward
             pass: 14 probabilities + 14 CAMs, batched over the study's images)
          ─► heatmaps: cam_to_image_grid ─► fixed global scale, clipped to [0, 1]
             ─► DisplayImage.to_source_grid (native Rows x Columns)
          ─► outputs: TID 1500 SR (+ SC overlays, sidecar) written by :mod:`outputs`

Study-level summary
-------------------
With several analysed images in one study, the study-level probability of a finding is
the **maximum** over the images (a finding visible on any frontal image is present in
the study); :attr:`StudyResult.summary` also names the image that gave it.  Present /
absent uses the model card's operating point on that maximum.

A file that cannot be read, is not a frontal chest radiograph or fails to decode is
listed in :attr:`StudyResult.skipped` with its reason code and message; it never stops
the study.  A :class:`~chexnet_dicom.errors.ModelError` (NaN output, bad weights) does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.decode import decode_stored
from chexnet_dicom.dicom.pixels import DisplayImage, render
from chexnet_dicom.dicom.read import read_dataset
from chexnet_dicom.dicom.study import Skipped, Study, scan
from chexnet_dicom.errors import InputError, OutputError
from chexnet_dicom.logs import phi_ref
from chexnet_dicom.model.cam import cam_to_image_grid, to_display
from chexnet_dicom.model.card import ModelCard, Preprocessing
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.predictor import PredictorBase
from chexnet_dicom.model.result import Prediction
from chexnet_dicom.outputs.common import ImageResult, SkippedInstance, write_dataset
from chexnet_dicom.outputs.sr import build_sr
from chexnet_dicom.preprocess import decode_target_size, prepare_model_input

__all__ = [
    "Analyzer",
    "ImageAnalysis",
    "SkippedFile",
    "StudyResult",
    "study_ref",
    "study_summary",
]

log = logging.getLogger(__name__)


def study_ref(study_instance_uid: str) -> str:
    """Deterministic, path-safe name of a study: ``study-`` + 12 hex digits of sha256.

    Never the raw UID (UIDs and patient names must not become path components).
    """
    digest = hashlib.sha256(f"chexnet-dicom:study:{study_instance_uid}".encode()).hexdigest()
    return f"study-{digest[:12]}"


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not analysed.

    Attributes
    ----------
    path
        The file as found (shown to the user who passed it; never logged).
    reason
        Reason code (gate constants or an :class:`InputError` reason).
    message
        Explanation without PHI.
    status
        ``"skipped"`` (out of scope) or ``"error"`` (defective file).
    dataset
        The header when it could be read (used by the SR's "not analysed" list).
    """

    path: str
    reason: str
    message: str
    status: str = "skipped"
    dataset: Dataset | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (no header)."""
        return {"path": self.path, "status": self.status, "reason": self.reason, "message": self.message}

    @classmethod
    def from_skipped(cls, skipped: Skipped, *, config: IngestConfig | None = None) -> SkippedFile:
        """Convert a :class:`~chexnet_dicom.dicom.study.Skipped`, re-reading its header if possible.

        The header lets the SR list the instance as "not analysed"; an unreadable file
        simply has none.
        """
        header = None
        try:
            header = read_dataset(
                skipped.path, limits=(config or IngestConfig()).limits, stop_before_pixels=True
            )
        except (InputError, OSError):
            header = None
        return cls(skipped.path, skipped.reason, skipped.message, skipped.status, header)


@dataclass
class ImageAnalysis:
    """One analysed image.

    Attributes
    ----------
    path
        Source file.
    dataset
        Full source dataset (the outputs copy Patient/Study modules from it).
    display
        The rendered display image and its provenance.
    prediction
        Probabilities, thresholds and CAMs (model-input grid, ``cam_scale`` units).
    heatmaps
        (14, Rows, Columns) float32 in [0, 1] on the source pixel grid (fixed global
        scale: ``CAM / cam_scale`` clipped), or None when heatmaps were not requested.
    """

    path: str
    dataset: Dataset = field(repr=False)
    display: DisplayImage = field(repr=False)
    prediction: Prediction = field(repr=False)
    heatmaps: np.ndarray | None = field(default=None, repr=False)

    @property
    def flags(self) -> tuple[str, ...]:
        """Ingest provenance flags (e.g. a header that lied)."""
        return tuple(self.display.flags)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no PHI beyond the path the user passed)."""
        prov = self.display.provenance
        return {
            "path": self.path,
            "probabilities": self.prediction.as_dict(),
            "thresholds": {n: float(t) for n, t in zip(LABELS, self.prediction.thresholds, strict=True)},
            "present": [n for n, p in zip(LABELS, self.prediction.present, strict=True) if p],
            "precision": self.prediction.precision,
            "device": self.prediction.device,
            "backend": self.prediction.backend,
            "display_shape": list(self.display.image.shape),
            "source_shape": list(self.display.source_shape),
            "decode_path": prov.get("decode_path", ""),
            "flags": list(self.flags),
            "steps": list(prov.get("steps", [])),
        }


@dataclass
class StudyResult:
    """Everything one study's analysis produced.

    Attributes
    ----------
    ref
        Path-safe study reference (:func:`study_ref`).
    images
        Analysed images, in file order.
    skipped
        Files not analysed, with reasons.
    summary
        Study-level summary (:func:`study_summary`: maximum probability per finding).
    timings
        Seconds spent per stage: ``read`` (header scan share, read, decode, render),
        ``predict`` (model input, forward pass, heatmaps), ``write``.
    outputs
        Files written by :meth:`Analyzer.write`.
    """

    ref: str
    study_instance_uid: str = field(repr=False)
    images: list[ImageAnalysis] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of the study's results."""
        return {
            "study": self.ref,
            "images": [im.to_dict() for im in self.images],
            "skipped": [s.to_dict() for s in self.skipped],
            "summary": self.summary,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "outputs": [str(p) for p in self.outputs],
        }


def study_summary(predictions: Sequence[Prediction]) -> dict[str, dict[str, Any]]:
    """Study-level summary: per finding the maximum probability over the images.

    Returns
    -------
    dict
        ``{finding: {"probability", "image_index", "threshold", "present"}}``;
        empty when no image was analysed.
    """
    if not predictions:
        return {}
    probs = np.stack([p.probabilities for p in predictions])
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(LABELS):
        i = int(np.argmax(probs[:, k]))
        thr = float(predictions[i].thresholds[k])
        p = float(probs[i, k])
        out[name] = {"probability": p, "image_index": i, "threshold": thr, "present": bool(p >= thr)}
    return out


class Analyzer:
    """Run the analysis path with one loaded model.

    Parameters
    ----------
    predictor
        Loaded once per process (model load dominates start-up).
    config
        Reading limits and pixel policy.
    heatmaps
        Compute source-grid heatmaps (needed for SR regions and SC overlays).
    """

    def __init__(
        self, predictor: PredictorBase, *, config: IngestConfig | None = None, heatmaps: bool = True
    ) -> None:
        self.predictor = predictor
        self.card: ModelCard = predictor.card
        self.config = config or IngestConfig()
        self.heatmaps = heatmaps

    # --------------------------------------------------------------- reading
    def load(self, path: str) -> tuple[Dataset, DisplayImage]:
        """Read, decode (reduced where the codec allows) and render one image.

        Same steps as :func:`chexnet_dicom.dicom.pixels.load_display`, keeping the
        dataset for the outputs.  The decode target is
        :func:`~chexnet_dicom.transforms.decode_target_size` of the card's ``resize``
        (twice it), so the last downscaling step is always the anti-aliased resize.
        """
        cfg = self.config
        ds = read_dataset(path, limits=cfg.limits)
        stored = decode_stored(
            ds,
            limits=cfg.limits,
            target_size=decode_target_size(self.card.preprocessing.resize),
            fast_path=cfg.pixels.fast_path,
        )
        return ds, render(ds, stored, policy=cfg.pixels)

    def _pre(self) -> Preprocessing:
        """The card's preprocessing with the predictor's test-time augmentation."""
        pre = self.card.preprocessing
        if self.predictor.tta != pre.tta:
            pre = dataclasses.replace(pre, tta=self.predictor.tta)  # type: ignore[arg-type]
        return pre

    def model_input(self, display: DisplayImage) -> np.ndarray:
        """The network input of a display image (the card's preprocessing)."""
        pre = self._pre()
        return prepare_model_input(
            display.image,
            resize=pre.resize,
            input_size=pre.input_size,
            tta=pre.tta,
            mean=pre.mean,
            std=pre.std,
        )

    def source_heatmaps(self, prediction: Prediction, display: DisplayImage) -> np.ndarray:
        """(14, Rows, Columns) heatmaps in [0, 1] on the source pixel grid."""
        if prediction.cams is None:
            raise OutputError("the prediction carries no CAMs; run the predictor with cams=True")
        on_display = to_display(cam_to_image_grid(prediction.cams, self._pre(), display.image.shape))
        return np.clip(display.to_source_grid(on_display), 0.0, 1.0).astype(np.float32)

    # --------------------------------------------------------------- analysis
    def analyse(self, study: Study, *, progress: Callable[[int, int], None] | None = None) -> StudyResult:
        """Analyse the selected images of one study (from :func:`chexnet_dicom.dicom.study.scan`).

        Parameters
        ----------
        study
            The study with its selected and skipped files.
        progress
            Called as ``progress(done, total)`` after each image is read.
        """
        result = StudyResult(ref=study_ref(study.study_uid), study_instance_uid=study.study_uid)
        t0 = time.perf_counter()
        result.skipped.extend(SkippedFile.from_skipped(s, config=self.config) for s in study.skipped)
        t_read = time.perf_counter() - t0
        t_predict = 0.0
        total = len(study.selected)
        chunk = max(1, self.predictor.batch_size)
        # Read and predict chunk by chunk, so that a large study never holds more than one
        # batch of decoded images besides the results.
        for start in range(0, total, chunk):
            t_a = time.perf_counter()
            loaded: list[tuple[str, Dataset, DisplayImage]] = []
            for n, inst in enumerate(study.selected[start : start + chunk], start + 1):
                try:
                    ds, display = self.load(inst.path)
                except InputError as exc:
                    result.skipped.append(
                        SkippedFile.from_skipped(Skipped(inst.path, "error", exc.reason, str(exc)))
                    )
                    log.warning("%s: not analysed (%s)", phi_ref(inst.path, prefix="file"), exc.reason)
                else:
                    loaded.append((inst.path, ds, display))
                if progress is not None:
                    progress(n, total)
            t_b = time.perf_counter()
            inputs = [self.model_input(display) for _, _, display in loaded]
            predictions = self.predictor.predict_many(inputs, cams=self.heatmaps)
            for (path, ds, display), pred in zip(loaded, predictions, strict=True):
                maps = self.source_heatmaps(pred, display) if self.heatmaps else None
                result.images.append(ImageAnalysis(path, ds, display, pred, maps))
            t_read += t_b - t_a
            t_predict += time.perf_counter() - t_b
        result.summary = study_summary([im.prediction for im in result.images])
        result.timings = {"read": t_read, "predict": t_predict}
        log.info(
            "%s: %d analysed, %d skipped (read %.2fs, predict %.2fs)",
            result.ref,
            len(result.images),
            len(result.skipped),
            t_read,
            t_predict,
        )
        return result

    def analyse_paths(
        self, paths: Iterable[str | os.PathLike[str]], *, progress: Callable[[int, int], None] | None = None
    ) -> tuple[list[StudyResult], list[SkippedFile]]:
        """Scan ``paths`` (:func:`chexnet_dicom.dicom.study.scan`) and analyse every study.

        Returns
        -------
        (list of StudyResult, list of SkippedFile)
            One result per study, and the files that belong to no study.
        """
        t0 = time.perf_counter()
        found = scan(paths, config=self.config)
        scan_s = time.perf_counter() - t0
        studies = list(found.studies)
        results = []
        for st in studies:
            r = self.analyse(st, progress=progress)
            r.timings["read"] += scan_s / max(1, len(studies))
            results.append(r)
        orphans = [SkippedFile(s.path, s.reason, s.message, s.status) for s in found.unassigned]
        return results, orphans

    # --------------------------------------------------------------- outputs
    def image_results(self, result: StudyResult) -> tuple[list[ImageResult], list[SkippedInstance]]:
        """The outputs layer's view of a study result."""
        images = [
            ImageResult(dataset=im.dataset, prediction=im.prediction, heatmaps=im.heatmaps, flags=im.flags)
            for im in result.images
        ]
        skipped = [
            SkippedInstance(reason=s.reason, message=s.message, dataset=s.dataset) for s in result.skipped
        ]
        return images, skipped

    def write(
        self,
        result: StudyResult,
        out_dir: str | os.PathLike[str],
        *,
        sc: bool = True,
        sc_per_finding: bool = False,
        previews: bool = True,
        sc_compression: str = "none",
    ) -> list[Path]:
        """Write the study's results into ``out_dir`` and return the files.

        * ``sr.dcm``: the TID 1500 SR (also when every image was skipped: it lists what
          was not analysed and why);
        * ``sc-<image>-<k>.dcm``: RGB overlay(s) of each analysed image (top finding, or
          one per positive finding with ``sc_per_finding``), encoded as
          ``sc_compression`` (a key of :data:`chexnet_dicom.outputs.sc.SC_COMPRESSIONS`);
        * ``preview-<image>-<k>.png``: the same overlay as PNG for people without a
          DICOM viewer (the top finding on the display grid when ``sc`` is off);
        * ``result.json``: the PHI-free JSON sidecar (:mod:`chexnet_dicom.outputs.sidecar`).

        File names hold only indices, never UIDs or names.
        """
        from chexnet_dicom.outputs.sc import blend_overlay, build_scs
        from chexnet_dicom.outputs.sidecar import build_sidecar, write_sidecar

        t0 = time.perf_counter()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        images, skipped = self.image_results(result)
        written: list[Path] = []
        with_header = [s for s in skipped if s.dataset is not None]
        sr = None
        if images or with_header:
            sr = build_sr(images, self.card, skipped=with_header)
            written.append(write_dataset(sr, out / "sr.dcm"))
        all_overlays: list[Dataset] = []
        number = 1
        for i, (img, analysis) in enumerate(zip(images, result.images, strict=True), 1):
            if img.heatmaps is None:
                continue
            if sc:
                overlays = build_scs(
                    img,
                    analysis.display,
                    self.card,
                    per_finding=sc_per_finding,
                    first_instance_number=number,
                    compression=sc_compression,
                )
                number += len(overlays)
                all_overlays.extend(overlays)
                for k, overlay in enumerate(overlays, 1):
                    written.append(write_dataset(overlay, out / f"sc-{i}-{k}.dcm"))
                    if previews:
                        written.append(
                            _write_png(np.asarray(overlay.pixel_array), out / f"preview-{i}-{k}.png")
                        )
            elif previews:
                top = int(np.argmax(analysis.prediction.probabilities))
                assert analysis.prediction.cams is not None
                cams = analysis.prediction.cams[..., top : top + 1, :, :]
                heat = to_display(cam_to_image_grid(cams, self._pre(), analysis.display.image.shape))[0]
                rgb = blend_overlay(analysis.display.image, heat, self.card.cam_threshold)
                written.append(_write_png(rgb, out / f"preview-{i}-1.png"))
        sidecar = build_sidecar(images, self.card, skipped=skipped, sr=sr, overlays=all_overlays)
        written.append(write_sidecar(sidecar, out / "result.json"))
        result.outputs.extend(written)
        result.timings["write"] = result.timings.get("write", 0.0) + time.perf_counter() - t0
        return written


def _write_png(rgb: np.ndarray, path: Path) -> Path:
    from PIL import Image

    from chexnet_dicom.atomic import atomic_write

    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
