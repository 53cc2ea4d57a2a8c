"""The out-of-distribution score in the DICOM results: SR content items and the SC legend line.

For :mod:`chexnet_dicom.outputs.sr` (one more TID 1501 measurement group per image) and
:mod:`chexnet_dicom.outputs.legend` (one more legend line); both only call these
functions.  The concepts use the project's documented private coding scheme
(:data:`~chexnet_dicom.model.labels.PRIVATE_SCHEME`): DICOM has no standard concept for
"out-of-distribution score".  The qualitative evaluation's value is SNOMED CT Yes / No.

Policy ``[outputs] ood`` (:data:`OOD_POLICIES`): ``"flag"`` (the default) reports an
out-of-distribution image's findings and flags it; ``"withhold"`` (:func:`withholds`)
reports none for it: its SR keeps the score group and says why in a
:data:`FINDINGS_WITHHELD` text, its SC draws no heatmap and its legend
(:func:`withheld_legend_lines`) gives the same reason.
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
from chexnet_dicom.outputs.identity import RESEARCH_USE_ONLY, output_uid
from chexnet_dicom.results import ImageResult

__all__ = [
    "FINDINGS_WITHHELD",
    "OOD_FINDING",
    "OOD_FLAG",
    "OOD_POLICIES",
    "OOD_SCORE",
    "legend_line",
    "ood_group",
    "withheld_legend_lines",
    "withheld_reason",
    "withholds",
]

#: ``[outputs] ood`` values: report and flag, or withhold an out-of-distribution image's findings.
OOD_POLICIES: tuple[str, ...] = ("flag", "withhold")

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
#: SR text concept (Qualitative Evaluations): an image whose findings are withheld, and why.
FINDINGS_WITHHELD = CodedConcept(
    value="FINDINGS_WITHHELD", scheme_designator=PRIVATE_SCHEME, meaning="Findings withheld"
)
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
    score, threshold = _short(prediction.ood_score), _short(prediction.ood_threshold)
    if prediction.out_of_distribution:
        return f"OUT-OF-DISTRIBUTION (OOD score {score} >= threshold {threshold})"
    return f"In distribution (OOD score {score} < threshold {threshold})"


def _short(value: float) -> str:
    """At most 3 significant digits, never an exponent above 1000 (the legend wraps at spaces)."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def withheld_reason(prediction: Prediction) -> str:
    """Why ``[outputs] ood = "withhold"`` reports no findings for an image (SR text, legend)."""
    return (
        f"Findings withheld: the image's out-of-distribution score ({prediction.ood_method}) "
        f"{prediction.ood_score:.4g} reaches the model's threshold {prediction.ood_threshold:.4g}; "
        "it is unlike the images the model was trained on, so its findings are not reported."
    )


def withholds(prediction: Prediction, policy: str) -> bool:
    """Whether ``policy`` withholds this image's findings: ``"withhold"`` and the image flagged.

    Parameters
    ----------
    prediction
        The image's prediction.
    policy
        ``[outputs] ood`` (:data:`OOD_POLICIES`).

    Returns
    -------
    bool
        False under ``"flag"``, for an image below its threshold and for one without a
        score (nothing says it is out of distribution).
    """
    return policy == "withhold" and prediction.out_of_distribution is True


def withheld_legend_lines(prediction: Prediction) -> list[str]:
    """The SC legend (ASCII) of an image whose findings are withheld: why, the score, the model."""
    lines = [
        f"{RESEARCH_USE_ONLY} - not for diagnosis",
        "No heatmap, no findings listed:",
        withheld_reason(prediction),
        legend_line(prediction),
        f"{prediction.model_name} {prediction.model_version}",
    ]
    return [line.encode("ascii", "replace").decode("ascii") for line in lines]
