"""DICOM datasets around synthetic pixels: :class:`DatasetSpec` and :func:`make_dataset`.

:func:`make_dataset` wraps an image (float display image or integer stored values) into a
DX, CR or Secondary Capture dataset with the grey-scale pipeline attributes a test needs
(BitsStored, signed data, rescale or Modality LUT Sequence, windows or VOI LUT Sequence,
VOILUTFunction, MONOCHROME1, PresentationLUTShape, PatientOrientation...) and
deterministic UIDs, uncompressed in Explicit VR Little Endian.  The float semantics are
those of :mod:`chexnet_dicom.testing.synth`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
)

from chexnet_dicom.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, derive_uid
from chexnet_dicom.testing.stored import stored_range_for, to_stored

__all__ = [
    "CR_IMAGE_STORAGE",
    "DX_PRESENTATION_STORAGE",
    "DX_PROCESSING_STORAGE",
    "SC_IMAGE_STORAGE",
    "DatasetSpec",
    "ds_number",
    "make_dataset",
]

#: SOP classes the builders make.
DX_PRESENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")
DX_PROCESSING_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1.1")
CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
SC_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")
_SYNTH_ROOT = "chexnet-dicom-synth"
_VIEW_CODES = {
    "PA": codes.SCT.PosteroAnterior,
    "AP": codes.SCT.AnteroPosterior,
    "LL": codes.SCT.LeftLateral,
    "RL": codes.SCT.RightLateral,
}
# PatientOrientation (row direction, column direction) of the standard display of each view.
_ORIENTATION = {"PA": ("L", "F"), "AP": ("L", "F"), "LL": ("A", "F"), "RL": ("P", "F"), "LATERAL": ("A", "F")}


def ds_number(x: float) -> str:
    """A DS string of at most 16 characters."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    text = f"{x:.6g}"
    return text if len(text) <= 16 else f"{x:.8e}"[:16]


def _code_item(code: Any) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _lut_element(tag: int, values: np.ndarray) -> DataElement:
    """LUT Data as OW (little endian bytes; :func:`encode` swaps them for big endian)."""
    return DataElement(tag, "OW", values.astype("<u2").tobytes())


def _descriptor(n: int, first: int, values: np.ndarray) -> DataElement:
    """LUT Descriptor: entries (0 means 65536), first mapped value, bits per entry (8-16)."""
    vr = "SS" if first < 0 else "US"
    bits = max(8, int(values.max()).bit_length())
    return DataElement(0x00283002, vr, [n if n < 65536 else 0, first, bits])


