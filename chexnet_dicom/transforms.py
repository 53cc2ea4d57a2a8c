"""MONAI dictionary transforms over :mod:`chexnet_dicom.raster` and :mod:`chexnet_dicom.preprocess`.

:class:`LoadChestImaged` (file path -> channel-first [0, 1] grey image + metadata) and
:class:`PrepareModelInputd` (display image -> normalised network input, from a model
card's preprocessing spec) wrap :func:`~chexnet_dicom.raster.load_chest_image` and
:func:`~chexnet_dicom.preprocess.prepare_model_input`, the single definition of the
model input shared by training and inference (re-exported here).  Rows and columns are
never transposed (unlike MONAI's ``PydicomReader``, which is not used).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.preprocess import (  # re-exported: the model-input functions these transforms wrap
    center_crop,
    decode_target_size,
    normalise,
    prepare_model_input,
    resize_image,
    ten_crop,
)
from chexnet_dicom.raster import image_to_grey, load_chest_image  # re-exported with the loader transform

__all__ = [
    "LoadChestImaged",
    "PrepareModelInputd",
    "center_crop",
    "decode_target_size",
    "image_to_grey",
    "load_chest_image",
    "normalise",
    "prepare_model_input",
    "resize_image",
    "ten_crop",
]


class LoadChestImaged(MapTransform):
    """MONAI dictionary transform: file path -> channel-first [0, 1] grey image + meta.

    For each key the path in ``data[key]`` is loaded with :func:`load_chest_image`; the
    key then holds a float32 ``(1, H, W)`` array (bright = dense, head up, no row/column
    transposition) and ``data[f"{key}_{meta_key_postfix}"]`` a dict with
    ``filename_or_obj``, ``source_shape``, ``orientation_ops``, ``decode_factor``,
    ``provenance`` and the :class:`DisplayImage` itself under ``display`` (for mapping
    heatmaps back with :meth:`DisplayImage.to_source_grid`).

    Parameters
    ----------
    keys
        Keys holding file paths.
    config
        Ingest limits and pixel policy for DICOM input.
    target_size
        Smallest side needed (e.g. the model's resize, 256) for the fast DICOM decode.
    meta_key_postfix
        Suffix of the meta dict key (MONAI convention ``meta_dict``).
    allow_missing_keys
        Skip missing keys instead of raising ``KeyError``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        config: IngestConfig | None = None,
        target_size: int | None = None,
        meta_key_postfix: str = "meta_dict",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.config = config
        self.target_size = target_size
        self.meta_key_postfix = meta_key_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = d[key]
            disp = load_chest_image(source, config=self.config, target_size=self.target_size)
            d[key] = disp.image[None].astype(np.float32, copy=False)
            d[f"{key}_{self.meta_key_postfix}"] = {
                "filename_or_obj": str(source) if isinstance(source, (str, os.PathLike)) else "<stream>",
                "source_shape": disp.source_shape,
                "orientation_ops": disp.orientation_ops,
                "decode_factor": disp.decode_factor,
                "provenance": disp.provenance,
                "display": disp,
            }
        return d


class PrepareModelInputd(MapTransform):
    """MONAI dictionary transform wrapping :func:`prepare_model_input`.

    Takes a ``(H, W)`` or ``(1, H, W)`` [0, 1] image (numpy array or torch tensor) and
    returns float32 ``(3, input_size, input_size)`` (or ``(10, 3, ...)`` with TenCrop).

    Parameters
    ----------
    keys
        Keys holding display images.
    resize, input_size, tta, mean, std
        The model card's preprocessing spec (see :meth:`from_spec`).
    allow_missing_keys
        Skip missing keys instead of raising ``KeyError``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        resize: int = 256,
        input_size: int = 224,
        tta: Literal["none", "tencrop"] = "none",
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need three values (grey replicated into RGB)")
        self.resize = int(resize)
        self.input_size = int(input_size)
        self.tta: Literal["none", "tencrop"] = tta
        self.mean = (float(mean[0]), float(mean[1]), float(mean[2]))
        self.std = (float(std[0]), float(std[1]), float(std[2]))

    @classmethod
    def from_spec(cls, keys: KeysCollection, spec: Any, **kwargs: Any) -> PrepareModelInputd:
        """Build from an object with ``resize``, ``input_size``, ``tta``, ``mean``, ``std``
        attributes (a model card's :class:`~chexnet_dicom.model.card.Preprocessing`)."""
        return cls(
            keys,
            resize=spec.resize,
            input_size=spec.input_size,
            tta=spec.tta,
            mean=tuple(spec.mean),
            std=tuple(spec.std),
            **kwargs,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if hasattr(value, "detach"):  # torch tensor / MetaTensor
                value = value.detach().cpu().numpy()
            img = np.asarray(value, dtype=np.float32)
            if img.ndim == 3 and img.shape[0] == 1:
                img = img[0]
            if img.ndim != 2:
                raise ValueError(f"PrepareModelInputd needs a (H, W) or (1, H, W) image, got {img.shape}")
            d[key] = prepare_model_input(
                img,
                resize=self.resize,
                input_size=self.input_size,
                tta=self.tta,
                mean=self.mean,
                std=self.std,
            )
        return d
