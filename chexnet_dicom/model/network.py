"""CheXNet network: MONAI DenseNet-121 with a 14-way head producing logits.

The module returns *logits*; probabilities are ``torch.sigmoid(logits)``
(CheXNet's sigmoid is applied by :mod:`chexnet_dicom.model.torch_backend`, never inside
the network, so BCE-with-logits training is numerically stable).

Structure (MONAI 1.x): ``features`` (conv0 ... denseblock4, norm5) then
``class_layers`` = relu -> AdaptiveAvgPool2d(1) -> flatten -> ``out`` Linear(1024, 14).
"""

from __future__ import annotations

import torch
from monai.networks.nets import DenseNet121
from torch import nn

from chexnet_dicom.model.labels import NUM_CLASSES

__all__ = ["FEATURE_CHANNELS", "build_network", "feature_maps", "head"]

#: Channels of the last feature map (input of the linear head).
FEATURE_CHANNELS = 1024


def build_network(num_classes: int = NUM_CLASSES) -> DenseNet121:
    """Build an untrained CheXNet DenseNet-121 (weights come from :mod:`weights`).

    Parameters
    ----------
    num_classes
        Output count, 14 for CheXNet.

    Returns
    -------
    monai.networks.nets.DenseNet121
        ``spatial_dims=2, in_channels=3, out_channels=num_classes``, random init.
    """
    return DenseNet121(spatial_dims=2, in_channels=3, out_channels=num_classes, pretrained=False)


def feature_maps(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Return the rectified last feature maps (B, 1024, h, w) that feed the pooled head."""
    feats = net.features(x)  # type: ignore[operator]
    return torch.relu(feats)


def head(net: nn.Module) -> nn.Linear:
    """Return the final linear layer (weights [num_classes, 1024])."""
    out = net.class_layers.out  # type: ignore[union-attr]
    assert isinstance(out, nn.Linear)
    return out
