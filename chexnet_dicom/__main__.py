"""``python -m chexnet_dicom`` runs the ``chexdcm`` command line."""

from chexnet_dicom.cli import console_main

console_main()
