"""outputs layer of chexnet-dicom: DICOM results (TID 1500 SR, SC overlays) and the JSON sidecar.

Depends on :mod:`chexnet_dicom.dicom`, the model's result types and
:mod:`chexnet_dicom.results` (never torch).  For one study::

    outputs = build_outputs(study_result, OutputOptions(), previous=earlier_srs)  # pure
    write_outputs(outputs, folder)                                                # atomic
"""

from chexnet_dicom.outputs.build import StudyOutputs, build_outputs
from chexnet_dicom.outputs.write import write_outputs

__all__ = ["StudyOutputs", "build_outputs", "write_outputs"]
