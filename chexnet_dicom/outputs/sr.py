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
          Probability (DCM 122157), NUM, UCUM "1", value = the predictor's output,
            selected from the source image (TID 320 row 1)
          Threshold: the operating point, a NUM
          <finding> = Present | Absent at the model card's operating point: a
            qualitative evaluation CODE item (TID 1501 row 11)
        after each present finding's group, two TID 1410 Planar ROI groups (reachable
        through highdicom's get_planar_roi_measurement_groups()), each with the
        finding, Present and one closed POLYLINE Image Region on the source image,
        drawn from the finding's relative evidence map (chexnet_dicom.results) at
        card.cam_threshold (chexnet_dicom.outputs.regions):
          purpose Outline (DCM 111041): the largest connected area reaching it
          purpose Bounded by (SCT 75958009): the rectangle around every area reaching it
      Qualitative Evaluations (TID 1500 row 12)
        Comment: research use only + how the study summary is built
        per finding: TEXT "study maximum probability ..." (max over analysed images;
          present when the maximum reaches the operating point)
        per skipped instance: "Image not analysed" TEXT with its reason code and message
        per image withheld ([outputs] ood = "withhold", score at or above its threshold):
          "Findings withheld" TEXT with the reason; the image keeps only its OOD score group

PixelMed's DicomSRValidator (the IHE AI Results test tool) accepts it with 0 errors.
Its one warning per finding group, "Content Item not in template" on the present/absent
CODE item, is the validator's gap: its TID 1501 tables end before row 11 (qualitative
evaluations as coded entries), which DCMTK's ``TID1501_MeasurementGroup`` also writes.
Region groups get it twice (Present, and the geometric purpose): with 2+ Image Regions in
a report PixelMed checks them against TID 1501 too (see ``_groups`` on why regions
always come in pairs).

