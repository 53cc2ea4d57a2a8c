"""Which model card to use: ``--weights``, ``CHEXDCM_WEIGHTS``, the cache, the demo weights.

Kept apart from :mod:`chexnet_dicom.model.weights` (the checkpoint loaders) so that
resolving a card never imports torch; the dependency runs one way (resolve -> weights,
only to convert a cached download).
"""

from __future__ import annotations

import os
from pathlib import Path

from chexnet_dicom.errors import WeightsError
from chexnet_dicom.model.card import CARD_SUFFIX
from chexnet_dicom.model.registry import DEFAULT_CHECKPOINT, REGISTRY, bundle_card, download_path

__all__ = ["DEMO_CARD", "resolve_weights"]

#: Demo weights shipped with the package (written by ``chexdcm train``, see pipelines/).
DEMO_CARD = Path(__file__).resolve().parent / "data" / "chexnet_demo.card.json"


def _card_in(value: str) -> Path:
    """Interpret an explicit weights value: card file, folder with one card, or registry name."""
    p = Path(value).expanduser()
    if p.is_file():
        if not p.name.endswith(CARD_SUFFIX):
            raise WeightsError(
                f"{p} is not a model card (*{CARD_SUFFIX}); foreign checkpoints must be converted first: "
                f"`chexdcm weights import auto {p} --out DIR`"
            )
        return p
    if p.is_dir():
        cards = sorted(p.glob(f"*{CARD_SUFFIX}"))
        if len(cards) != 1:
            raise WeightsError(f"{p} holds {len(cards)} model cards; name the *{CARD_SUFFIX} file to use")
        return cards[0]
    if value in REGISTRY:
        entry = REGISTRY[value]
        card = bundle_card(entry)
        if card.is_file():
            return card
        raise WeightsError(f"{value} is not in the cache yet: run `chexdcm weights fetch {value}`")
    raise WeightsError(
        f"weights {value!r} not found: give a *{CARD_SUFFIX} file, a folder or a registry name"
    )


def resolve_weights(explicit: str | None = None) -> tuple[Path, str]:
    """Find the model card to use.

    Order: ``explicit`` (card file, folder holding one card, or registry name), the
    ``CHEXDCM_WEIGHTS`` environment variable (same forms), the cached bundle of the
    registry default (converted on the spot if only its verified download is cached),
    then the bundled demo weights.

    Parameters
    ----------
    explicit
        Value of a ``--weights`` option, or None.

    Returns
    -------
    (Path, str)
        The ``*.card.json`` path and a human-readable reason for the choice.

    Raises
    ------
    WeightsError
        If an explicit or environment value is invalid, or nothing is available.
    """
    if explicit:
        return _card_in(explicit), f"--weights {explicit}"
    env = os.environ.get("CHEXDCM_WEIGHTS")
    if env:
        return _card_in(env), f"CHEXDCM_WEIGHTS={env}"
    entry = REGISTRY[DEFAULT_CHECKPOINT]
    card = bundle_card(entry)
    if card.is_file():
        return card, f"cached {entry.name} bundle in {card.parent}"
    if download_path(entry).is_file():
        from chexnet_dicom.model.weights import fetch  # converting needs torch

        _, converted = fetch(entry.name)
        assert converted is not None
        return converted, f"cached {entry.name} download, converted into {converted.parent}"
    if DEMO_CARD.is_file():
        return DEMO_CARD, "bundled demo weights: pipeline demonstration only, not for clinical use"
    raise WeightsError(
        "no model weights found: pass --weights CARD, set CHEXDCM_WEIGHTS, or run "
        f"`chexdcm weights fetch {entry.name}` (offline: put {entry.url} at {download_path(entry)})"
    )
