"""Synthetic chest radiographs: a deterministic phantom, DICOM builders and encoders.

Nothing here comes from a patient. The module serves tests, benchmarks and the
``sample_data/`` generator:

* :func:`chest_phantom` draws a frontal (PA/AP) or lateral chest radiograph as a
  float image in [0, 1] (bright = dense, standard display orientation: head up,
  patient's right on the image left), deterministic from a seed, any size, with
  an optional lesion blob;
* :func:`make_dataset` wraps an image (float display image or integer stored
  values) into a DX, CR or Secondary Capture dataset with the grey-scale
  pipeline attributes a test needs (BitsStored, signed data, rescale or Modality
  LUT Sequence, windows or VOI LUT Sequence, VOILUTFunction, MONOCHROME1,
  PresentationLUTShape, PatientOrientation...) and deterministic UIDs;
* :func:`encode` re-encodes a dataset in any transfer syntax we can write
  (uncompressed, deflated, big endian, RLE, JPEG-LS, JPEG 2000, JPEG baseline);
* :func:`write` writes it with or without preamble and file meta information.

Float input semantics: a float image ``v`` in [0, 1] is quantised so that the
standard rendering (stored -> Modality LUT -> VOI -> Presentation) of the dataset
gives back ``v`` (up to quantisation) when the ``"auto"`` window or the VOI LUT is
used: ``p = 1 - v`` when the display is inverted (MONOCHROME1, or
PresentationLUTShape INVERSE with MONOCHROME2), else ``p = v``; stored value
``lo + round(p * (hi - lo))`` over ``stored_range`` (default: the whole range of
BitsStored).

The work is done by one module per job; this module gathers their public names:
:mod:`~chexnet_dicom.testing.phantom` (the phantom),
:mod:`~chexnet_dicom.testing.stored` (stored values),
:mod:`~chexnet_dicom.testing.dataset` (the dataset builder) and
:mod:`~chexnet_dicom.testing.encode` (encoders and the writer).
"""

from __future__ import annotations

from chexnet_dicom.testing.dataset import (
    CR_IMAGE_STORAGE,
    DX_PRESENTATION_STORAGE,
    DX_PROCESSING_STORAGE,
    SC_IMAGE_STORAGE,
    DatasetSpec,
    make_dataset,
)
from chexnet_dicom.testing.encode import (
    ENCODABLE_TRANSFER_SYNTAXES,
    LOSSLESS_TRANSFER_SYNTAXES,
    encode,
    write,
)
from chexnet_dicom.testing.phantom import Lesion, chest_phantom
from chexnet_dicom.testing.stored import stored_range_for, to_stored

__all__ = [
    "CR_IMAGE_STORAGE",
    "DX_PRESENTATION_STORAGE",
    "DX_PROCESSING_STORAGE",
    "ENCODABLE_TRANSFER_SYNTAXES",
    "LOSSLESS_TRANSFER_SYNTAXES",
    "SC_IMAGE_STORAGE",
    "DatasetSpec",
    "Lesion",
    "chest_phantom",
    "encode",
    "make_dataset",
    "stored_range_for",
    "to_stored",
    "write",
]
