"""Class activation maps for all 14 findings from one forward pass.

For DenseNet-121's head (ReLU -> global average pool -> linear), the logit of finding
``c`` is the spatial mean of its class activation map plus the bias::

    CAM_c(i, j) = sum_k w_ck * relu(F_k(i, j))          (F = last feature map)
    logit_c     = mean_ij CAM_c(i, j) + b_c

so the maps of every finding come from the *same* forward pass as the prediction: one
(14 x 1024) by (1024 x h*w) product, not a backward pass per finding.  Grad-CAM at the
rectified last feature map gives exactly ``relu(CAM_c) / (h * w)`` (the gradient of
``logit_c`` with respect to ``relu(F_k)(i, j)`` is ``w_ck / (h * w)`` everywhere), which
``tests/model/test_cam.py`` checks against :class:`monai.visualize.GradCAM`.

Scale
-----
Maps are reported in units of the model card's ``cam_scale``: a fixed, per-model
constant, so that maps compare across images (:func:`to_display` clips ``CAM /
cam_scale`` to [0, 1], the absolute evidence the invariance tests compare).  What the
overlays draw is the *relative* evidence of :func:`relative_evidence`
(the map above its own mean, over its maximum), and only for findings present at their
operating point: a per-image normalisation of an absent finding would inflate an image
with no finding into a confident-looking blob, which is why it is never drawn (and
MONAI's default normaliser even maps the maximum to 0, flipping it).

Geometry
--------
The network sees a ``input_size`` crop (or TenCrop) of the display image resized to
``resize x resize``.  :func:`cam_to_image_grid` undoes that: feature cells are upsampled
bilinearly over the crop (cell centres at the centres of their receptive tiles), placed
at the crop's position in the resized frame (mirrored crops un-mirrored and TenCrop
maps averaged where they overlap), and the frame is resized to the display image's
shape.  Pixels that no crop covered (the centre crop's border) get 0: the model did
not look there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from chexnet_dicom.errors import ModelError
from chexnet_dicom.model.card import ModelCard, Preprocessing
from chexnet_dicom.model.labels import LABELS

if TYPE_CHECKING:  # the maps' geometry and scale need no torch (the ONNX Runtime path has none)
    import torch
    from torch import nn

__all__ = [
    "class_activation_maps",
    "cam_to_image_grid",
    "crop_boxes",
    "evidence_on_display",
    "llr_maps",
    "logits_and_cams",
    "relative_evidence",
    "to_display",
]


def class_activation_maps(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Return ``CAM_c = sum_k w_ck * relu(F_k)`` for every class.

    Parameters
    ----------
    features
        (B, K, h, w) last feature map *before* the head's ReLU (``net.features(x)``).
    weight
        (C, K) weights of the linear head.

    Returns
    -------
    torch.Tensor
        (B, C, h, w) in the dtype of ``weight``.
    """
    import torch

    rect = torch.relu(features.to(weight.dtype))
    return torch.einsum("ck,bkhw->bchw", weight, rect)


