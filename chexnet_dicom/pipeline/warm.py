"""Warm-up of the result stages for a long-running door (:func:`warm_result_stages`).

The node's worker and ``chexdcm batch`` (when it writes DICOM) call it before they take
work, so that their first study costs what a warm one does.  Imports alone are not
enough: the first decode, forward pass, SR and overlay of a process also fill caches
(highdicom's and pydicom's code dictionaries, ONNX Runtime's buffers, NumPy's and
scikit-image's first calls).  So, given the door's predictor, it runs **one tiny real
study** through the same stages: a small synthetic DX image built here with pydicom
(never with :mod:`chexnet_dicom.testing`, which production code does not import) is
written to a temporary folder, scanned, decoded, predicted, and its SR and overlay are
built and written with the door's output options, then everything is discarded.  One
finding is marked present on that copy so that the present-finding path (its heatmap,
region outline and SR measurement group) runs as well.

``chexdcm infer`` does not call it: it imports only what its options need.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from chexnet_dicom.gc_policy import long_lived
from chexnet_dicom.pipeline.failures import FATAL

__all__ = ["tiny_study", "warm_result_stages"]

log = logging.getLogger(__name__)

#: Rows and columns of the warm-up image: big enough for the display and CAM steps.
TINY = 96
_DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def tiny_study(folder: Path) -> Path:
    """Write a small synthetic chest-like DX image (one-image study) into ``folder``.

    Built with pydicom only; the UIDs are fresh (:func:`pydicom.uid.generate_uid`) and
    the patient is a placeholder, so nothing of it can be mistaken for real data.

    Parameters
    ----------
    folder
        An existing folder (a temporary one).

    Returns
    -------
    Path
        The file written.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    yy, xx = np.mgrid[0:TINY, 0:TINY].astype(np.float32) / (TINY - 1)
    lungs = np.exp(-(((xx - 0.3) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    lungs += np.exp(-(((xx - 0.7) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    pixels = (4095 * (0.8 - 0.5 * np.clip(lungs, 0, 1))).astype(np.uint16)
    ds = Dataset()
    ds.SOPClassUID = _DX_PRESENTATION
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientName = "Warm^Up"
    ds.PatientID = "WARMUP"
    ds.StudyDate = "20240102"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImagerPixelSpacing = [f"{430 / TINY:.6g}", f"{430 / TINY:.6g}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PresentationLUTShape = "IDENTITY"
    ds.Rows = ds.Columns = TINY
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    ds.RescaleType = "US"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = folder / "warm.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _one_present(result: Any) -> Any:
    """The result with its first image's top finding marked present (and the others absent)."""
    image = result.images[0]
    pred = image.prediction
    thresholds = np.ones_like(np.asarray(pred.thresholds, dtype=np.float64))
    top = int(np.argmax(pred.probabilities))
    thresholds[top] = float(pred.probabilities[top])
    image = dataclasses.replace(image, prediction=dataclasses.replace(pred, thresholds=thresholds))
    return dataclasses.replace(result, images=(image, *result.images[1:]))


def _tiny_build(predictor: Any, options: Any, ingest: Any) -> None:
    """Decode, predict, build and write the tiny study once (into a folder then removed)."""
    from chexnet_dicom.pipeline.stream import results_for_paths
    from chexnet_dicom.pipeline.write import build_and_write
    from chexnet_dicom.results import Failure

    with tempfile.TemporaryDirectory(prefix="chexdcm-warm-") as d:
        folder = Path(d)
        source = folder / "in"
        source.mkdir()
        tiny_study(source)
        results = list(results_for_paths([source], predictor, config=ingest))
        if not results or results[0].failed or not results[0].images:
            log.warning("warm-up: the tiny study was not analysed; the first study may be slower")
            return
        done = build_and_write(_one_present(results[0]), folder / "out", options, [])
        if isinstance(done, Failure):
            log.warning("warm-up: the tiny study's results were not built (%s)", done.reason)


def warm_result_stages(predictor: Any = None, options: Any = None, ingest: Any = None) -> float:
    """Import the result stages and, given a predictor, run one tiny real study; returns the seconds spent.

    Parameters
    ----------
    predictor
        The door's loaded predictor; None: the imports only.
    options
        The door's :class:`~chexnet_dicom.config.OutputOptions` (None: the defaults).
    ingest
        The door's :class:`~chexnet_dicom.config.IngestConfig` (None: the defaults).

    Returns
    -------
    float
        Seconds spent.

    Raises
    ------
    WeightsError, ConfigError, MemoryError, KeyboardInterrupt
        :data:`~chexnet_dicom.pipeline.failures.FATAL`: the door cannot work anyway.
        Any other failure of the tiny study is logged and the door goes on (its first
        study is then only slower).
    """
    t0 = time.perf_counter()
    # what the warm-up builds lives as long as the door: frozen out of later collections
    with long_lived(collect=True):
        import highdicom.sr  # noqa: F401 (imported for the import's cost)
        from skimage import measure  # noqa: F401

        import chexnet_dicom.outputs.build
        import chexnet_dicom.outputs.regions
        import chexnet_dicom.outputs.sc
        import chexnet_dicom.outputs.sr  # noqa: F401

        if predictor is not None:
            try:
                _tiny_build(predictor, options, ingest)
            except FATAL:
                raise
            except Exception as exc:  # a warm-up never stops a door: its first study is only slower
                log.warning("warm-up failed (%s); the first study may be slower", type(exc).__name__)
    spent = time.perf_counter() - t0
    log.debug("result stages warmed up in %.2f s", spent)
    return spent
