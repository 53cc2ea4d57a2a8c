"""Evaluation of a model's predictions against labels.

Modules
-------

- :mod:`~chexnet_dicom.evaluate.tables`: reading prediction and label tables.
- :mod:`~chexnet_dicom.evaluate.metrics`: AUROC, F1, operating points and calibration with
  patient-level bootstrap CIs.
- :mod:`~chexnet_dicom.evaluate.report`: the full evaluation of a predictions table and its
  Markdown/HTML report with plots.
- :mod:`~chexnet_dicom.evaluate.result`: the result of an evaluation, as ``metrics.json`` holds it.
- :mod:`~chexnet_dicom.evaluate.utility`: clinical utility: net benefit and decision curves,
  prevalence-adjusted PPV/NPV, MCID verdicts.
- :mod:`~chexnet_dicom.evaluate.render`: the Markdown report of an evaluation, and its HTML.
- :mod:`~chexnet_dicom.evaluate.plots`: PNG plots: ROC, precision-recall, reliability, decision curves.
- :mod:`~chexnet_dicom.evaluate.audit`: labels audited by confident learning (cleanlab).
"""
