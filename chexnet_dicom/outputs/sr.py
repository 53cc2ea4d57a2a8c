"""TID 1500 Measurement Report (Comprehensive 3D SR) of the model's findings.

Document layout (one SR per study and model), following PS3.16 TID 1500/1501/4019::

    Imaging Measurement Report (TID 1500)
      Language, Observation context: device observer = the model (UID = card.device_uid)
      Procedure reported (row 4, one item from CID 100): Imaging procedure
      Imaging Measurements
        one Measurement Group (TID 1501) per finding per analysed image (14 x images):
          Tracking Identifier + Tracking UID (deterministic)
          Finding (the finding's code, see chexnet_dicom.outputs.codes)
          Algorithm Name / Version / Parameters (TID 4019: operating point, region rule)
          Probability (DCM 122157), NUM, UCUM "1", value = the predictor's output:
            present findings: INFERRED FROM its image region (TID 300 row 8 / TID 320):
              a closed POLYLINE SCOORD, purpose "Image Region", around the largest
              connected area where the finding's relative evidence map
              (chexnet_dicom.results) reaches card.cam_threshold: the area the overlay
              colours; absent findings (or a flat map): the source image referenced
          <finding> = Present | Absent at the model card's operating point: a
            qualitative evaluation CODE item (TID 1501 row 11)
      Qualitative Evaluations (TID 1500 row 12)
        Comment: research use only + how the study summary is built
        per finding: TEXT "study maximum probability ..." (max over analysed images;
          present when the maximum reaches the operating point)
        per skipped instance: "Image not analysed" TEXT with its reason code and message

PixelMed's DicomSRValidator (the IHE AI Results test tool) accepts it with 0 errors.
Its one warning per finding group, "Content Item not in template" on the present/absent
CODE item, is the validator's gap: its TID 1501 tables end before row 11 (qualitative
evaluations as coded entries), which DCMTK's ``TID1501_MeasurementGroup`` also writes.

A study whose instances were all skipped gets the same document without Imaging
Measurements: only the Qualitative Evaluations saying what was not analysed and why.
VerificationFlag is UNVERIFIED, CompletionFlag PARTIAL, PreliminaryFlag PRELIMINARY.
A later version of a study's SR passes the earlier one(s) as ``previous`` and lists them
in the PredecessorDocumentsSequence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    CodedConcept,
    Comprehensive3DSR,
    ContainerContentItem,
    ContentSequence,
    CoordinatesForMeasurement,
    DeviceObserverIdentifyingAttributes,
    GraphicTypeValues,
    LanguageOfContentItemAndDescendants,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForMeasurement,
    SourceImageForMeasurementGroup,
    SourceImageForRegion,
    TextContentItem,
    TrackingIdentifier,
)
from highdicom.sr.templates import DEFAULT_LANGUAGE
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from chexnet_dicom.dicom.study import Skipped
from chexnet_dicom.errors import OutputError
from chexnet_dicom.logs import phi_ref, redact
from chexnet_dicom.model.labels import DISPLAY_NAMES, LABELS
from chexnet_dicom.outputs import codes as cc
from chexnet_dicom.outputs.header import check_same_study, evidence_header, quiet_highdicom, sanitize_copied
from chexnet_dicom.outputs.identity import (
    MANUFACTURER,
    RESEARCH_USE_ONLY,
    SERIES_DESCRIPTIONS,
    SERIES_NUMBERS,
    CardLike,
    finalize_file_meta,
    output_uid,
    series_uid,
    software_versions,
    sorted_uids,
)
from chexnet_dicom.outputs.provenance import algorithm_equipment
from chexnet_dicom.outputs.regions import heatmap_region
from chexnet_dicom.results import ImageResult, study_summary

__all__ = ["build_sr", "heatmap_region", "sr_uid"]

logger = logging.getLogger(__name__)


def sr_uid(results: Sequence[ImageResult], skipped: Sequence[Skipped], weights_sha256: str) -> str:
    """SOP Instance UID of the SR for these analysed and skipped instances and weights."""
    analysed = sorted_uids([r.dataset for r in results])
    not_analysed = sorted_uids([s.dataset for s in skipped if s.dataset is not None])
    return output_uid("sr", weights_sha256, "analysed", *analysed, "skipped", *not_analysed)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _text(name: CodedConcept, value: str) -> TextContentItem:
    return TextContentItem(name=name, value=_ascii(value), relationship_type=RelationshipTypeValues.CONTAINS)


def _group(
    result: ImageResult, image_no: int, k: int, card: CardLike
) -> MeasurementsAndQualitativeEvaluations:
    """One finding of one image: a TID 1501 group; a present finding's region under its probability."""
    label = LABELS[k]
    ds = result.dataset
    sop = str(ds.SOPInstanceUID)
    prob = float(result.prediction.probabilities[k])
    thr = float(card.threshold(label))
    present = prob >= thr
    finding = cc.finding_concept(label)
    tracking = TrackingIdentifier(
        identifier=f"{DISPLAY_NAMES[label]}, image {image_no}",
        uid=output_uid("tracking", card.weights_sha256, sop, label),
    )
    region_coords = None
    if present and result.has_heatmaps:
        heat = result.heatmap(k)
        if heat is not None:
            region_coords = heatmap_region(heat, card.cam_threshold)
    parameters = [f"operating point {thr:.6g}", f"probability output of finding index {k}"]
    if region_coords is not None:
        parameters.append(
            f"region: largest connected area where the relative evidence map >= {card.cam_threshold:.6g}"
        )
    # TID 4019 rows 1-3: name, version, parameters (the manufacturer is the device observer's)
    algorithm = AlgorithmIdentification(name=str(card.name), version=str(card.version), parameters=parameters)
    coordinates = None
    if region_coords is not None:
        # TID 300 row 8 (INFERRED FROM, TID 320): the probability was inferred from this region
        coordinates = [
            CoordinatesForMeasurement(
                graphic_type=GraphicTypeValues.POLYLINE,
                graphic_data=region_coords,
                source_image=SourceImageForRegion.from_source_image(ds),
                purpose=cc.IMAGE_REGION,
            )
        ]
    measurement = Measurement(
        name=cc.PROBABILITY,
        value=prob,
        unit=cc.PROBABILITY_UNIT,
        # TID 320: the image itself (row 1) or a region of it (row 3, selected from the
        # image), not both
        referenced_images=None if coordinates else [SourceImageForMeasurement.from_source_image(ds)],
        referenced_coordinates=coordinates,
    )
    evaluation = QualitativeEvaluation(name=finding, value=cc.PRESENT if present else cc.ABSENT)
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        finding_type=finding,
        algorithm_id=algorithm,
        measurements=[measurement],
        qualitative_evaluations=[evaluation],
        source_images=[SourceImageForMeasurementGroup.from_source_image(ds)],
    )


