"""The model layer: torch and MONAI only (never pydicom, pynetdicom or highdicom).

Modules
-------

- :mod:`~chexnet_dicom.model.labels`: the 14 NIH ChestX-ray14 findings in CheXNet order, with their
  codes.
- :mod:`~chexnet_dicom.model.network`: the CheXNet network: MONAI DenseNet-121 with a 14-way logit
  head.
- :mod:`~chexnet_dicom.model.card`: the model card and the project's own weights format (safetensors
  + JSON card).
- :mod:`~chexnet_dicom.model.registry`: published DenseNet-121 / CheXNet checkpoints and how to
  verify them.
- :mod:`~chexnet_dicom.model.download`: verified, atomic, cached download of published checkpoints.
- :mod:`~chexnet_dicom.model.safe_unpickle`: restricted unpickling of foreign checkpoints (never
  runs code from the file).
- :mod:`~chexnet_dicom.model.weights`: foreign checkpoint loaders and their import into the bundle
  format.
- :mod:`~chexnet_dicom.model.resolve`: which model card to use: ``--weights``, ``CHEXDCM_WEIGHTS``,
  the cache, the demo weights.
- :mod:`~chexnet_dicom.model.predictor`: the predictor interface every backend shares.
- :mod:`~chexnet_dicom.model.torch_backend`: the PyTorch backend
  (:class:`~chexnet_dicom.model.torch_backend.TorchPredictor`).
- :mod:`~chexnet_dicom.model.onnx_backend`: the ONNX Runtime backend (exported once, verified,
  cached).
- :mod:`~chexnet_dicom.model.backends`: ``load_predictor``: choose a backend for this machine.
- :mod:`~chexnet_dicom.model.cam`: class activation maps for all 14 findings from one forward pass.
- :mod:`~chexnet_dicom.model.prediction`: the model's result types, shared with the outputs layer.
- :mod:`~chexnet_dicom.model.ood`: out-of-distribution scores (Mahalanobis, energies) from the
  same forward pass, and the reference statistics beside the weights.
- :mod:`~chexnet_dicom.model.startup`: ``start_model``: resolve the weights, load the predictor and
  say which and why (every door starts its model here).
"""
