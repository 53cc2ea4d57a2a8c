"""The out-of-distribution score in the DICOM results: SR content items and the SC legend line.

For :mod:`chexnet_dicom.outputs.sr` (one more TID 1501 measurement group per image) and
:mod:`chexnet_dicom.outputs.legend` (one more legend line); both only call these
functions.  The concepts use the project's documented private coding scheme
(:data:`~chexnet_dicom.model.labels.PRIVATE_SCHEME`): DICOM has no standard concept for
"out-of-distribution score".  The qualitative evaluation's value is SNOMED CT Yes / No.
"""

from __future__ import annotations

from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    Measurement,
    MeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    SourceImageForMeasurement,
    SourceImageForMeasurementGroup,
    TrackingIdentifier,
)
from pydicom.sr.codedict import codes

from chexnet_dicom.model.labels import PRIVATE_SCHEME
from chexnet_dicom.model.prediction import Prediction
from chexnet_dicom.outputs.identity import output_uid
from chexnet_dicom.results import ImageResult

__all__ = [
    "OOD_FINDING",
    "OOD_FLAG",
    "OOD_SCORE",
    "legend_line",
    "ood_group",
    "withheld_reason",
]

#: Finding type of the group: the input itself as the model judges it.
OOD_FINDING = CodedConcept(
    value="OOD_INPUT", scheme_designator=PRIVATE_SCHEME, meaning="Input distribution check"
)
#: NUM concept: the score (higher = less like the reference images).
OOD_SCORE = CodedConcept(
    value="OOD_SCORE", scheme_designator=PRIVATE_SCHEME, meaning="Out-of-distribution score"
)
#: Qualitative evaluation concept: the score at or above the card's threshold.
OOD_FLAG = CodedConcept(value="OOD", scheme_designator=PRIVATE_SCHEME, meaning="Out-of-distribution")
_YES = CodedConcept.from_code(codes.SCT.Yes)
_NO = CodedConcept.from_code(codes.SCT.No)
_UNITLESS = CodedConcept.from_code(codes.UCUM.NoUnits)


def ood_group(result: ImageResult, image_no: int) -> MeasurementsAndQualitativeEvaluations | None:
    """A TID 1501 group: the image's OOD score (NUM) and flag (qualitative evaluation).

    Parameters
    ----------
    result
        The analysed image.
    image_no
        1-based image number in the report (tracking identifier text).

    Returns
    -------
    highdicom.sr.MeasurementsAndQualitativeEvaluations or None
        None when the prediction carries no score (the SR's text says why, see
        :func:`legend_line`).
    """
    pred = result.prediction
    if pred.ood_score is None or pred.ood_threshold is None:
        return None
    ds = result.dataset
    sop = str(ds.SOPInstanceUID)
    tracking = TrackingIdentifier(
        identifier=f"Out-of-distribution check, image {image_no}",
        uid=output_uid("tracking", pred.weights_sha256, sop, "ood"),
    )
    algorithm = AlgorithmIdentification(
        name=str(pred.model_name),
        version=str(pred.model_version),
        parameters=[f"method {pred.ood_method}", f"threshold {pred.ood_threshold:.6g}"],
    )
    measurement = Measurement(
        name=OOD_SCORE,
        value=float(f"{pred.ood_score:.6g}"),
        unit=_UNITLESS,
        referenced_images=[SourceImageForMeasurement.from_source_image(ds)],
    )
    evaluation = QualitativeEvaluation(name=OOD_FLAG, value=_YES if pred.out_of_distribution else _NO)
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        finding_type=OOD_FINDING,
        algorithm_id=algorithm,
        measurements=[measurement],
        qualitative_evaluations=[evaluation],
        source_images=[SourceImageForMeasurementGroup.from_source_image(ds)],
    )


def legend_line(prediction: Prediction) -> str:
    """The SC legend's (ASCII) line on the out-of-distribution check."""
    if prediction.ood_score is None or prediction.ood_threshold is None:
        return "Out-of-distribution check: not available"
    verdict = "OUT-OF-DISTRIBUTION" if prediction.out_of_distribution else "in distribution"
    return f"OOD score {prediction.ood_score:.3g} (threshold {prediction.ood_threshold:.3g}): {verdict}"


def withheld_reason(prediction: Prediction) -> str:
    """Why ``[outputs] ood = "withhold"`` reports no findings for an image (SR text, legend)."""
    return (
        f"Findings withheld: the image's out-of-distribution score ({prediction.ood_method}) "
        f"{prediction.ood_score:.4g} reaches the model's threshold {prediction.ood_threshold:.4g}; "
        "it is unlike the images the model was trained on, so its findings are not reported."
    )
