"""The 14 NIH ChestX-ray14 findings in CheXNet order.

The order is the one used by the CheXNet paper, arnoweng/CheXNet and
reproduce-chexnet; every checkpoint loaded by :mod:`chexnet_dicom.model.weights`
must list exactly these labels in exactly this order (or be re-ordered explicitly).
Coded concepts for DICOM outputs live in :data:`FINDING_CODES` (plain tuples so
that this module never imports pydicom).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DISPLAY_NAMES", "FINDING_CODES", "LABELS", "NUM_CLASSES", "Code", "label_index"]

#: Dataset names, in CheXNet output order.
LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

NUM_CLASSES: int = len(LABELS)

#: Human readable names (used in tables, legends and SR text).
DISPLAY_NAMES: dict[str, str] = {name: name.replace("_", " ") for name in LABELS}


class Code(NamedTuple):
    """A coded concept: (coding scheme designator, code value, code meaning)."""

    scheme: str
    value: str
    meaning: str


#: Coded concept per finding, filled and verified by the outputs layer tests
#: (PS3.16 / SNOMED CT where a standard code exists, else the private scheme
#: documented in :mod:`chexnet_dicom.outputs.codes`).
FINDING_CODES: dict[str, Code] = {}


def label_index(name: str) -> int:
    """Return the output index of a finding (dataset name or display name).

    Parameters
    ----------
    name
        ``"Pleural_Thickening"`` or ``"Pleural Thickening"``.

    Returns
    -------
    int
        Position in :data:`LABELS`.

    Raises
    ------
    KeyError
        For an unknown finding.
    """
    key = name.replace(" ", "_")
    try:
        return LABELS.index(key)
    except ValueError:
        raise KeyError(f"unknown finding {name!r}; known: {', '.join(LABELS)}") from None
