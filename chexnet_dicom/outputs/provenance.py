"""IHE AI Results (AIR) contributing equipment: the algorithm as processing equipment.

Each output lists, in its Contributing Equipment Sequence (SOP Common module), one item
for the model: purpose of reference (109102, DCM, "Processing Equipment") -- the
PS3.16 CID 7005 concept for equipment that processed the source data; DICOM has no
separate "Processing Algorithm" purpose code, and highdicom accepts only CID 7005
concepts --, manufacturer, model name (the algorithm name), software versions (model
version and package version), device serial number (the weights sha256), Device UID
(derived from the weights hash, :attr:`ModelCard.device_uid`) and a description that
says research use only. highdicom adds the source's acquisition equipment and itself.
"""

from __future__ import annotations

from highdicom import ContributingEquipment
from pydicom.sr.codedict import codes

from chexnet_dicom.outputs.identity import MANUFACTURER, RESEARCH_USE_ONLY, CardLike, software_versions

__all__ = ["algorithm_equipment"]


def algorithm_equipment(card: CardLike, *, description: str = "AI inference") -> ContributingEquipment:
    """Return the Contributing Equipment item describing the model.

    Parameters
    ----------
    card
        The model card (name, version, weights hash, device UID).
    description
        What the algorithm did for this output (ST); "research use only" is appended.

    Returns
    -------
    highdicom.ContributingEquipment
        With purpose "Processing Equipment" and Device UID set.
    """
    item = ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=str(card.name)[:64],
        software_versions=software_versions(card),
        device_serial_number=str(card.weights_sha256)[:64],
        contribution_description=f"{description} by {card.name} {card.version}; {RESEARCH_USE_ONLY}"[:1024],
    )
    item.DeviceUID = card.device_uid
    return item
