"""Word lists and codes the header gate weighs (:mod:`chexnet_dicom.dicom.gate`).

Terms are upper-case tokens after hyphens inside words are removed (``"C-SPINE"`` ->
``"CSPINE"``).  Codes are SNOMED CT and the legacy SNOMED-RT/DICOM codes of CID 4010 /
4014 (views) and CID 4031 (body parts).
"""

from __future__ import annotations

__all__ = [
    "ACCEPTED_MODALITIES",
    "CHEST_CODES",
    "CHEST_TERMS",
    "CR",
    "DX_PRESENTATION",
    "DX_PROCESSING",
    "FRONTAL_CODES",
    "FRONTAL_TERMS",
    "HUMAN_CODES",
    "HUMAN_SPECIES",
    "NON_FRONTAL_CODES",
    "NON_FRONTAL_TERMS",
    "OTHER_BODY_TERMS",
    "OTHER_MODALITY_TERMS",
    "PROJECTION_CHEST_SOP",
    "SECONDARY_CAPTURE_SOP",
    "SPECIES_TERMS",
    "TEXT_KEYWORDS",
    "TEXT_NON_FRONTAL_TERMS",
    "TS_NAMES",
]

CR = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
PROJECTION_CHEST_SOP = frozenset({CR, DX_PRESENTATION, DX_PROCESSING})
SECONDARY_CAPTURE_SOP = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
ACCEPTED_MODALITIES = frozenset({"CR", "DX"})
# Transfer syntaxes newer than pydicom 3.0's UID dictionary.
TS_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}

CHEST_TERMS = frozenset(
    {"CHEST", "THORAX", "TORAX", "TORACE", "THORAKS", "LUNG", "LUNGS", "CXR", "PECHO", "POUMON", "POUMONS"}
)
OTHER_BODY_TERMS = frozenset(
    {
        "SKULL",
        "HEAD",
        "BRAIN",
        "NECK",
        "FACE",
        "FACIAL",
        "ORBIT",
        "ORBITS",
        "SINUS",
        "SINUSES",
        "JAW",
        "MANDIBLE",
        "TEETH",
        "TOOTH",
        "DENTAL",
        "SPINE",
        "CSPINE",
        "TSPINE",
        "LSPINE",
        "CERVICAL",
        "LUMBAR",
        "SACRUM",
        "COCCYX",
        "SACROILIAC",
        "PELVIS",
        "HIP",
        "HIPS",
        "FEMUR",
        "KNEE",
        "KNEES",
        "PATELLA",
        "TIBIA",
        "FIBULA",
        "LEG",
        "LEGS",
        "ANKLE",
        "FOOT",
        "FEET",
        "TOE",
        "TOES",
        "HEEL",
        "CALCANEUS",
        "SHOULDER",
        "CLAVICLE",
        "SCAPULA",
        "HUMERUS",
        "ELBOW",
        "FOREARM",
        "ARM",
        "WRIST",
        "HAND",
        "HANDS",
        "FINGER",
        "FINGERS",
        "THUMB",
        "ABDOMEN",
        "ABD",
        "KUB",
        "BREAST",
        "MAMMO",
        "MAMMOGRAPHY",
        "EXTREMITY",
        "EXTREMITIES",
        "CHESTABDOMEN",
        "CHESTABDPELVIS",
        "ABDOMENPELVIS",
        "BONEAGE",
        "WHOLEBODY",
    }
)
FRONTAL_TERMS = frozenset({"PA", "AP", "FRONTAL", "POSTEROANTERIOR", "ANTEROPOSTERIOR"})
NON_FRONTAL_TERMS = frozenset(
    {
        "LAT",
        "LATERAL",
        "LATERALE",
        "LL",
        "RL",
        "LLAT",
        "RLAT",
        "LATL",
        "LATR",
        "OBL",
        "OBLIQUE",
        "RAO",
        "LAO",
        "RPO",
        "LPO",
        "LLO",
        "RLO",
        "DECUB",
        "DECUBITUS",
        "LLD",
        "RLD",
        "LORDOTIC",
        "AXIAL",
        "TANGENTIAL",
        "PROFIL",
        "SEITLICH",
    }
)
# In free text, two-letter LL/RL are too often "left/right lower (lobe)": only the coded
# ViewPosition uses them.
TEXT_NON_FRONTAL_TERMS = NON_FRONTAL_TERMS - {"LL", "RL"}
SPECIES_TERMS = frozenset(
    {
        "CANINE",
        "FELINE",
        "EQUINE",
        "BOVINE",
        "PORCINE",
        "OVINE",
        "CAPRINE",
        "AVIAN",
        "MURINE",
        "LEPORINE",
        "DOG",
        "CAT",
        "HORSE",
        "COW",
        "PIG",
        "SHEEP",
        "GOAT",
        "RABBIT",
        "VETERINARY",
    }
)
HUMAN_SPECIES = frozenset({"HOMO SAPIENS", "HUMAN", "HOMOSAPIENS"})
OTHER_MODALITY_TERMS = frozenset({"CT", "CTA", "MR", "MRI", "US", "ULTRASOUND", "PET", "NM", "SPECT", "ECHO"})

# Coded views (SNOMED CT and the legacy SNOMED-RT/DICOM codes of CID 4010 / 4014).
FRONTAL_CODES = frozenset({"399348003", "399214001", "272479007", "399033003", "R-10206", "R-10214"})
NON_FRONTAL_CODES = frozenset(
    {
        "399173006",
        "399198007",
        "399067008",
        "49370004",
        "102536004",
        "102535000",
        "399312000",
        "399160007",
        "R-10236",
        "R-10232",
        "R-10202",
        "R-10204",
    }
)
CHEST_CODES = frozenset({"816094009", "43799004", "51185008", "T-D3000", "T-32000"})
HUMAN_CODES = frozenset({"337915000", "L-85B00"})

# Text attributes weighed for body part and view, in order of specificity (instance and
# series level before study and request level).
TEXT_KEYWORDS = (
    "SeriesDescription",
    "AcquisitionDeviceProcessingDescription",
    "ProtocolName",
    "PerformedProtocolCodeSequence",
    "BodyPartExamined",
    "StudyDescription",
    "RequestedProcedureDescription",
)