A study whose instances were all skipped gets the same document without Imaging
Measurements: only the Qualitative Evaluations saying what was not analysed and why.
VerificationFlag is UNVERIFIED, CompletionFlag PARTIAL, PreliminaryFlag PRELIMINARY.
A later version of a study's SR passes the earlier one(s) as ``previous`` and lists them
in the PredecessorDocumentsSequence.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from highdicom.sr import (
    CodeContentItem,
    CodedConcept,
    Comprehensive3DSR,
    ContainerContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    GraphicTypeValues,
    ImageRegion,
    LanguageOfContentItemAndDescendants,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
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
from pydicom.valuerep import DS

from chexnet_dicom.dicom.reasons import DUPLICATE_INSTANCE
from chexnet_dicom.dicom.study import Skipped
from chexnet_dicom.errors import OutputError
from chexnet_dicom.logs import phi_ref, redact
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.outputs import codes as cc
from chexnet_dicom.outputs import hd_fast
from chexnet_dicom.outputs.hd_fast import comprehensive_3d_sr
from chexnet_dicom.outputs.header import check_same_study, evidence_header, quiet_highdicom, sanitize_copied
from chexnet_dicom.outputs.identity import (
    MANUFACTURER,
    RESEARCH_USE_ONLY,
    SERIES_DESCRIPTIONS,
    SERIES_NUMBERS,
    CardLike,
    finalize_file_meta,
    output_uid,
    record_left_out,
    series_uid,
    software_versions,
    sorted_uids,
)
from chexnet_dicom.outputs.ood_items import FINDINGS_WITHHELD, ood_group, withheld_reason, withholds
from chexnet_dicom.outputs.provenance import algorithm_equipment
from chexnet_dicom.outputs.regions import evidence_regions, heatmap_region
from chexnet_dicom.outputs.reliability import (
    UNRELIABLE_TEXT,
    by_margin,
    unreliable_findings,
    unreliable_reason,
)
from chexnet_dicom.results import ImageResult, study_summary

__all__ = ["build_sr", "finding_name", "heatmap_region", "sr_uid"]

logger = logging.getLogger(__name__)

#: A measurement group of the report: a finding's (TID 1501) or one of its regions (TID 1410).
Group = MeasurementsAndQualitativeEvaluations | PlanarROIMeasurementsAndQualitativeEvaluations


def sr_uid(
    results: Sequence[ImageResult],
    skipped: Sequence[Skipped],
    weights_sha256: str,
    withheld: Sequence[ImageResult] = (),
) -> str:
    """SOP Instance UID of the SR for these analysed and skipped instances and weights.

    Images whose findings are withheld (``[outputs] ood = "withhold"``) give another
    document, so they are part of the UID; without any, it is the ``"flag"`` SR's UID.
    """
    analysed = sorted_uids([r.dataset for r in results])
    not_analysed = sorted_uids([s.dataset for s in skipped if s.dataset is not None])
    hidden = ["withheld", *sorted_uids([r.dataset for r in withheld])] if withheld else []
    return output_uid("sr", weights_sha256, "analysed", *analysed, "skipped", *not_analysed, *hidden)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _text(name: CodedConcept, value: str) -> TextContentItem:
    return TextContentItem(name=name, value=_ascii(value), relationship_type=RelationshipTypeValues.CONTAINS)


@functools.cache
def finding_name(label: str) -> str:
    """The one spelling of a finding in the SR: the meaning of its code (computed once per label)."""
    return str(cc.finding_concept(label).meaning)


def _sig3(value: float) -> str:
    return f"{value:.3g}"


def _num(
    name: CodedConcept,
    value: float,
    referenced_images: list[SourceImageForMeasurement] | None = None,
) -> Measurement:
    """A TID 300 NUM: Numeric Value (what a renderer shows) at 3 significant digits,
    Floating Point Value (what a program reads, highdicom's ``value``) at full precision."""
    item = Measurement(
        name=name,
        value=float(value),
        unit=cc.PROBABILITY_UNIT,
        referenced_images=referenced_images,
    )
    measured = item[0].MeasuredValueSequence[0]
    measured.NumericValue = DS(_sig3(float(value)))
    measured.FloatingPointValue = float(value)
    return item


def _groups(
    result: ImageResult, image_no: int, k: int, card: CardLike, unreliable: frozenset[str]
) -> list[Group]:
    """One finding of one image: its TID 1501 group; a present finding's two TID 1410 regions after it."""
    label = LABELS[k]
    ds = result.dataset
    sop = str(ds.SOPInstanceUID)
    prob = float(result.prediction.probabilities[k])
    thr = float(card.threshold(label))
    present = prob >= thr
    finding = cc.finding_concept(label)
    name = finding_name(label)
    is_unreliable = label in unreliable

    def evaluation() -> list[QualitativeEvaluation]:
        return [QualitativeEvaluation(name=finding, value=cc.PRESENT if present else cc.ABSENT)]

    groups: list[Group] = [
        MeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(
                identifier=f"{name}, image {image_no}",
                uid=output_uid("tracking", card.weights_sha256, sop, label),
            ),
            finding_type=finding,
            algorithm_id=cc.algorithm_identification(card, region=None, unreliable=is_unreliable),
            measurements=[
                _num(
                    cc.PROBABILITY, prob, referenced_images=[SourceImageForMeasurement.from_source_image(ds)]
                ),
                _num(cc.THRESHOLD, thr),
            ],
            qualitative_evaluations=evaluation(),
            source_images=[SourceImageForMeasurementGroup.from_source_image(ds)],
        )
    ]
    heat = result.heatmap(k) if present and result.has_heatmaps else None
    regions = (
        None if heat is None else evidence_regions(heat, card.cam_threshold, source_shape=result.source_shape)
    )
    if regions is None:
        return groups
    # Where the evidence lies: TID 1410 groups, which highdicom's
    # get_planar_roi_measurement_groups() returns. Both forms, always together: a finding
    # never has one region alone. PixelMed's validator (pixelmed.jar 20220618,
    # DicomSRDescriptionsCompiled.xsl, TID 1500 Imaging Measurements) applies TID 1410 to
    # *every* Measurement Group when count(container[125007]/scoord[111030, CONTAINS]) = 1
    # over all the groups, so a report with exactly one region would have each TID 1501
    # group reported as a TID 1410 group without its Image Region (2 errors per group).
    for kind, coords, purpose, what in (
        ("outline", regions.outline, cc.OUTLINE, "outline"),
        ("box", regions.box, cc.BOUNDED_BY, "bounding box"),
    ):
        groups.append(
            PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=TrackingIdentifier(
                    identifier=f"{name}, image {image_no}, {what}",
                    uid=output_uid("tracking", card.weights_sha256, sop, label, kind),
                ),
                referenced_region=ImageRegion(
                    graphic_type=GraphicTypeValues.POLYLINE,
                    graphic_data=coords,
                    source_image=SourceImageForRegion.from_source_image(ds),
                ),
                finding_type=finding,
                geometric_purpose=purpose,
                algorithm_id=cc.algorithm_identification(card, region=kind, unreliable=is_unreliable),
                qualitative_evaluations=evaluation(),
            )
        )
    return groups


