"""Training: datasets, patient splits, preprocessing cache, the CheXNet fit loop, DDP, export.

- :mod:`~chexnet_dicom.train.data`: NIH ChestX-ray14 (PNG + ``Data_Entry`` CSV),
  CheXpert-style CSVs (U-Zeros / U-Ones), DICOM folders + labels CSV -> :class:`Record`.
- :mod:`~chexnet_dicom.train.splits`: patient-level stratified and official splits.
- :mod:`~chexnet_dicom.train.cache`: decode + resize once into a uint8/uint16 memmap.
- :mod:`~chexnet_dicom.train.datasets`: a recipe's records and split, torch datasets of
  resized images (cached or decoded), the batched network input.
- :mod:`~chexnet_dicom.train.augment`: seeded epoch order and training augmentation.
- :mod:`~chexnet_dicom.train.fit`: :func:`~chexnet_dicom.train.fit.fit`, the CheXNet
  optimisation loop with validation, checkpoints (exact resume) and the run log.
- :mod:`~chexnet_dicom.train.scoring`: a network's logits over cached images and per-finding
  ROC AUCs (the loop's validation).
- :mod:`~chexnet_dicom.train.state`: the RNG state, atomic checkpoint files and ``log.csv``.
- :mod:`~chexnet_dicom.train.ddp`: ``torchrun`` process-group helpers.
- :mod:`~chexnet_dicom.train.export`: fp16 bundle + model card (operating points,
  CAM scale, held-out test AUROC with patient-level bootstrap CIs), and re-export of a
  finished run.
- :mod:`~chexnet_dicom.train.ood_calibration`: a bundle's out-of-distribution reference fitted
  from images (``chexdcm weights calibrate-ood``, ``chexdcm train``).

The recipe itself (TOML in ``pipelines/``) is :class:`chexnet_dicom.config.TrainConfig`,
loaded by :func:`chexnet_dicom.config.load_train_config`.

Entry point: ``chexdcm train --config pipelines/<recipe>.toml``.
"""
