"""A door's model start-up: resolve the weights, load the predictor, say why (:func:`start_model`).

``chexdcm infer``, ``chexdcm batch``, the node's worker and batch's Ray actors all start
their model here, so they choose the same card for the same settings and describe it in
the same words.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chexnet_dicom.model.backends import predictor_for
from chexnet_dicom.model.resolve import resolve_weights

if TYPE_CHECKING:
    from chexnet_dicom.config import RuntimeConfig
    from chexnet_dicom.model.predictor import PredictorBase

__all__ = ["StartedModel", "start_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartedModel:
    """A loaded predictor and where its weights came from.

    Attributes
    ----------
    predictor
        The model, ready to predict.
    card_path
        The ``*.card.json`` it was loaded from.
    why
        Why that card was chosen (``--weights X``, ``CHEXDCM_WEIGHTS=...``, the cache, the
        bundled demo weights).
    """

    predictor: PredictorBase
    card_path: Path
    why: str

    def summary(self) -> str:
        """One line: the model, where it runs and how (``name version on cpu (onnxruntime, fp32, ...)``)."""
        p = self.predictor
        return (
            f"{p.card.name} {p.card.version} on {p.device} ({p.backend}, {p.precision}, "
            f"{p.runtime.reason}; {p.threads} threads)"
        )


def start_model(
    weights: str | None,
    runtime: RuntimeConfig,
    *,
    announce: Callable[[Path, str], None] | None = None,
) -> StartedModel:
    """Resolve ``weights`` (as :func:`~chexnet_dicom.model.resolve.resolve_weights`) and load them.

    Parameters
    ----------
    weights
        A ``--weights`` / ``weights =`` value (card file, folder holding one, registry
        name), or None/``""`` for the usual resolution.
    runtime
        The ``[runtime]`` table: device, backend, precision, threads, batch size, TTA.
    announce
        Called with the card and the reason once the weights are resolved, before the
        (slower, possibly failing) load: a front door prints which weights it is loading.

    Returns
    -------
    StartedModel

    Raises
    ------
    WeightsError
        No weights, or weights that are missing, corrupt or not a model card.
    ConfigError
        Runtime settings no backend can run (``cuda`` without a GPU, ...).
    """
    card_path, why = resolve_weights(weights or None)
    if announce is not None:
        announce(card_path, why)
    started = StartedModel(predictor_for(card_path, runtime), card_path, why)
    log.info("model: %s; weights: %s", started.summary(), why)
    return started
