"""The analysis tables every door reads: ``[ingest]``, ``[runtime]``, ``[outputs]`` (and ``weights``).

``chexdcm infer --config FILE`` reads :class:`AnalysisConfig`; the node and batch
configurations hold the same three tables.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chexnet_dicom.config.overrides import load_config
from chexnet_dicom.config.schema import MiB
from chexnet_dicom.errors import ConfigError

__all__ = [
    "DEVICE_FORMS",
    "SC_COMPRESSION_NAMES",
    "AnalysisConfig",
    "IngestConfig",
    "IngestLimits",
    "OutputOptions",
    "PixelPolicy",
    "RuntimeConfig",
    "check_device",
    "load_analysis_config",
]

#: The device names the model layer accepts, in words (``cuda:N``: the N-th GPU).
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"(auto|cpu|cuda(:[0-9]+)?)\Z")


def check_device(value: str, key: str = "runtime.device") -> str:
    """A device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``), as given.

    Parameters
    ----------
    value
        The name to check.
    key
        The setting or flag it came from, for the message.

    Returns
    -------
    str
        ``value``.

    Raises
    ------
    ConfigError
        Any other name (naming ``key`` and the accepted forms).
    """
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise ConfigError(f"{key} must be {DEVICE_FORMS}, not {value!r}")
    return value


@dataclass(frozen=True)
class IngestLimits:
    """Caps checked on the header before any pixel data is decoded.

    Attributes
    ----------
    max_file_bytes
        Largest file read at all.
    max_rows, max_columns
        Largest image matrix accepted.
    max_frames
        Largest NumberOfFrames read (analysis itself needs a single frame).
    max_bits_allocated
        Largest BitsAllocated.
    max_decoded_bytes
        Largest decoded pixel buffer (rows x columns x frames x samples x bytes).
    max_inflated_bytes
        Largest size a Deflated Explicit VR file may inflate to.
    max_working_bytes
        Working-set budget of one image's decode (:mod:`chexnet_dicom.dicom.budget`):
        an image whose decode would need more is refused before decoding (TOO_LARGE).
    max_grid_side
        Largest side of the grid heatmaps, regions and overlays are computed on; a
        larger source is represented on its grid reduced by an integer factor.
    """

    max_file_bytes: int = 1024 * MiB
    max_rows: int = 16384
    max_columns: int = 16384
    max_frames: int = 4096
    max_bits_allocated: int = 32
    max_decoded_bytes: int = 1024 * MiB
    max_inflated_bytes: int = 512 * MiB
    max_working_bytes: int = 256 * MiB
    max_grid_side: int = 4096

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) <= 0:
                raise ConfigError(f"ingest limit {f.name} must be positive")


@dataclass(frozen=True)
class PixelPolicy:
    """How stored pixels become the display image the model sees.

    Attributes
    ----------
    inversion
        What to do when image content says the grey scale is inverted relative to the
        header: ``"correct"`` (invert and flag, default), ``"flag"`` (flag only) or
        ``"ignore"``.
    orientation
        ``"correct"`` rotates/flips to the standard frontal orientation using
        PatientOrientation (default), ``"flag"`` only records it, ``"ignore"``.
    window_index
        Which of several VOI windows / VOI LUTs to use.
    window_fallback
        Replace a window lying outside the stored data by a percentile window.
    fast_path
        Decode at reduced resolution when the codec allows it.
    """

    inversion: Literal["correct", "flag", "ignore"] = "correct"
    orientation: Literal["correct", "flag", "ignore"] = "correct"
    window_index: int = 0
    window_fallback: bool = True
    fast_path: bool = True

    def __post_init__(self) -> None:
        if self.inversion not in ("correct", "flag", "ignore"):
            raise ConfigError(f"pixels.inversion must be correct, flag or ignore, not {self.inversion!r}")
        if self.orientation not in ("correct", "flag", "ignore"):
            raise ConfigError(f"pixels.orientation must be correct, flag or ignore, not {self.orientation!r}")
        if self.window_index < 0:
            raise ConfigError("pixels.window_index must be >= 0")


@dataclass(frozen=True)
class IngestConfig:
    """Reading limits plus pixel policy."""

    limits: IngestLimits = field(default_factory=IngestLimits)
    pixels: PixelPolicy = field(default_factory=PixelPolicy)


#: Lossless encodings of the overlays (``chexnet_dicom.outputs.sc.SC_COMPRESSIONS``; a test
#: holds the two equal).
SC_COMPRESSION_NAMES: tuple[str, ...] = ("none", "jpeg2000", "jpegls", "rle")


@dataclass(frozen=True)
class OutputOptions:
    """``[outputs]``: which results are written for a study.

    Attributes
    ----------
    sc
        Write the Secondary Capture heatmap overlay(s).
    sc_per_finding
        One overlay per finding present at its operating point (else the top finding).
    sc_compression
        ``"none"`` (uncompressed, accepted by every PACS), ``"jpeg2000"``, ``"jpegls"``
        or ``"rle"`` (all lossless).
    previews
        Write PNG previews of the overlays for people without a DICOM viewer.
    draw_unreliable
        Also draw findings unreliable at their threshold (validation sensitivity 0 or
        fewer than 5 validation positives) as overlays; by default they are listed only.
    ood
        An image whose out-of-distribution score reaches the card's threshold:
        ``"flag"`` (findings reported, the image flagged ``out-of-distribution``);
        ``"withhold"`` (the SR reports no findings for it and says why; its SC draws no
        heatmap and its legend gives the same reason: :mod:`chexnet_dicom.outputs.ood_items`).
        An image without a score (a card without OOD reference statistics) is never withheld.
    """

    sc: bool = True
    sc_per_finding: bool = False
    sc_compression: str = "none"
    previews: bool = True
    draw_unreliable: bool = False
    ood: Literal["flag", "withhold"] = "flag"

    def __post_init__(self) -> None:
        if self.ood not in ("flag", "withhold"):
            raise ConfigError(f'outputs.ood must be "flag" or "withhold", not {self.ood!r}')
        if self.sc_compression not in SC_COMPRESSION_NAMES:
            raise ConfigError(
                f"outputs.sc_compression must be one of {', '.join(SC_COMPRESSION_NAMES)}, "
                f"not {self.sc_compression!r}"
            )


@dataclass(frozen=True)
class RuntimeConfig:
    """``[runtime]``: how the model runs.

    Attributes
    ----------
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    backend
        ``"auto"`` (ONNX Runtime float32 on a CPU, PyTorch on a GPU or for bf16),
        ``"onnxruntime"`` or ``"torch"``.
    precision
        ``"auto"`` (per device), ``"fp32"`` or ``"bf16"``.
    batch_size
        Images per forward pass; batches may span studies.
    threads
        CPU threads for the model; 0 uses every CPU this process may use.
    tta
        ``"card"`` (the model card's test-time augmentation), ``"none"`` or ``"tencrop"``.
    workers
        Decode worker processes; 0 decodes in the main process.
    ood_method
        Out-of-distribution score: ``"card"`` (the model card's default), or
        ``"mahalanobis"``, ``"energy"``, ``"energy_lse"`` (:mod:`chexnet_dicom.model.ood`).
    """

    device: str = "auto"
    backend: Literal["auto", "onnxruntime", "torch"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    batch_size: int = 8
    threads: int = 0
    tta: Literal["card", "none", "tencrop"] = "card"
    workers: int = 0
    ood_method: Literal["card", "mahalanobis", "energy", "energy_lse"] = "card"

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.batch_size < 1:
            raise ConfigError("runtime.batch_size must be >= 1")
        if self.threads < 0 or self.workers < 0:
            raise ConfigError("runtime.threads and runtime.workers must be >= 0")


@dataclass(frozen=True)
class AnalysisConfig:
    """What ``chexdcm infer --config FILE`` reads (the node and batch runs read the same tables).

    Attributes
    ----------
    weights
        Model card, folder holding one, or registry name (``""``: the usual resolution).
    ingest
        ``[ingest]``: reading limits and pixel policy.
    runtime
        ``[runtime]``: device, backend, precision, batching, threads.
    outputs
        ``[outputs]``: SC on/off, per finding, compression, previews.
    """

    weights: str = ""
    ingest: IngestConfig = field(default_factory=IngestConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    outputs: OutputOptions = field(default_factory=OutputOptions)


def load_analysis_config(
    path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> AnalysisConfig:
    """Read ``[ingest]``, ``[runtime]``, ``[outputs]`` (and ``weights``) from a TOML file.

    Parameters
    ----------
    path
        TOML file; None: the defaults.
    overrides
        Dotted settings on top (``{"runtime.device": "cpu"}``, the command line's flags).

    Returns
    -------
    AnalysisConfig

    Raises
    ------
    ConfigError
        Unknown tables or keys, wrong types, invalid values (the message names the key).
    """
    return load_config(AnalysisConfig, path, overrides)
