"""The stages of one image and one study, each a module-level function of plain data.

::

    load_for_model(source)          read, decode, render, model input   [this process]
    decode_for_model(image_file)    the same for a worker: ImageFile in,
                                    (display image, model input) out     [any process]
    predict_batch(predictor, xs)    one forward pass; batches may span studies
    study_result(study, ...)        the one builder of a StudyResult

What a worker process receives and returns is plain data (:func:`worker_input`,
:class:`~chexnet_dicom.dicom.load.ImageFile`; numpy arrays and dictionaries back), never
a live pydicom dataset: a converted value may hold a local function that cannot be
pickled.  The study's header stays with the caller, which pairs it with what came back
(:func:`loaded_image`), so an image gives the same result in-process and in a worker.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.load import ImageFile, ImageSource, LoadedImage, image_file, load_image
from chexnet_dicom.dicom.pixels import DisplayImage
from chexnet_dicom.dicom.study import Instance, Skipped, Study
from chexnet_dicom.errors import InferenceError, WeightsError
from chexnet_dicom.logs import phi_ref
from chexnet_dicom.model.card import ModelCard, Preprocessing
from chexnet_dicom.model.prediction import Prediction
from chexnet_dicom.model.predictor import PredictorBase
from chexnet_dicom.pipeline.failures import guarded
from chexnet_dicom.preprocess import decode_target_size, prepare_model_input
from chexnet_dicom.results import Failure, ImageResult, StudyResult

__all__ = [
    "analysis_preprocessing",
    "decode_for_model",
    "load_for_model",
    "loaded_image",
    "model_input",
    "predict_batch",
    "study_result",
    "worker_input",
]

log = logging.getLogger(__name__)

#: One analysed image of a study: its instance, its loaded image and its prediction.
Analysed = tuple[Instance, LoadedImage, Prediction]


def analysis_preprocessing(predictor: PredictorBase) -> Preprocessing:
    """The card's preprocessing with the predictor's test-time augmentation."""
    pre = predictor.card.preprocessing
    if predictor.tta != pre.tta:
        pre = dataclasses.replace(pre, tta=predictor.tta)  # type: ignore[arg-type]
    return pre


def model_input(display: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """The network input of a [0, 1] display image (the card's preprocessing)."""
    return prepare_model_input(
        display,
        resize=preprocessing.resize,
        input_size=preprocessing.input_size,
        tta=preprocessing.tta,
        mean=preprocessing.mean,
        std=preprocessing.std,
    )


def load_for_model(
    source: ImageSource, config: IngestConfig, preprocessing: Preprocessing
) -> tuple[LoadedImage, np.ndarray]:
    """:func:`~chexnet_dicom.dicom.load.load_image` at the model's decode target, plus its input.

    For this process (its result holds a pydicom dataset); a worker runs
    :func:`decode_for_model`.
    """
    loaded = load_image(source, config=config, target_size=decode_target_size(preprocessing.resize))
    return loaded, model_input(loaded.display.image, preprocessing)


def decode_for_model(
    source: ImageFile | ImageSource, config: IngestConfig, preprocessing: Preprocessing
) -> tuple[DisplayImage, np.ndarray]:
    """What a decode worker runs: the display image and model input of one image, as plain data.

    Module level, picklable in (an :class:`~chexnet_dicom.dicom.load.ImageFile` from
    :func:`worker_input`) and out (numpy arrays and a dictionary); the caller pairs the
    display image with the header it holds (:func:`loaded_image`).

    Raises
    ------
    InputError
        The image cannot be read or decoded.
    """
    loaded, x = load_for_model(source, config, preprocessing)
    return loaded.display, x


def worker_input(inst: Instance) -> ImageFile:
    """What a worker process receives for one selected image: its file, offsets and header bytes."""
    return image_file(inst.scanned, inst.path)


def loaded_image(inst: Instance, display: DisplayImage) -> LoadedImage:
    """An image's :class:`~chexnet_dicom.dicom.load.LoadedImage` from its scanned header and decoded display."""
    return LoadedImage(dataset=inst.dataset, display=display)


def predict_batch(
    predictor: PredictorBase, inputs: Sequence[np.ndarray], *, cams: bool = True
) -> list[Prediction | InferenceError]:
    """Predict a batch of model inputs (from any studies); a bad image fails alone.

    The batch runs as one call of the predictor; when it raises an
    :class:`~chexnet_dicom.errors.InferenceError` (a NaN, a wrong shape), the images are
    predicted one by one so that only the image that caused it fails.

    Returns
    -------
    list
        One :class:`~chexnet_dicom.model.prediction.Prediction` per input, or the
        :class:`~chexnet_dicom.errors.InferenceError` that image raised.
    """
    if not inputs:
        return []
    try:
        return list(predictor.predict_many(list(inputs), cams=cams))
    except WeightsError:
        raise
    except InferenceError:
        if len(inputs) == 1:
            raise
    out: list[Prediction | InferenceError] = []
    for x in inputs:
        try:
            out.append(predictor.predict_many([x], cams=cams)[0])
        except InferenceError as exc:
            out.append(exc)
    return out


def _build(
    study: Study,
    card: ModelCard,
    preprocessing: Preprocessing,
    analysed: Sequence[Analysed],
    skipped: Sequence[Skipped],
    timings: dict[str, float],
) -> StudyResult:
    images = tuple(
        ImageResult(
            path=inst.path,
            dataset=loaded.dataset,
            display=loaded.display,
            prediction=pred,
            preprocessing=preprocessing,
        )
        for inst, loaded, pred in analysed
    )
    return StudyResult(
        study_uid=study.study_uid,
        card=card,
        images=images,
        skipped=tuple(study.skipped) + tuple(skipped),
        timings=dict(timings),
    )


def study_result(
    study: Study,
    card: ModelCard,
    preprocessing: Preprocessing,
    analysed: Mapping[int, Analysed],
    skipped: Sequence[Skipped] = (),
    failure: Failure | None = None,
    timings: Mapping[str, float] | None = None,
) -> StudyResult:
    """A study's result from its predicted images and everything it did not analyse: the one builder.

    Every scheduler ends a study here (:mod:`chexnet_dicom.pipeline.stream`, Ray).  A
    failure of the assembly itself gives the study a
    :class:`~chexnet_dicom.results.Failure` (stage ``assemble``), not an exception.

    Parameters
    ----------
    study
        From the scan.
    card
        The model card of the predictor.
    preprocessing
        The CAMs' geometry (:func:`analysis_preprocessing`).
    analysed
        Index in ``study.selected`` -> ``(instance, loaded image, prediction)``.
    skipped
        Images that failed to load (:func:`~chexnet_dicom.pipeline.failures.load_skip`),
        after the study's own skipped files.
    failure
        The failure of a prediction: the study fails with it.
    timings
        Seconds per stage (``read``, ``predict``).
    """
    t = dict(timings or {})
    t.setdefault("read", 0.0)
    t.setdefault("predict", 0.0)
    ordered = [analysed[k] for k in sorted(analysed)]
    if failure is not None:
        return _build(study, card, preprocessing, [], skipped, t).with_failure(failure)
    what = phi_ref(study.study_uid, prefix="study")
    result = guarded(what, "assemble", _build, study, card, preprocessing, ordered, skipped, t)
    if isinstance(result, Failure):
        return _build(study, card, preprocessing, [], skipped, t).with_failure(result)
    log.info(
        "%s: %d analysed, %d skipped (read %.2fs, predict %.2fs)",
        what,
        len(result.images),
        len(result.skipped),
        t["read"],
        t["predict"],
    )
    return result
