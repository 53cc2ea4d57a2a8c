"""outputs layer of chexnet-dicom: DICOM results (TID 1500 SR, SC overlays) and the JSON sidecar.

Depends on :mod:`chexnet_dicom.dicom` and the model's result types only (never torch).
Typical use for one study::

    results = [ImageResult(ds, prediction, heatmaps_on_source_grid, flags), ...]
    sr = build_sr(results, card, skipped=skipped, previous=earlier_srs)
    overlays = [sc for r, display in zip(results, displays) for sc in build_scs(r, display, card)]
    sidecar = build_sidecar(results, card, skipped=skipped, sr=sr, overlays=overlays)
    write_dataset(sr, out / "sr.dcm"); write_sidecar(sidecar, out / "result.json")
"""

from chexnet_dicom.outputs.common import ImageResult, SkippedInstance, write_dataset
from chexnet_dicom.outputs.pmap import PMAP_UNAVAILABLE, pmap_unavailable_reason
from chexnet_dicom.outputs.sc import build_sc, build_scs
from chexnet_dicom.outputs.sidecar import build_sidecar, write_sidecar
from chexnet_dicom.outputs.sr import build_sr, study_summary

__all__ = [
    "PMAP_UNAVAILABLE",
    "ImageResult",
    "SkippedInstance",
    "build_sc",
    "build_scs",
    "build_sidecar",
    "build_sr",
    "pmap_unavailable_reason",
    "study_summary",
    "write_dataset",
    "write_sidecar",
]
