"""Test material the project makes itself: synthetic DICOM images and studies.

Not part of the analysis path (no runtime module imports it; the layering test checks
that): the tests, ``scripts/make_sample_data.py`` and ``benchmarks/`` use it to build
their fixtures, so that no real patient data is ever needed or committed.

Modules
-------

- :mod:`~chexnet_dicom.testing.synth`: the public names of the four modules below, gathered
  (what tests and scripts import).
- :mod:`~chexnet_dicom.testing.phantom`: the deterministic chest phantom.
- :mod:`~chexnet_dicom.testing.stored`: stored values: the range of BitsStored and the quantisation.
- :mod:`~chexnet_dicom.testing.dataset`: ``make_dataset``: a
  :class:`~chexnet_dicom.testing.dataset.DatasetSpec` into a DX, CR or SC dataset.
- :mod:`~chexnet_dicom.testing.encode`: encoders in every writable transfer syntax, and ``write``.
- :mod:`~chexnet_dicom.testing.export`: a synthetic PACS export with every kind of file a real one
  holds, and what each should become.
- :mod:`~chexnet_dicom.testing.matrix`: the conformance matrix: NIH radiographs written in every
  transfer syntax, bit depth, LUT and photometric the ingest reads, and the six-encoding export.
- :mod:`~chexnet_dicom.testing.bombs`: decompression bombs: constant images of any size in every
  syntax the ingest decodes.
"""
