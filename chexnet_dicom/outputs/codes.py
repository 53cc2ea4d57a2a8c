"""Coded concepts used in the DICOM results, and the project's private coding scheme.

Standard concepts come from pydicom's PS3.16 dictionaries (``pydicom.sr.codedict.codes``)
or, where pydicom has none, from a PS3.16 template table (cited next to the constant).
Findings without a standard code in those dictionaries use one private scheme:

Private coding scheme ``99CHEXDCM``
    Designator ``99CHEXDCM`` (PS3.3 section 8.2: designators starting with ``99`` are
    private), declared in every SR's Coding Scheme Identification Sequence. Code
    values are upper-case English words of at most 16 characters:

    ==============  =====================  ============================================
    code value      code meaning           used for
    ==============  =====================  ============================================
    PLEURAL_THICK   Pleural thickening     NIH finding "Pleural_Thickening"
    HERNIA          Hernia                 NIH finding "Hernia"
    NOT_ANALYSED    Image not analysed     TEXT item naming a skipped instance and why
    ==============  =====================  ============================================

    The other twelve findings have standard codes (see
    :data:`chexnet_dicom.model.labels.FINDING_CODES`): eight from pydicom's PS3.16
    dictionaries, four SNOMED CT concepts outside PS3.16
    (:data:`chexnet_dicom.model.labels.SNOMED_BEYOND_PS316`, sources there). The two
    private findings are in none of the DICOM standard's tables (pydicom 3.0.2's PS3.16
    dictionaries, PixelMed 20220618's context groups), and no SNOMED CT concept for them
    was confirmed in two independent sources.
"""

from __future__ import annotations

import copy
from functools import cache, lru_cache

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import AlgorithmIdentification, CodedConcept
from pydicom.sr.codedict import codes

from chexnet_dicom.model.labels import FINDING_CODES, LABELS, PRIVATE_SCHEME
from chexnet_dicom.outputs.identity import CardLike
from chexnet_dicom.outputs.reliability import UNRELIABLE_TEXT

__all__ = [
    "ABSENT",
    "NOT_ANALYSED",
    "PRESENT",
    "PRIVATE_SCHEME",
    "PRIVATE_SCHEME_ITEM",
    "PROBABILITY",
    "PROBABILITY_UNIT",
    "OUTLINE",
    "BOUNDED_BY",
    "REGION_RULES",
    "PROCEDURE_REPORTED",
    "QUALITATIVE_EVALUATIONS",
    "SUMMARY",
    "THRESHOLD",
    "algorithm_identification",
    "finding_concept",
]

#: Probability of the finding (DCM 122157), a NUM without units.
PROBABILITY = CodedConcept.from_code(codes.DCM.Probability)
#: UCUM "1" (no units): probabilities are dimensionless.
PROBABILITY_UNIT = CodedConcept.from_code(codes.UCUM.NoUnits)
#: Present / absent at the model card's operating point (SCT, CID 240 "Present-Absent").
PRESENT = CodedConcept.from_code(codes.SCT.Present)
ABSENT = CodedConcept.from_code(codes.SCT.Absent)
#: Procedure reported (TID 1500 row 4, one item from CID 100 "Quantitative Diagnostic
#: Imaging Procedures"): "Imaging procedure" (SCT 363679005), the member of CID 100 that a
#: chest radiograph falls under in every version of the group PixelMed and pydicom carry
#: (the group has no chest radiography code; the evidence references say which images).
PROCEDURE_REPORTED: CodedConcept = CodedConcept.from_code(codes.cid100.ImagingProcedure)
#: TID 1410 row 3c geometric purposes (CID 219): a finding's outline, a box bounding it
OUTLINE = CodedConcept.from_code(codes.DCM.Outline)
BOUNDED_BY = CodedConcept.from_code(codes.SCT.BoundedBy)
#: TID 1500 row 12 container "Qualitative Evaluations" (PS3.16 TID 1500; the same
#: concept is hard-coded in dcmtk's libcmr). pydicom's dictionary has no UMLS entry for it.
QUALITATIVE_EVALUATIONS = CodedConcept(
    value="C0034375", scheme_designator="UMLS", meaning="Qualitative Evaluations"
)
#: The finding's operating point, a NUM beside its probability: "Threshold Value" (DCM 122411).
THRESHOLD = CodedConcept.from_code(codes.DCM.ThresholdValue)
#: The line of present findings at the top of the SR: "Summary" (DCM 121111).
SUMMARY = CodedConcept.from_code(codes.DCM.Summary)
#: Private concepts (see the module docstring).
NOT_ANALYSED = CodedConcept(
    value="NOT_ANALYSED", scheme_designator=PRIVATE_SCHEME, meaning="Image not analysed"
)

#: Coding Scheme Identification Sequence item declaring the private scheme.
PRIVATE_SCHEME_ITEM = CodingSchemeIdentificationItem(
    designator=PRIVATE_SCHEME,
    name="chexnet-dicom private findings",
    version="1",
    responsible_organization="chexnet-dicom project",
)


@cache
def _concept(label: str) -> CodedConcept:
    code = FINDING_CODES[label]
    return CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def finding_concept(label: str) -> CodedConcept:
    """Return the coded concept of a finding.

    Parameters
    ----------
    label
        A name from :data:`~chexnet_dicom.model.labels.LABELS`.

    Returns
    -------
    highdicom.sr.CodedConcept
        The standard or private code of the finding.

    Raises
    ------
    KeyError
        For an unknown finding.
    """
    if label not in FINDING_CODES:
        raise KeyError(f"no code for finding {label!r}; known: {', '.join(LABELS)}")
    return copy.deepcopy(_concept(label))


#: How each kind of region (``algorithm_identification``'s ``region``) is drawn from the map.
REGION_RULES = {
    "outline": "region: outline of the largest connected area where the relative evidence map >= {t}",
    "box": "region: rectangle around every area where the relative evidence map >= {t}",
}


@lru_cache(maxsize=64)
def _algorithm(
    name: str, version: str, cam_threshold: float, region: str | None, unreliable: bool
) -> AlgorithmIdentification:
    parameters: list[str] = []
    if region is not None:
        parameters.append(REGION_RULES[region].format(t=f"{cam_threshold:.6g}"))
    if unreliable:
        parameters.append(UNRELIABLE_TEXT)
    return AlgorithmIdentification(name=name, version=version, parameters=parameters or None)


def algorithm_identification(
    card: CardLike, *, region: str | None, unreliable: bool
) -> AlgorithmIdentification:
    """TID 4019 algorithm items of one finding group (name, version, region rule, reliability).

    ``region``: None for a finding's image-level group, else a key of :data:`REGION_RULES`.

    Built once per weights and kind of group (cached), handed out as a copy so that no two
    groups share a dataset.
    """
    item = _algorithm(str(card.name), str(card.version), float(card.cam_threshold), region, unreliable)
    return copy.deepcopy(item)
