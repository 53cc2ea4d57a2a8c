"""Networking shared by the node and batch: pynetdicom and DICOMweb.

Modules
-------

- :mod:`~chexnet_dicom.net.destination`: where results go: ``AE@host:port`` (C-STORE) or a STOW-RS
  URL.
- :mod:`~chexnet_dicom.net.tls`: TLS contexts for associations and DICOMweb (TLS 1.2 or later,
  verified).
- :mod:`~chexnet_dicom.net.sender`: deliver result files: C-STORE over one association, or one
  STOW-RS request.
- :mod:`~chexnet_dicom.net.guards`: guards around pynetdicom's receive path: bounded PDUs,
  deadlines, byte budgets.
- :mod:`~chexnet_dicom.net.quiet`: pynetdicom as this package uses it: no identifiers in its logs,
  no handler of its own.
- :mod:`~chexnet_dicom.net.admission`: the listener's admission: first-PDU deadline, AE and host
  checks before an association slot, per-source socket limits.
"""
