"""Evaluation of a model's predictions against labels.

Modules
-------

- :mod:`~chexnet_dicom.evaluate.tables`: reading prediction and label tables.
- :mod:`~chexnet_dicom.evaluate.metrics`: AUROC, F1, operating points and calibration with
  patient-level bootstrap CIs.
- :mod:`~chexnet_dicom.evaluate.report`: the full evaluation of a predictions table and its
  Markdown/HTML report with plots.
"""
