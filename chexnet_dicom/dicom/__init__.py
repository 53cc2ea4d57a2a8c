"""DICOM ingest: pydicom and pylibjpeg only (never torch or MONAI).

From a file to the [0, 1] display image the model sees, and the reason when a file is not analysed.

Modules
-------

- :mod:`~chexnet_dicom.dicom.read`: safe reading: typed errors, size caps before any pixel decode,
  the header read once.
- :mod:`~chexnet_dicom.dicom.attrs`: the one reader of header attributes (one reason code per
  defect).
- :mod:`~chexnet_dicom.dicom.walk`: the one folder walker: which files ``check``, ``infer`` and
  ``batch`` look at.
- :mod:`~chexnet_dicom.dicom.reasons`: reason codes: why a file was not analysed, one vocabulary for
  every door.
- :mod:`~chexnet_dicom.dicom.flags`: provenance flags: caveats recorded with a result.
- :mod:`~chexnet_dicom.dicom.vocabulary`: word lists and codes the header gate weighs.
- :mod:`~chexnet_dicom.dicom.gate`: the acceptance gate: is this a single-frame frontal chest
  radiograph we can analyse?
- :mod:`~chexnet_dicom.dicom.check`: ``check_file``: read, gate and decode one file, as ``chexdcm
  check`` does.
- :mod:`~chexnet_dicom.dicom.study`: ``scan``: group files into studies and series and choose the
  image(s) to analyse.
- :mod:`~chexnet_dicom.dicom.decode`: decode the stored pixel values (fast reduced-resolution paths,
  the fastest plugin).
- :mod:`~chexnet_dicom.dicom.budget`: the working-set budget of one image: integer area reduce,
  the bounded output grid, refusal before decode.
- :mod:`~chexnet_dicom.dicom.voi`: the grey-scale chain of PS3.3 C.11: Modality LUT -> VOI ->
  Presentation.
- :mod:`~chexnet_dicom.dicom.orientation`: PatientOrientation to the standard frontal display.
- :mod:`~chexnet_dicom.dicom.polarity`: measured content checks: grey-scale polarity and verticality
  scores.
- :mod:`~chexnet_dicom.dicom.resize`: the one image resize of the package (Pillow's anti-aliased
  bilinear on float32).
- :mod:`~chexnet_dicom.dicom.pixels`: ``render``: stored pixel values -> the display image.
- :mod:`~chexnet_dicom.dicom.load`: ``load_image``: read, decode and render one image (picklable in
  and out).
- :mod:`~chexnet_dicom.dicom.uids`: deterministic UIDs under the ``2.25`` root.
"""