def _evaluations(
    results: Sequence[ImageResult], skipped: Sequence[Skipped], card: CardLike
) -> ContainerContentItem:
    items: list[TextContentItem] = []
    n = len(results)
    intro = f"{RESEARCH_USE_ONLY}. Not for clinical decisions. {card.intended_use} "
    if n:
        intro += (
            f"Study-level summary: for each finding the maximum probability over the {n} analysed "
            "image(s); the finding is present when that maximum reaches its operating point."
        )
    else:
        intro += "No image of this study was analysed; the reasons are listed below."
    items.append(_text(CodedConcept.from_code(codes.DCM.Comment), intro))
    for label, s in study_summary(results).items():
        state = "present" if s.present else "absent"
        items.append(
            _text(
                cc.finding_concept(label),
                f"study maximum probability {s.probability:.6f} (image {s.image_index + 1} "
                f"of {n}); {state} at operating point {s.threshold:.6g}",
            )
        )
    for sk in skipped:
        if sk.dataset is not None:
            what = f"instance {sk.dataset.get('SOPInstanceUID', '?')} (series {sk.dataset.get('SeriesNumber', '?')})"
        else:
            what = "an unreadable file"
        items.append(_text(cc.NOT_ANALYSED, f"{what} not analysed: {sk.reason}: {sk.message}"))
    container = ContainerContentItem(
        name=cc.QUALITATIVE_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = ContentSequence(items)
    return container


def build_sr(
    results: Sequence[ImageResult],
    card: CardLike,
    *,
    skipped: Sequence[Skipped] = (),
    previous: Sequence[Dataset] = (),
    instance_number: int = 1,
) -> Comprehensive3DSR:
    """Build the TID 1500 Comprehensive 3D SR of one study.

    Parameters
    ----------
    results
        The analysed images of the study (may be empty when ``skipped`` is not).
    card
        The model card (name, version, operating points, cam_threshold, device UID).
    skipped
        Instances of the study that were not analysed, with reasons.
    previous
        Earlier SR(s) of the same study and model that this one supersedes (for
        example after late instances arrived); listed as predecessor documents.
    instance_number
        Instance Number of the SR in its series.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        Ready to write (see :func:`chexnet_dicom.outputs.common.write_dataset`).

    Raises
    ------
    OutputError
        Without any readable instance, for instances of several studies, or when
        highdicom rejects the content.
    """
    headers = [evidence_header(r.dataset) for r in results]
    if not headers:
        headers = [evidence_header(s.dataset) for s in skipped if s.dataset is not None]
    if not headers:
        raise OutputError("no instance of the study could be read: an SR needs at least one DICOM header")
    study_uid = check_same_study(
        headers + [evidence_header(s.dataset) for s in skipped if s.dataset is not None]
    )
    if any(str(p.StudyInstanceUID) != study_uid for p in previous):
        raise OutputError("a predecessor SR belongs to another study")

    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=card.device_uid,
            name=str(card.name)[:64],
            manufacturer_name=MANUFACTURER,
            model_name=str(card.name)[:64],
            serial_number=str(card.weights_sha256)[:64],
        ),
    )
    context = ObservationContext(observer_device_context=device)
    groups = [_group(r, i + 1, k, card) for i, r in enumerate(results) for k in range(len(LABELS))]
    evaluations = _evaluations(results, skipped, card)
    if groups:
        report = MeasurementReport(
            observation_context=context,
            procedure_reported=cc.PROCEDURE_REPORTED,
            imaging_measurements=groups,
        )
        root = report[0]
    else:
        # highdicom's MeasurementReport insists on Imaging Measurements; TID 1500 allows a
        # report made only of row 12 (Qualitative Evaluations), so build the root here.
        root = ContainerContentItem(name=codes.cid7021.ImagingMeasurementReport, template_id="1500")
        root.ContentSequence = ContentSequence(
            [
                *LanguageOfContentItemAndDescendants(DEFAULT_LANGUAGE),
                *context,
                CodeContentItem(
                    name=codes.DCM.ProcedureReported,
                    value=cc.PROCEDURE_REPORTED,
                    relationship_type=RelationshipTypeValues.HAS_CONCEPT_MOD,
                ),
            ]
        )
    root.ContentSequence.append(evaluations)

    sop_uid = sr_uid(results, skipped, card.weights_sha256)
    try:
        with quiet_highdicom():
            sr = Comprehensive3DSR(
                evidence=headers,
                content=root,
                series_instance_uid=series_uid("sr", study_uid, card.weights_sha256),
                series_number=SERIES_NUMBERS["sr"],
                sop_instance_uid=sop_uid,
                instance_number=instance_number,
                manufacturer=MANUFACTURER,
                is_complete=False,
                is_final=False,
                is_verified=False,
                previous_versions=list(previous) or None,
                contributing_equipment=[algorithm_equipment(card, description="Findings (TID 1500 SR)")],
                coding_schemes=[cc.PRIVATE_SCHEME_ITEM],
                series_description=SERIES_DESCRIPTIONS["sr"],
                manufacturer_model_name=str(card.name)[:64],
                software_versions=software_versions(card),  # LO, multi-valued
            )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        # KeyError: highdicom copies the Patient/Study modules by the IOD of the first
        # evidence instance and knows no IOD for an unlisted SOP class (a private 2.25 UID).
        raise OutputError(
            f"highdicom rejected the SR content ({type(exc).__name__}: {redact(exc)}); "
            "the study's headers break a rule the SR needs"
        ) from exc
    sanitize_copied(sr)
    logger.info(
        "built SR %s: %d image(s), %d skipped, %d predecessor(s)",
        phi_ref(sop_uid),
        len(results),
        len(skipped),
        len(previous),
    )
    return finalize_file_meta(sr)