def logits_and_cams(
    features_module: nn.Module, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the feature extractor once and derive both logits and all CAMs from it.

    Parameters
    ----------
    features_module
        ``net.features`` (any dtype / memory format).
    weight, bias
        The linear head (float32 recommended: the head runs in its dtype).
    x
        (B, 3, H, W) input in the feature extractor's dtype.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Logits (B, C) and CAMs (B, C, h, w), both in ``weight``'s dtype;
        ``logits == cams.mean((2, 3)) + bias`` up to rounding.
    """
    feats = features_module(x)
    cams = class_activation_maps(feats, weight)
    logits = cams.mean(dim=(2, 3)) + bias
    return logits, cams


def crop_boxes(pre: Preprocessing) -> list[tuple[int, int, bool]]:
    """Position of each crop in the ``resize x resize`` frame.

    Returns
    -------
    list of (top, left, mirrored)
        One entry for the centre crop, ten for TenCrop (torchvision order: four
        corners and centre, then the same of the mirrored image).  ``left`` is the
        column in the *unmirrored* frame where the crop's leftmost displayed column
        lies.
    """
    r, s = pre.resize, pre.input_size
    centre = ((r - s) // 2, (r - s) // 2)
    if pre.tta == "none":
        return [(centre[0], centre[1], False)]
    corners = [(0, 0), (0, r - s), (r - s, 0), (r - s, r - s), centre]
    boxes = [(t, left, False) for t, left in corners]
    # A crop at column ``left`` of the mirrored frame covers columns
    # [r - left - s, r - left) of the original, content mirrored.
    boxes += [(t, r - left - s, True) for t, left in corners]
    return boxes


def cam_to_image_grid(
    cams: np.ndarray | torch.Tensor, preprocessing: Preprocessing, image_shape: tuple[int, int]
) -> np.ndarray:
    """Map CAMs from the feature grid of the crop(s) back onto the display image grid.

    Parameters
    ----------
    cams
        (C, h, w) for a centre crop, or (10, C, h, w) for TenCrop (as in
        :attr:`Prediction.cams`).
    preprocessing
        The model card's preprocessing (resize, input size, TTA).
    image_shape
        (rows, columns) of the display image that was fed to ``prepare_model_input``.

    Returns
    -------
    numpy.ndarray
        float32 (C, rows, columns) in the same units as ``cams``; 0 where no crop
        reached.
    """
    t = np.asarray(cams, dtype=np.float32)
    boxes = crop_boxes(preprocessing)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[0] != len(boxes):
        raise ModelError(
            f"CAM array of shape {tuple(t.shape)} does not match the preprocessing "
            f"(tta={preprocessing.tta!r} expects {len(boxes)} crop(s))"
        )
    rows, cols = int(image_shape[0]), int(image_shape[1])
    if rows < 1 or cols < 1:
        raise ModelError(f"invalid image shape {image_shape}")
    r, s = preprocessing.resize, preprocessing.input_size
    n_cls = t.shape[1]
    canvas = np.zeros((n_cls, r, r), dtype=np.float64)
    count = np.zeros((r, r), dtype=np.float64)
    for k, (top, left, mirrored) in enumerate(boxes):
        tile = np.stack([_bilinear(m, (s, s)) for m in t[k]])
        if mirrored:
            tile = tile[:, :, ::-1]
        canvas[:, top : top + s, left : left + s] += tile
        count[top : top + s, left : left + s] += 1.0
    canvas = np.where(count > 0, canvas / np.maximum(count, 1.0), 0.0).astype(np.float32)
    return np.stack([_bilinear(m, (rows, cols)) for m in canvas]).astype(np.float32, copy=False)


def _bilinear(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a float plane bilinearly (half-pixel centres; a triangle filter widened when shrinking).

    This is ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
    antialias=True)``, which was written to match Pillow's float resampling (a test
    checks the two agree to float32 rounding).
    """
    if plane.shape == shape:
        return plane.astype(np.float32, copy=True)
    img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def to_display(cams: np.ndarray) -> np.ndarray:
    """Clip maps in ``cam_scale`` units to [0, 1]: absolute evidence, comparable across images.

    Parameters
    ----------
    cams
        Any array of CAM values already divided by the card's ``cam_scale``.

    Returns
    -------
    numpy.ndarray
        float32, same shape, in [0, 1].
    """
    return np.clip(np.nan_to_num(np.asarray(cams, dtype=np.float32), nan=0.0), 0.0, 1.0)


def llr_maps(
    cams: np.ndarray,
    card: ModelCard,
    bias: Sequence[float] | np.ndarray,
    prevalence: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Prevalence-normalised log-likelihood-ratio maps.

    ``CAM_c(i, j) + b_c`` is the logit the model would output for an image that looked
    everywhere like location (i, j).  For a model calibrated on data with prevalence
    ``pi_c``, subtracting the prior log-odds ``log(pi_c / (1 - pi_c))`` leaves the
    log-likelihood ratio contributed by the image: positive where the location is
    evidence *for* the finding, negative where it is evidence against, comparable
    across findings with very different prevalence.

    Parameters
    ----------
    cams
        (C, ...) maps in ``cam_scale`` units (:attr:`Prediction.cams` or their
        :func:`cam_to_image_grid` image).
    card
        Supplies ``cam_scale`` and, when ``prevalence`` is None,
        ``card.training["prevalence"]`` (finding -> fraction positive in training).
    bias
        (C,) head bias (:attr:`TorchPredictor.head_bias`).
    prevalence
        Finding -> prevalence, or a (C,) sequence in label order.

    Returns
    -------
    numpy.ndarray
        float32 maps in natural-log units, same shape as ``cams``.

    Raises
    ------
    ModelError
        When no prevalence is known or a value is outside (0, 1).
    """
    if prevalence is None:
        prevalence = card.training.get("prevalence")
        if prevalence is None:
            raise ModelError(
                "LLR maps need the training prevalence of each finding: pass prevalence= or "
                'add training["prevalence"] to the model card'
            )
    if isinstance(prevalence, Mapping):
        missing = [name for name in LABELS if name not in prevalence]
        if missing:
            raise ModelError(f"prevalence missing for {missing}")
        prev = np.array([float(prevalence[name]) for name in LABELS], dtype=np.float64)
    else:
        prev = np.asarray(prevalence, dtype=np.float64)
    arr = np.asarray(cams, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    if prev.shape != (arr.shape[0],) or b.shape != (arr.shape[0],):
        raise ModelError(f"need {arr.shape[0]} prevalence and bias values, got {prev.shape} and {b.shape}")
    if not np.all((prev > 0) & (prev < 1)):
        raise ModelError("prevalence values must lie strictly between 0 and 1")
    prior = np.log(prev / (1.0 - prev))
    extra = (1,) * (arr.ndim - 1)
    out = arr * float(card.cam_scale) + (b - prior).reshape(-1, *extra)
    return out.astype(np.float32)


def relative_evidence(cams: np.ndarray, k: int) -> np.ndarray | None:
    """Finding ``k``'s relative evidence on the model's feature grid, in [0, 1].

    Each map (each crop with TenCrop) is taken above its own mean and scaled by its peak,
    so the overlay shows where the evidence for the finding is strongest relative to the
    rest of the image, not how probable the finding is.

    Parameters
    ----------
    cams
        Class activation maps, (14, h, w) or (10, 14, h, w) with TenCrop.
    k
        The finding's index in :data:`~chexnet_dicom.model.labels.LABELS`.

    Returns
    -------
    numpy.ndarray or None
        float32 of the maps' shape for one finding; None when the map is flat (no
        location stands out).
    """
    one = np.asarray(cams[..., k, :, :], dtype=np.float64)
    above = one - one.mean(axis=(-2, -1), keepdims=True)  # per crop: above its own mean
    peak = float(above.max())
    spread = float(one.max() - one.min())
    if not np.isfinite(peak) or peak <= 1e-6 * max(spread, 1e-12) or spread <= 1e-9:
        return None
    return np.clip(above / peak, 0.0, 1.0).astype(np.float32)


def evidence_on_display(grid: np.ndarray, pre: Preprocessing, shape: tuple[int, int]) -> np.ndarray:
    """One finding's relative evidence (:func:`relative_evidence`) mapped onto the display grid.

    Parameters
    ----------
    grid
        (h, w), or (10, h, w) with TenCrop, in [0, 1].
    pre
        The preprocessing that made the model input from the display image.
    shape
        The display image's shape.

    Returns
    -------
    numpy.ndarray
        float32 of ``shape[:2]``, in [0, 1].
    """
    stacked = grid[..., None, :, :]  # one class: (1, h, w), or (10, 1, h, w) with TenCrop
    mapped = cam_to_image_grid(stacked, pre, shape)[0]
    return np.clip(mapped, 0.0, 1.0).astype(np.float32)