def _image_groups(
    result: ImageResult, image_no: int, card: CardLike, unreliable: frozenset[str]
) -> list[Group]:
    """An image's 14 finding groups (each present one followed by its regions), present
    findings first, largest margin (probability - threshold) first."""
    order = [LABELS.index(label) for label in by_margin(result.prediction.probabilities, card)]
    return [group for k in order for group in _groups(result, image_no, k, card, unreliable)]


def _unreliable_note(card: CardLike, label: str) -> str:
    reason = unreliable_reason(card, label)
    return f"; {UNRELIABLE_TEXT}: {reason}" if reason else ""


def _not_analysed(skipped: Sequence[Skipped], analysed: set[str]) -> list[TextContentItem]:
    """One line per instance not analysed; duplicates of one SOP Instance UID once, naming that UID."""
    items: list[TextContentItem] = []
    duplicates: dict[str, int] = {}
    for sk in skipped:
        uid = str(sk.dataset.get("SOPInstanceUID", "?")) if sk.dataset is not None else ""
        if sk.reason == DUPLICATE_INSTANCE and uid:
            duplicates[uid] = duplicates.get(uid, 0) + 1
            continue
        if sk.dataset is not None:
            what = f"instance {uid} (series {sk.dataset.get('SeriesNumber', '?')})"
        else:
            what = "an unreadable file"
        items.append(_text(cc.NOT_ANALYSED, f"{what} not analysed: {sk.reason}: {sk.message}"))
    for uid, n in duplicates.items():
        used = "the copy analysed is the one reported here" if uid in analysed else "no copy was analysed"
        items.append(
            _text(
                cc.NOT_ANALYSED,
                f"instance {uid} received {n + 1} times ({DUPLICATE_INSTANCE}); {used}",
            )
        )
    return items


def _evaluations(
    results: Sequence[ImageResult],
    skipped: Sequence[Skipped],
    card: CardLike,
    withheld: frozenset[int] = frozenset(),
) -> ContainerContentItem:
    """TID 1500 row 12, placed first: research use, present findings, one line per finding.

    ``withheld``: indices of images whose findings are withheld; the summary covers the others.
    """
    n = len(results)
    items: list[TextContentItem] = [
        _text(
            CodedConcept.from_code(codes.DCM.Comment),
            f"{RESEARCH_USE_ONLY}. Not for clinical decisions. {card.intended_use}",
        )
    ]
    numbers = [i for i in range(n) if i not in withheld]  # summary index -> image index
    summary = study_summary([results[i] for i in numbers])
    if withheld and not numbers:
        items.append(
            _text(
                cc.SUMMARY, f"No findings reported: the findings of all {n} analysed image(s) are withheld."
            )
        )
    elif n:
        present = [
            f"{finding_name(label)} {_sig3(s.probability)} (threshold {_sig3(s.threshold)}"
            f"{_unreliable_note(card, label)})"
            for label, s in sorted(summary.items(), key=lambda kv: kv[1].threshold - kv[1].probability)
            if s.present
        ]
        line = "Present findings: " + "; ".join(present) if present else "No finding reaches its threshold"
        over = f"the {n} analysed image(s)"
        if withheld:
            over = f"the {len(numbers)} image(s) reported ({len(withheld)} of {n} withheld)"
        items.append(_text(cc.SUMMARY, f"{line}. Probability is the maximum over {over}."))
    else:
        items.append(_text(cc.SUMMARY, "No image of this study was analysed; the reasons are listed below."))
    for label, s in summary.items():
        state = "present" if s.present else "absent"
        items.append(
            _text(
                cc.finding_concept(label),
                # the item's concept name is the finding: renderers print it as the label
                f"study maximum Probability {_sig3(s.probability)} "
                f"(image {numbers[s.image_index] + 1} of {n}), threshold {_sig3(s.threshold)}: {state}"
                f"{_unreliable_note(card, label)}",
            )
        )
    for i in sorted(withheld):
        uid = results[i].dataset.SOPInstanceUID
        items.append(
            _text(
                FINDINGS_WITHHELD, f"image {i + 1} (instance {uid}): {withheld_reason(results[i].prediction)}"
            )
        )
    analysed = {str(r.dataset.SOPInstanceUID) for r in results}
    items.extend(_not_analysed(skipped, analysed))
    container = ContainerContentItem(
        name=cc.QUALITATIVE_EVALUATIONS,
        relationship_type=RelationshipTypeValues.CONTAINS,
        is_content_continuous=False,
    )
    container.ContentSequence = ContentSequence(items)
    return container


def _separate(items: Sequence[Dataset]) -> None:
    """Mark every container SEPARATE: renderers then label each item with its concept name."""
    for item in items:
        if getattr(item, "ValueType", None) == "CONTAINER":
            item.ContinuityOfContent = "SEPARATE"
        if "ContentSequence" in item:
            _separate(item.ContentSequence)