def _is_ascii(text: str) -> bool:
    return all(ord(ch) < 128 for ch in text)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything :func:`make_dataset` writes besides the pixels (all fields have defaults).

    Attributes
    ----------
    modality
        The IOD: ``"DX"`` (Digital X-Ray for presentation/processing), ``"CR"``
        or ``"SC"`` (Secondary Capture, ConversionType SYN).
    modality_value
        Modality (0008,0060) to write instead of the IOD's (``"OT"`` for SC).
    sop_class_uid
        SOPClassUID override (gate tests).
    presentation_intent
        DX PresentationIntentType; selects the DX SOP class.
    photometric
        ``"MONOCHROME1"``, ``"MONOCHROME2"`` or ``"RGB"``.
    bits_allocated, bits_stored, pixel_representation
        Image Pixel module values; BitsAllocated defaults to 8 when
        BitsStored <= 8, else 16. HighBit is BitsStored - 1.
    stored_range
        Stored values that 0 and 1 of a float image map to.
    rescale_slope, rescale_intercept
        Modality rescale (RescaleType "US"). The DX IOD requires 1 and 0: other
        values make a non-conformant DX (fine for robustness tests; use CR for
        a conformant rescaled image).
    modality_lut
        Write a Modality LUT Sequence instead of rescale: 16-bit output
        stretching the representable stored range linearly over 0..65535.
    window
        ``"auto"``: one window exactly covering the modality values of the
        stored range for the chosen ``voi_lut_function``; a ``(center, width)``
        pair; a sequence of pairs (several windows with explanations); ``None``
        for no window.
    voi_lut_function
        VOILUTFunction to write (absent means LINEAR).
    voi_lut
        Add a VOI LUT Sequence mapping the modality range linearly to 16 bits.
    presentation_lut_shape
        ``"auto"`` writes INVERSE for MONOCHROME1 and IDENTITY for MONOCHROME2
        (required by DX, omitted for CR/SC); ``None`` omits it.
    view_position
        ViewPosition (``"PA"``, ``"AP"``, ``"LL"``, ``"RL"``, ``""``) or None to omit.
    view_code
        Add a ViewCodeSequence item (CID 4010 SNOMED CT code) for known views.
    patient_orientation
        ``"auto"`` derives it from the view (``L\\F`` frontal, ``A\\F`` left lateral),
        a pair, or None for an empty value.
    body_part
        BodyPartExamined, None to omit.
    laterality
        ImageLaterality (DX Type 1), None to omit.
    patient_name, patient_id
        Person name (may be non-ASCII) and ID (default derived from the seed).
    specific_character_set
        ``"auto"`` writes ``ISO_IR 192`` (UTF-8) when the name is not ASCII; pass
        ``"ISO_IR 100"`` for Latin-1; None omits it.
    seed, study_key, series_number, instance_number
        Deterministic identity: UIDs are :func:`~chexnet_dicom.dicom.uids.derive_uid`
        of (``study_key`` or the seed, role, series, instance), so instances
        with one ``study_key`` share a study and a series number shares a series.
    study_uid, series_uid, sop_uid
        Explicit UIDs (override the derived ones).
    study_date, study_description, series_description
        Descriptive attributes.
    imager_pixel_spacing
        ImagerPixelSpacing in mm (default 430 mm over the larger side).
    pixel_padding_value
        PixelPaddingValue to declare (the caller places it in the pixels).
    junk_high_bits
        Set every bit above HighBit (BitsStored < BitsAllocated) to 1 in the
        pixel data, as some modalities do; readers must mask them.
    extra
        Further attributes by keyword, set last (may override anything).
    """

    modality: Literal["DX", "CR", "SC"] = "DX"
    modality_value: str | None = None
    sop_class_uid: str | None = None
    presentation_intent: Literal["FOR PRESENTATION", "FOR PROCESSING"] = "FOR PRESENTATION"
    photometric: str = "MONOCHROME2"
    bits_allocated: int | None = None
    bits_stored: int = 12
    pixel_representation: int = 0
    stored_range: tuple[int, int] | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    modality_lut: bool = False
    window: tuple[float, float] | Sequence[tuple[float, float]] | Literal["auto"] | None = "auto"
    voi_lut_function: Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"] | None = None
    voi_lut: bool = False
    presentation_lut_shape: Literal["IDENTITY", "INVERSE", "auto"] | None = "auto"
    view_position: str | None = "PA"
    view_code: bool = True
    patient_orientation: tuple[str, str] | Literal["auto"] | None = "auto"
    body_part: str | None = "CHEST"
    laterality: str | None = "U"
    patient_name: str = "Synthetic^Patient"
    patient_id: str | None = None
    specific_character_set: str | None = "auto"
    seed: int = 0
    study_key: str | None = None
    series_number: int = 1
    instance_number: int = 1
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    study_date: str = "20240102"
    study_description: str = "CHEST 2 VIEWS (SYNTHETIC)"
    series_description: str | None = None
    imager_pixel_spacing: float | None = None
    pixel_padding_value: int | None = None
    junk_high_bits: bool = False
    extra: Mapping[str, Any] | None = None


def make_dataset(pixels: np.ndarray, spec: DatasetSpec | None = None, /, **fields: Any) -> Dataset:
    """Build a DX, CR or Secondary Capture image dataset (uncompressed, explicit VR LE).

    Parameters
    ----------
    pixels
        Either a float display image in [0, 1] (bright = dense; quantised as the
        module docstring says), or integer *stored* values used as they are.
        2-D for one frame; ``(frames, rows, cols)`` makes a multi-frame image
        and ``(rows, cols, 3)`` uint8 with ``photometric="RGB"`` a colour one
        (both outside the DX/CR IODs: for gate tests only).
    spec
        What to write (:class:`DatasetSpec`); the defaults when omitted.
    **fields
        :class:`DatasetSpec` fields by name, replacing those of ``spec``
        (``make_dataset(img, bits_stored=16)`` is ``make_dataset(img, DatasetSpec(bits_stored=16))``).

    Returns
    -------
    pydicom.dataset.Dataset
        The dataset with ``file_meta`` (Explicit VR Little Endian).

    Raises
    ------
    TypeError
        On a keyword that is not a :class:`DatasetSpec` field.
    ValueError
        On inconsistent arguments.
    """
    spec = dataclasses.replace(spec, **fields) if spec is not None else DatasetSpec(**fields)
    arr = np.asarray(pixels)
    fmt = _pixel_format(arr, spec)
    stored = _stored_values(arr, spec, fmt)
    ds = Dataset()
    key = spec.study_key if spec.study_key is not None else str(spec.seed)
    _identity(ds, spec, key)
    _acquisition(ds, spec, fmt)
    _image_pixel(ds, spec, fmt)
    if not fmt.colour:
        _grey_pipeline(ds, spec, fmt)
    ds.PixelData = _pack(stored, fmt.bits_allocated, fmt.bits_stored, spec.junk_high_bits)
    ds["PixelData"].VR = "OB" if fmt.bits_allocated == 8 else "OW"
    for keyword, value in (spec.extra or {}).items():
        setattr(ds, keyword, value)
    ds.file_meta = _file_meta(ds)
    return ds


@dataclass(frozen=True)
class _Format:
    """The pixel layout :func:`make_dataset` resolves from the pixels and the spec."""

    colour: bool
    frames: int
    rows: int
    cols: int
    multi_frame: bool
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    #: PresentationLUTShape to write (None: omit) and whether the display is inverted.
    shape_value: str | None
    inverted: bool
    #: The whole stored range of BitsStored, and the part that 0 and 1 of a float image map to.
    rmin: int
    rmax: int
    lo: int
    hi: int


def _pixel_format(arr: np.ndarray, spec: DatasetSpec) -> _Format:
    """Check the pixels against the spec and resolve the Image Pixel values."""
    photometric, modality = spec.photometric, spec.modality
    colour = photometric == "RGB"
    if colour:
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError("RGB pixels must have shape (rows, cols, 3)")
        frames = 1
        rows, cols = arr.shape[:2]
    elif arr.ndim == 2:
        frames, (rows, cols) = 1, arr.shape
    elif arr.ndim == 3:
        frames, rows, cols = arr.shape
    else:
        raise ValueError(f"pixels must be 2-D or 3-D, got shape {arr.shape}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB"):
        raise ValueError(f"photometric must be MONOCHROME1, MONOCHROME2 or RGB, not {photometric!r}")
    if modality not in ("DX", "CR", "SC"):
        raise ValueError(f"modality must be DX, CR or SC, not {modality!r}")
    bits_stored, pixel_representation = (8, 0) if colour else (spec.bits_stored, spec.pixel_representation)
    bits_allocated = spec.bits_allocated
    if bits_allocated is None:
        bits_allocated = 8 if bits_stored <= 8 else 16
    if bits_allocated not in (8, 16) or bits_stored > bits_allocated:
        raise ValueError(f"unsupported BitsAllocated {bits_allocated} / BitsStored {bits_stored}")
    if pixel_representation not in (0, 1):
        raise ValueError("pixel_representation must be 0 or 1")
    if spec.presentation_lut_shape == "auto":
        shape_value: str | None = None
        if modality == "DX" and not colour:
            shape_value = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    else:
        shape_value = spec.presentation_lut_shape
    inverted = photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape_value == "INVERSE")
    rmin, rmax = stored_range_for(bits_stored, pixel_representation)
    lo, hi = spec.stored_range if spec.stored_range is not None else (rmin, rmax)
    multi_frame = frames > 1 or (arr.ndim == 3 and not colour)
    return _Format(
        colour,
        frames,
        rows,
        cols,
        multi_frame,
        bits_allocated,
        bits_stored,
        pixel_representation,
        shape_value,
        inverted,
        rmin,
        rmax,
        lo,
        hi,
    )


def _stored_values(arr: np.ndarray, spec: DatasetSpec, fmt: _Format) -> np.ndarray:
    """The stored values: a float image quantised (module docstring), integers checked and kept."""
    if np.issubdtype(arr.dtype, np.floating):
        if fmt.colour:
            return np.rint(np.clip(arr, 0, 1) * 255).astype(np.int64)
        return to_stored(
            arr,
            bits_stored=fmt.bits_stored,
            pixel_representation=fmt.pixel_representation,
            invert=fmt.inverted,
            stored_range=(fmt.lo, fmt.hi),
        )
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        stored = arr.astype(np.int64)
        if stored.size and (stored.min() < fmt.rmin or stored.max() > fmt.rmax):
            raise ValueError(
                f"stored values {stored.min()}..{stored.max()} do not fit {fmt.bits_stored}-bit "
                f"{'signed' if fmt.pixel_representation else 'unsigned'} data"
            )
        return stored
    raise ValueError(f"unsupported pixel dtype {arr.dtype}")


def _sop_class(spec: DatasetSpec) -> UID:
    if spec.sop_class_uid:
        return UID(spec.sop_class_uid)
    if spec.modality == "DX":
        return (
            DX_PRESENTATION_STORAGE
            if spec.presentation_intent == "FOR PRESENTATION"
            else DX_PROCESSING_STORAGE
        )
    return CR_IMAGE_STORAGE if spec.modality == "CR" else SC_IMAGE_STORAGE


def _identity(ds: Dataset, spec: DatasetSpec, key: str) -> None:
    """SOP Common, Patient, Study, Series and equipment attributes, with deterministic UIDs."""
    modality, series_number = spec.modality, spec.series_number
    if spec.specific_character_set == "auto":
        charset: str | None = None if _is_ascii(spec.patient_name) else "ISO_IR 192"
    else:
        charset = spec.specific_character_set
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""] if modality == "DX" else ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = _sop_class(spec)
    ds.SOPInstanceUID = spec.sop_uid or derive_uid(
        _SYNTH_ROOT, key, "instance", str(series_number), str(spec.instance_number)
    )
    ds.StudyDate = spec.study_date
    ds.SeriesDate = spec.study_date
    ds.ContentDate = spec.study_date
    ds.StudyTime = "101500"
    ds.SeriesTime = "101500"
    ds.ContentTime = f"1015{spec.instance_number % 60:02d}"
    ds.AccessionNumber = f"SYN{abs(_hash_int(key)) % 10**8:08d}"
    ds.Modality = spec.modality_value or ("OT" if modality == "SC" else modality)
    if modality == "SC":
        ds.ConversionType = "SYN"
    ds.Manufacturer = "chexnet-dicom synthetic phantom"
    ds.InstitutionName = "Synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = spec.series_description or f"{spec.view_position or 'chest'} synthetic"
    ds.ManufacturerModelName = "chest_phantom"
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id or f"SYN-{abs(_hash_int(key)) % 10**6:06d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic data: no patient"
    if spec.body_part is not None:
        ds.BodyPartExamined = spec.body_part
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = IMPLEMENTATION_VERSION_NAME
    ds.StudyInstanceUID = spec.study_uid or derive_uid(_SYNTH_ROOT, key, "study")
    ds.SeriesInstanceUID = spec.series_uid or derive_uid(_SYNTH_ROOT, key, "series", str(series_number))
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = spec.instance_number


def _acquisition(ds: Dataset, spec: DatasetSpec, fmt: _Format) -> None:
    """View, orientation and laterality, and the DX / CR acquisition attributes."""
    modality, view_position = spec.modality, spec.view_position
    if modality in ("DX", "CR"):
        ds.ViewPosition = view_position or ""
    elif view_position is not None:
        ds.ViewPosition = view_position
    if spec.patient_orientation == "auto":
        ds.PatientOrientation = list(_ORIENTATION.get((view_position or "").upper(), ("L", "F")))
    elif spec.patient_orientation is None:
        ds.PatientOrientation = ""
    else:
        ds.PatientOrientation = list(spec.patient_orientation)
    laterality = spec.laterality
    if (laterality is not None and modality == "DX") or (laterality is not None and laterality != "U"):
        ds.ImageLaterality = laterality
    if spec.view_code and modality == "DX" and view_position and view_position.upper() in _VIEW_CODES:
        item = _code_item(_VIEW_CODES[view_position.upper()])
        item.ViewModifierCodeSequence = DicomSequence([])
        ds.ViewCodeSequence = DicomSequence([item])
    spacing = spec.imager_pixel_spacing or 430.0 / max(fmt.rows, fmt.cols)
    if modality == "DX":
        ds.PresentationIntentType = spec.presentation_intent
        ds.AnatomicRegionSequence = DicomSequence([_code_item(codes.SCT.Chest)])
        ds.PixelIntensityRelationship = "LIN"
        ds.PixelIntensityRelationshipSign = -1 if spec.photometric == "MONOCHROME1" else 1
        ds.DetectorType = "SCINTILLATOR"
        ds.PatientPosition = ""
        ds.PositionerType = ""
        ds.AcquisitionContextSequence = DicomSequence([])
        ds.ImagerPixelSpacing = [ds_number(round(spacing, 6))] * 2
        ds.DistanceSourceToDetector = "1800"
        ds.KVP = "120"
        ds.ExposureTime = "10"
        ds.XRayTubeCurrent = "200"
        ds.BurnedInAnnotation = "NO"
        ds.DetectorConfiguration = "AREA"
        ds.Exposure = "2"
    elif modality == "CR":
        ds.ImagerPixelSpacing = [ds_number(round(spacing, 6))] * 2
        ds.KVP = "120"


def _image_pixel(ds: Dataset, spec: DatasetSpec, fmt: _Format) -> None:
    """The Image Pixel module (the pixel data itself is packed last)."""
    ds.SamplesPerPixel = 3 if fmt.colour else 1
    ds.PhotometricInterpretation = spec.photometric
    if fmt.colour:
        ds.PlanarConfiguration = 0
    ds.Rows = fmt.rows
    ds.Columns = fmt.cols
    if fmt.multi_frame:
        ds.NumberOfFrames = fmt.frames
    ds.BitsAllocated = fmt.bits_allocated
    ds.BitsStored = fmt.bits_stored
    ds.HighBit = fmt.bits_stored - 1
    ds.PixelRepresentation = fmt.pixel_representation
    if spec.pixel_padding_value is not None:
        vr = "SS" if fmt.pixel_representation else "US"
        ds.add(DataElement(0x00280120, vr, spec.pixel_padding_value))
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"


def _grey_pipeline(ds: Dataset, spec: DatasetSpec, fmt: _Format) -> None:
    """Modality LUT (rescale or sequence), VOI (windows, function, LUT) and Presentation LUT Shape."""
    # Modality values of the stored range (for the auto window and the VOI LUT).
    if spec.modality_lut:
        n_lut = fmt.rmax - fmt.rmin + 1
        lut_values = np.rint(np.linspace(0.0, 65535.0, n_lut))
        mlo, mhi = float(lut_values[fmt.lo - fmt.rmin]), float(lut_values[fmt.hi - fmt.rmin])
        item = Dataset()
        item.add(_descriptor(n_lut, fmt.rmin, lut_values))
        item.ModalityLUTType = "US"
        item.LUTExplanation = "synthetic linear modality LUT"
        item.add(_lut_element(0x00283006, lut_values))
        ds.ModalityLUTSequence = DicomSequence([item])
    else:
        slope, intercept = spec.rescale_slope, spec.rescale_intercept
        mlo, mhi = fmt.lo * slope + intercept, fmt.hi * slope + intercept
        if spec.modality != "SC" or slope != 1.0 or intercept != 0.0:
            ds.RescaleIntercept = ds_number(intercept)
            ds.RescaleSlope = ds_number(slope)
            ds.RescaleType = "US"
    mlo, mhi = min(mlo, mhi), max(mlo, mhi)
    windows = _windows(spec.window, mlo, mhi, spec.voi_lut_function)
    if windows:
        if len(windows) > 1:
            ds.WindowCenter = [ds_number(c) for c, _ in windows]
            ds.WindowWidth = [ds_number(w) for _, w in windows]
            ds.WindowCenterWidthExplanation = [f"WINDOW{i + 1}" for i in range(len(windows))]
        else:
            ds.WindowCenter = ds_number(windows[0][0])
            ds.WindowWidth = ds_number(windows[0][1])
            ds.WindowCenterWidthExplanation = "WINDOW1"
    if spec.voi_lut_function is not None:
        ds.VOILUTFunction = spec.voi_lut_function
    if spec.voi_lut:
        ds.VOILUTSequence = DicomSequence([_voi_lut_item(mlo, mhi)])
    if fmt.shape_value is not None:
        ds.PresentationLUTShape = fmt.shape_value


def _voi_lut_item(mlo: float, mhi: float) -> Dataset:
    """A VOI LUT Sequence item mapping the modality range ``mlo..mhi`` linearly to 16 bits."""
    first, last = math.floor(mlo), math.ceil(mhi)
    n = last - first + 1
    if n > 65536:
        raise ValueError("voi_lut needs a modality range of at most 65536 values")
    voi_values = np.rint(np.linspace(0.0, 65535.0, n))
    item = Dataset()
    item.add(_descriptor(n, first, voi_values))
    item.LUTExplanation = "synthetic linear VOI LUT"
    item.add(_lut_element(0x00283006, voi_values))
    return item


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _hash_int(text: str) -> int:
    """A stable non-negative integer derived from ``text`` (for synthetic IDs)."""
    return int(derive_uid(_SYNTH_ROOT, "id", text)[5:20])


def _windows(
    window: tuple[float, float] | Sequence[tuple[float, float]] | Literal["auto"] | None,
    mlo: float,
    mhi: float,
    function: str | None,
) -> list[tuple[float, float]]:
    if window is None:
        return []
    if isinstance(window, str):
        if window != "auto":
            raise ValueError(
                f"window must be 'auto', a (center, width) pair, a list of pairs or None, not {window!r}"
            )
        if function == "LINEAR_EXACT" or function == "SIGMOID":
            return [((mlo + mhi) / 2.0, mhi - mlo)]
        # LINEAR (PS3.3 C.11.2.1.2.1): the ramp runs from c - 0.5 - (w-1)/2 to c - 0.5 + (w-1)/2.
        return [((mlo + mhi) / 2.0 + 0.5, mhi - mlo + 1.0)]
    pairs: list[tuple[float, float]]
    if len(window) == 2 and all(isinstance(v, (int, float)) for v in window):
        pairs = [(float(window[0]), float(window[1]))]  # type: ignore[arg-type]
    else:
        pairs = [(float(c), float(w)) for c, w in window]  # type: ignore[misc]
    for _, w in pairs:
        if (w < 1 and function != "LINEAR_EXACT") or w <= 0:
            raise ValueError(f"window width {w} is invalid (>= 1, or > 0 for LINEAR_EXACT)")
    return pairs


def _pack(stored: np.ndarray, bits_allocated: int, bits_stored: int, junk: bool) -> bytes:
    """Little-endian pixel bytes; signed values are two's complement sign-extended to the container."""
    container = (1 << bits_allocated) - 1
    out = stored & container
    if junk and bits_stored < bits_allocated:
        out = (out & ((1 << bits_stored) - 1)) | (container & ~((1 << bits_stored) - 1))
    data = out.astype("<u2").tobytes() if bits_allocated == 16 else out.astype(np.uint8).tobytes()
    return data + (b"\x00" if len(data) % 2 else b"")
