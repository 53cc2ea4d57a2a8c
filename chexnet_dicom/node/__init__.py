"""The listener node (``chexdcm listen``): receive by C-STORE, analyse, deliver.

Nothing in the package imports it except :mod:`chexnet_dicom.cli`.

Modules
-------

- :mod:`~chexnet_dicom.node.scp`: the DICOM listener: Verification and Storage SCP on pynetdicom,
  guarded.
- :mod:`~chexnet_dicom.node.spool`: the durable inbox of received instances and the results awaiting
  delivery.
- :mod:`~chexnet_dicom.node.receiver`: the listener's event handlers: access, and each C-STORE made
  durable (with its header bytes) before success.
- :mod:`~chexnet_dicom.node.ledger`: the node's SQLite ledger (WAL, ``synchronous=FULL``) that every
  process shares: receiving, studies, analysis, retention.
- :mod:`~chexnet_dicom.node.ledger_store`: the ledger's schema, its opening (durability) and its
  events and counters.
- :mod:`~chexnet_dicom.node.ledger_rows`: the records the ledger's queries take and give.
- :mod:`~chexnet_dicom.node.ledger_drift`: the ledger's drift tables: the rolling window of
  observations and the latest drift score.
- :mod:`~chexnet_dicom.node.drift_window`: drift monitoring: each analysed image observed, the window
  scored against the model's reference, crossings logged.
- :mod:`~chexnet_dicom.node.delivery_records`: the delivery queue and its per-file records.
- :mod:`~chexnet_dicom.node.records`: what the ledger keeps of an analysed instance, as bytes (never
  pickled).
- :mod:`~chexnet_dicom.node.worker`: the analysis worker: the model loaded once, ready studies taken
  from the ledger.
- :mod:`~chexnet_dicom.node.service`: the running node: listener, scheduler, worker process and
  sender together.
- :mod:`~chexnet_dicom.node.metrics`: the Prometheus endpoint (off by default; bound to 127.0.0.1).
- :mod:`~chexnet_dicom.node.carry`: what a later SR version carries over from earlier analyses of
  the study, kept as bytes in the ledger.
- :mod:`~chexnet_dicom.node.states`: the node's state machines (study, instance, delivery, file) as
  vocabularies.
"""
