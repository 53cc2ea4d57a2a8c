"""Training: datasets, patient splits, preprocessing cache, the CheXNet loop, DDP, export.

- :mod:`~chexnet_dicom.train.data`: NIH ChestX-ray14 (PNG + ``Data_Entry`` CSV),
  CheXpert-style CSVs (U-Zeros / U-Ones), DICOM folders + labels CSV -> :class:`Record`.
- :mod:`~chexnet_dicom.train.splits`: patient-level stratified and official splits.
- :mod:`~chexnet_dicom.train.cache`: decode + resize once into a uint8/uint16 memmap.
- :mod:`~chexnet_dicom.train.loop`: the recipe (TOML) and :func:`fit`.
- :mod:`~chexnet_dicom.train.ddp`: ``torchrun`` process-group helpers.
- :mod:`~chexnet_dicom.train.export`: fp16 bundle + model card (operating points,
  CAM scale, held-out test AUROC with patient-level bootstrap CIs).

Entry point: ``chexdcm train --config pipelines/<recipe>.toml``.
"""
