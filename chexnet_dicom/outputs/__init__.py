"""outputs layer of chexnet-dicom: DICOM results (TID 1500 SR, SC overlays) and the JSON sidecar.

Depends on :mod:`chexnet_dicom.dicom`, the model's result types and
:mod:`chexnet_dicom.results` (never torch).  For one study::

    outputs = build_outputs(study_result, OutputOptions(), previous=earlier_srs)  # pure
    write_outputs(outputs, folder)                                                # atomic

Modules
-------

- :mod:`~chexnet_dicom.outputs.identity`: who made a result and how it is named: constants, the card
  protocol, deterministic UIDs.
- :mod:`~chexnet_dicom.outputs.header`: the source header a result copies (Patient and Study
  modules), cleaned of invalid values.
- :mod:`~chexnet_dicom.outputs.charset`: the Specific Character Set of a result, so that the
  source's text round-trips validly.
- :mod:`~chexnet_dicom.outputs.codes`: coded concepts of the results, and the project's private
  coding scheme.
- :mod:`~chexnet_dicom.outputs.provenance`: IHE AI Results contributing equipment: the algorithm as
  processing equipment.
- :mod:`~chexnet_dicom.outputs.sr`: the TID 1500 Measurement Report (Comprehensive 3D SR) of the
  findings.
- :mod:`~chexnet_dicom.outputs.hd_fast`: highdicom's Comprehensive 3D SR constructed without its
  copies (the one use of highdicom internals, pinned to its version; same document).
- :mod:`~chexnet_dicom.outputs.regions`: the image region of a present finding, on the bounded
  mask, in source coordinates.
- :mod:`~chexnet_dicom.outputs.sc`: RGB Secondary Capture overlays: where the evidence for a present
  finding lies.
- :mod:`~chexnet_dicom.outputs.sidecar`: the JSON sidecar: the same result for programs that do not
  read DICOM.
- :mod:`~chexnet_dicom.outputs.build`: ``build_outputs``: one study's results and sidecar, built
  without I/O.
- :mod:`~chexnet_dicom.outputs.write`: ``write_outputs``: the built outputs into the study's folder,
  each file atomically.
- :mod:`~chexnet_dicom.outputs.legend`: the overlay's legend and colour key, in a side panel that
  never lies over the image.
- :mod:`~chexnet_dicom.outputs.reliability`: which findings the weights can be trusted to report at
  their threshold, and the order the legend lists them in.
- :mod:`~chexnet_dicom.outputs.ood_items`: the out-of-distribution score as SR content items (NUM
  and qualitative evaluation) and as the legend's line.
"""

from chexnet_dicom.outputs.build import StudyOutputs, build_outputs
from chexnet_dicom.outputs.write import write_outputs

__all__ = ["StudyOutputs", "build_outputs", "write_outputs"]