@contextmanager
def _highdicom_errors(what: str) -> Iterator[None]:
    """Turn highdicom's refusal of ``what`` into an OutputError.

    KeyError: highdicom looks up the IOD of a referenced instance (a region's source image,
    the Patient/Study modules copied from the first evidence instance) and knows none for
    an unlisted SOP class (a private 2.25 UID).
    """
    try:
        yield
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise OutputError(
            f"highdicom rejected {what} ({type(exc).__name__}: {redact(exc)}); "
            "the study's headers break a rule the SR needs"
        ) from exc


def build_sr(
    results: Sequence[ImageResult],
    card: CardLike,
    *,
    skipped: Sequence[Skipped] = (),
    previous: Sequence[Dataset] = (),
    instance_number: int = 1,
    overlays: Sequence[Dataset] = (),
    ood_policy: str = "flag",
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
    overlays
        The SC overlays that show this study's findings; referenced as evidence
        (Pertinent Other Evidence Sequence).
    ood_policy
        ``[outputs] ood``: under ``"withhold"`` an out-of-distribution image keeps only
        its score group, and a Findings withheld text says why (no finding groups).

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
    hd_fast.install()  # concept hash once per concept, module map parsed lazily (outputs/hd_fast.py)
    headers = [evidence_header(r.dataset) for r in results]
    if not headers:
        headers = [evidence_header(s.dataset) for s in skipped if s.dataset is not None]
    if not headers:
        raise OutputError("no instance of the study could be read: an SR needs at least one DICOM header")
    overlay_headers = [evidence_header(sc) for sc in overlays]
    study_uid = check_same_study(
        headers + [evidence_header(s.dataset) for s in skipped if s.dataset is not None] + overlay_headers
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
    unreliable = unreliable_findings(card)
    groups: list[Group] = []
    withheld = frozenset(i for i, r in enumerate(results) if withholds(r.prediction, ood_policy))
    with _highdicom_errors("a measurement group"):
        for i, r in enumerate(results):
            if i not in withheld:  # a withheld image reports no finding, only its score
                groups.extend(_image_groups(r, i + 1, card, unreliable))
            # the image's out-of-distribution score, when the weights have a reference
            ood = ood_group(r, i + 1)
            if ood is not None:
                groups.append(ood)
    evaluations = _evaluations(results, skipped, card, withheld)
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
    # the research-use statement and the present findings come first when rendered:
    # Qualitative Evaluations right after the procedure, before Imaging Measurements
    position = next(
        (i for i, item in enumerate(root.ContentSequence) if item.get("ValueType") == "CONTAINER"),
        len(root.ContentSequence),
    )
    root.ContentSequence.insert(position, evaluations)
    _separate([root])

    sop_uid = sr_uid(results, skipped, card.weights_sha256, [results[i] for i in sorted(withheld)])
    with _highdicom_errors("the SR content"), quiet_highdicom():
        sr = comprehensive_3d_sr(  # highdicom's Comprehensive3DSR, without its copies
            evidence=headers + overlay_headers,
            content=root,
            series_instance_uid=series_uid("sr", study_uid, card.weights_sha256),
            series_number=SERIES_NUMBERS["sr"],
            sop_instance_uid=sop_uid,
            instance_number=instance_number,
            manufacturer=MANUFACTURER,
            # COMPLETE when every instance meant for analysis was analysed: skipped
            # files were out of scope or redundant, none was defective
            is_complete=all(s.status != "error" for s in skipped),
            is_final=False,
            is_verified=False,
            previous_versions=list(previous) or None,
            contributing_equipment=[algorithm_equipment(card, description="Findings (TID 1500 SR)")],
            coding_schemes=[cc.PRIVATE_SCHEME_ITEM],
            series_description=SERIES_DESCRIPTIONS["sr"],
            manufacturer_model_name=str(card.name)[:64],
            software_versions=software_versions(card),  # LO, multi-valued
        )
    sanitize_copied(sr)
    source = results[0].dataset if results else next(s.dataset for s in skipped if s.dataset is not None)
    record_left_out(sr, source, card)  # a source value the SR could not keep is recorded, not lost
    # result series dated by the time of analysis, as the content is
    sr.SeriesDate = sr.ContentDate
    sr.SeriesTime = sr.ContentTime
    logger.info(
        "built SR %s: %d image(s), %d skipped, %d predecessor(s)",
        phi_ref(sop_uid),
        len(results),
        len(skipped),
        len(previous),
    )
    return finalize_file_meta(sr)
