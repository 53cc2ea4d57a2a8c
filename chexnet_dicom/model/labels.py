"""The 14 NIH ChestX-ray14 findings in CheXNet order.

The order is the one used by the CheXNet paper, arnoweng/CheXNet and
reproduce-chexnet; every checkpoint loaded by :mod:`chexnet_dicom.model.weights`
must list exactly these labels in exactly this order (or be re-ordered explicitly).
Coded concepts for DICOM outputs live in :data:`FINDING_CODES` (plain tuples so
that this module never imports pydicom).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "DISPLAY_NAMES",
    "FINDING_CODES",
    "LABELS",
    "NUM_CLASSES",
    "PRIVATE_SCHEME",
    "SNOMED_BEYOND_PS316",
    "Code",
    "label_index",
]

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


class Code(NamedTuple):
    """A coded concept: (coding scheme designator, code value, code meaning)."""

    scheme: str
    value: str
    meaning: str


#: Designator of the project's private coding scheme (PS3.3 8.2: private designators
#: start with ``99``). Used only for findings that have no standard code in pydicom's
#: PS3.16 dictionaries; documented in :mod:`chexnet_dicom.outputs.codes`.
PRIVATE_SCHEME: str = "99CHEXDCM"

#: SNOMED CT concepts used for findings that PS3.16 (and so pydicom's dictionary) does not
#: list: concept id -> preferred term. Each is the International Edition concept of the
#: disorder itself (fully specified names "Atelectasis (disorder)", "Pneumonia (disorder)",
#: "Lung consolidation (disorder)", "Pulmonary emphysema (disorder)"), as published in
#: the OHDSI/OMOP standardized vocabulary and HL7 FHIR implementation guides; DICOM allows
#: any SNOMED CT concept where a context group is extensible (CID 6147's findings are).
SNOMED_BEYOND_PS316: dict[str, str] = {
    "46621007": "Atelectasis",
    "233604007": "Pneumonia",
    "95436008": "Lung consolidation",
    "87433001": "Pulmonary emphysema",
}

#: Coded concept per finding. Standard codes (SCT, DCM) are copied from pydicom's
#: PS3.16 dictionaries and checked against them by ``tests/outputs/test_codes.py``;
#: findings without a standard code there use :data:`PRIVATE_SCHEME`, never a
#: look-alike standard code. NIH "Effusion" is a pleural effusion and NIH "Edema" a
#: pulmonary edema on a chest radiograph, hence the more specific standard concepts.
FINDING_CODES: dict[str, Code] = {
    "Atelectasis": Code("SCT", "46621007", "Atelectasis"),
    "Cardiomegaly": Code("SCT", "287272002", "Cardiomegaly"),
    "Effusion": Code("SCT", "60046008", "Pleural effusion"),
    "Infiltration": Code("DCM", "112121", "Infiltrate"),
    "Mass": Code("SCT", "4147007", "Mass"),
    "Nodule": Code("SCT", "27925004", "Nodule"),
    "Pneumonia": Code("SCT", "233604007", "Pneumonia"),
    "Pneumothorax": Code("SCT", "36118008", "Pneumothorax"),
    "Consolidation": Code("SCT", "95436008", "Lung consolidation"),
    "Edema": Code("SCT", "19242006", "Pulmonary edema"),
    "Emphysema": Code("SCT", "87433001", "Pulmonary emphysema"),
    "Fibrosis": Code("SCT", "112674009", "Fibrosis"),
    "Pleural_Thickening": Code(PRIVATE_SCHEME, "PLEURAL_THICK", "Pleural thickening"),
    "Hernia": Code(PRIVATE_SCHEME, "HERNIA", "Hernia"),
}


#: The one human-readable spelling of each finding: its code meaning (the SR's concept
#: name), used by the findings table, the overlay legend and series descriptions, and the
#: SR text ("Pleural effusion", "Pleural thickening"). The keys of :data:`LABELS`
#: (``Pleural_Thickening``) stay the machine keys of CSV and JSON.
DISPLAY_NAMES: dict[str, str] = {name: FINDING_CODES[name].meaning for name in LABELS}


def label_index(name: str) -> int:
    """Return the output index of a finding (dataset name or display name).

    Parameters
    ----------
    name
        ``"Pleural_Thickening"``, ``"Pleural Thickening"`` or the display name
        ``"Pleural thickening"`` (:data:`DISPLAY_NAMES`, any case).

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
    if key in LABELS:
        return LABELS.index(key)
    wanted = name.strip().casefold()
    for k, label in enumerate(LABELS):
        if wanted in (label.casefold(), label.replace("_", " ").casefold(), DISPLAY_NAMES[label].casefold()):
            return k
    raise KeyError(f"unknown finding {name!r}; known: {', '.join(LABELS)}")
