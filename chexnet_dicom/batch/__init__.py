"""Batch retrospective runs over PACS exports: discovery, the resumable runner, result tables.

Modules
-------

- :mod:`~chexnet_dicom.batch.discover`: every file of an export found once, its header read once,
  into the index.
- :mod:`~chexnet_dicom.batch.index`: the header index: one SQLite row per file, headers kept as
  read.
- :mod:`~chexnet_dicom.batch.studies`: the studies of an indexed export, rebuilt by the scan's own
  rules.
- :mod:`~chexnet_dicom.batch.ledger`: the run ledger: which studies are finished, with their rows,
  and what the run was.
- :mod:`~chexnet_dicom.batch.rows`: a study's result as table rows: predictions, the study, its
  files' outcomes, errors.
- :mod:`~chexnet_dicom.batch.schema`: the columns of the result tables (documented in the README).
- :mod:`~chexnet_dicom.batch.tables`: writing the result tables from the ledger and the index
  (streamed, atomic).
- :mod:`~chexnet_dicom.batch.pseudonym`: ``--pseudonymize``: keyed hashes for identifiers and paths,
  dates shifted per patient.
- :mod:`~chexnet_dicom.batch.cohort`: the scores of a finished run keyed by a DICOM attribute, for a
  cohort report.
- :mod:`~chexnet_dicom.batch.shift`: the export's cohort shift against the model's drift reference
  (``shift.json``, ``shift.md``).
- :mod:`~chexnet_dicom.batch.runner`: the runner: discover, plan, analyse each unfinished study,
  record it, write the tables.
- :mod:`~chexnet_dicom.batch.ray_engine`: ``--engine ray``: the pipeline's stages as a Ray Data
  pipeline (extra ``[ray]``).
"""
