"""Frozen, validated configuration loaded from TOML recipes in ``pipelines/``.

Each section is a frozen dataclass; unknown keys and wrong types are a
:class:`~chexnet_dicom.errors.ConfigError` at load time, so a typo never becomes a
silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from chexnet_dicom.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "IngestLimits",
    "PixelPolicy",
    "IngestConfig",
    "SC_COMPRESSION_NAMES",
    "OutputOptions",
    "RuntimeConfig",
    "NetTimeouts",
    "DestinationConfig",
    "AnalysisConfig",
    "load_analysis_config",
    "from_mapping",
    "load_toml",
    "TrainDataConfig",
    "TrainPreprocessConfig",
    "AugmentConfig",
    "OptimConfig",
    "TrainOutputConfig",
    "TrainConfig",
    "load_train_config",
    "check_ae_title",
    "parse_allowed",
    "ListenConfig",
    "AccessConfig",
    "ServerTlsConfig",
    "SpoolConfig",
    "WorkConfig",
    "MetricsConfig",
    "NodeConfig",
    "load_node_config",
    "BATCH_ENGINES",
    "BatchOptions",
    "BatchConfig",
    "load_batch_config",
]

MiB = 1024 * 1024

T = TypeVar("T")


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
    """

    max_file_bytes: int = 1024 * MiB
    max_rows: int = 16384
    max_columns: int = 16384
    max_frames: int = 4096
    max_bits_allocated: int = 32
    max_decoded_bytes: int = 1024 * MiB
    max_inflated_bytes: int = 512 * MiB

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
    """

    sc: bool = True
    sc_per_finding: bool = False
    sc_compression: str = "none"
    previews: bool = True
    draw_unreliable: bool = False

    def __post_init__(self) -> None:
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
    """

    device: str = "auto"
    backend: Literal["auto", "onnxruntime", "torch"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    batch_size: int = 8
    threads: int = 0
    tta: Literal["card", "none", "tencrop"] = "card"
    workers: int = 0

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        ):
            raise ConfigError(f"runtime.device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if self.batch_size < 1:
            raise ConfigError("runtime.batch_size must be >= 1")
        if self.threads < 0 or self.workers < 0:
            raise ConfigError("runtime.threads and runtime.workers must be >= 0")


@dataclass(frozen=True)
class NetTimeouts:
    """DICOM network timeouts and PDU size, with dcmtk's names (``--acse-timeout`` ...).

    Attributes
    ----------
    acse_timeout
        Seconds to wait for association messages (request, accept, release).
    dimse_timeout
        Seconds to wait for a DIMSE message (a C-STORE response).
    network_timeout
        Seconds without any data on the connection before it is closed.
    max_pdu
        Largest P-DATA PDU this side receives (bytes; dcmtk ``--max-pdu``).
    """

    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    max_pdu: int = 65536

    def __post_init__(self) -> None:
        for name in ("acse_timeout", "dimse_timeout", "network_timeout"):
            if not 0 < getattr(self, name) <= 3600:
                raise ConfigError(f"{name} must be > 0 and <= 3600 seconds")
        if not 4096 <= self.max_pdu <= 16 * MiB:
            raise ConfigError("max_pdu must be between 4096 and 16777216 bytes")


@dataclass(frozen=True)
class DestinationConfig:
    """``[destination]``: where results are delivered (the node's ``--dest``, batch's ``--send``).

    Attributes
    ----------
    url
        ``AE@host:port`` (C-STORE) or an ``http(s)://`` DICOMweb root or ``/studies``
        URL (STOW-RS); ``""``: no destination.
    calling_ae
        This side's AE title when it sends by C-STORE.
    token_file, token_env
        STOW-RS bearer token: a file holding it, or the name of an environment variable.
    basic_file, basic_env
        STOW-RS basic credentials ``user:password``: a file, or an environment variable.
    ca_bundle
        CA certificates (PEM) that verify an ``https`` server or a TLS DICOM peer.
    tls, tls_cert, tls_key
        C-STORE over TLS (1.2+), with this side's certificate and key for mutual TLS.
    attempts
        Tries per delivery before it is dead-lettered.
    backoff_s, backoff_cap_s
        First retry delay, doubled after each failure up to the cap.
    timeouts
        ``[destination.timeouts]``: :class:`NetTimeouts`.
    """

    url: str = ""
    calling_ae: str = "CHEXDCM"
    token_file: str = ""
    token_env: str = ""
    basic_file: str = ""
    basic_env: str = ""
    ca_bundle: str = ""
    tls: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    attempts: int = 5
    backoff_s: float = 2.0
    backoff_cap_s: float = 300.0
    timeouts: NetTimeouts = field(default_factory=NetTimeouts)

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 100:
            raise ConfigError("destination.attempts must be between 1 and 100")
        if not 0 <= self.backoff_s <= self.backoff_cap_s <= 86400:
            raise ConfigError("destination.backoff_s must be >= 0 and <= destination.backoff_cap_s <= 86400")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("destination.tls_cert and destination.tls_key go together")
        if sum(bool(v) for v in (self.token_file, self.token_env, self.basic_file, self.basic_env)) > 1:
            raise ConfigError("give one of destination.token_file, token_env, basic_file, basic_env")


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


def load_analysis_config(path: str | Path) -> AnalysisConfig:
    """Read ``[ingest]``, ``[runtime]``, ``[outputs]`` (and ``weights``) from a TOML file.

    Raises
    ------
    ConfigError
        Unknown tables or keys, wrong types, invalid values (the message names the key).
    """
    return from_mapping(AnalysisConfig, load_toml(path))


def _check_type(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a table")
        return from_mapping(hint, value, _prefix=name)
    if origin is Literal:
        if value not in typing.get_args(hint):
            allowed = ", ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"{name} must be one of {allowed}, not {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None) and value is None:
                return None
            try:
                return _check_type(name, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{name} has the wrong type ({type(value).__name__})")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list")
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_check_type(f"{name}[]", v, inner) for v in value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if isinstance(hint, type):
        if hint is int and isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer")
        if not isinstance(value, hint):
            raise ConfigError(f"{name} must be {hint.__name__}, not {type(value).__name__}")
    return value


def from_mapping(cls: type[T], data: dict[str, Any], *, _prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, validating keys and types.

    Parameters
    ----------
    cls
        A dataclass type.
    data
        Parsed TOML table.

    Returns
    -------
    T
        The validated instance.

    Raises
    ------
    ConfigError
        On unknown keys, wrong types or invalid values.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in [{_prefix}]" if _prefix else ""
        raise ConfigError(
            f"unknown setting(s){where}: {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        full = f"{_prefix}.{key}" if _prefix else key
        kwargs[key] = _check_type(full, value, hints[key])
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [{_prefix or cls.__name__}]: {exc}") from exc


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning any parse problem into :class:`ConfigError`.

    Parameters
    ----------
    path
        File to read.

    Returns
    -------
    dict
        The parsed document.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc


# --------------------------------------------------------------------------- training recipe
#
# The sections of a training recipe (``pipelines/*.toml``, read by ``chexdcm train``):
# ``[data]``, ``[preprocessing]``, ``[augment]``, ``[train]`` and ``[output]``.  The
# defaults follow CheXNet: DenseNet-121, Adam lr 1e-3, batch 16, ReduceLROnPlateau x0.1
# on the validation loss, random horizontal flip, binary cross-entropy.


@dataclass(frozen=True)
class TrainDataConfig:
    """``[data]``: where the images and labels are and how they are split.

    Relative paths are relative to the current directory (run from the repository root).

    Attributes
    ----------
    format
        ``"nih"`` (PNGs + ``Data_Entry`` CSV), ``"chexpert"`` (CheXpert-style CSV) or
        ``"dicom"`` (a DICOM folder + labels CSV).
    images, labels
        Image folder and labels CSV.
    split_file
        A committed split CSV; when empty the split is computed.
    fractions
        Train / validation / test fractions of the computed patient split.
    split_seed
        Seed of the computed split.
    official_test_list, official_train_val_list
        Official split lists (one key a line); the test list takes precedence over
        ``fractions``.
    val_fraction
        Fraction of the official train/validation images that go to validation
        (by patient).
    uncertain
        CheXpert uncertain labels (-1) as ``"zeros"`` (U-Zeros) or ``"ones"`` (U-Ones).
    dicom_key
        The labels CSV column that names a DICOM image.
    patient_column
        The labels CSV column with the patient ID (empty: CheXpert reads it from the
        path, DICOM uses ``PatientID``; NIH always uses ``Patient ID``).
    cache, cache_dir, cache_dtype, cache_workers
        Decode and resize once into a ``uint8``/``uint16`` memmap under ``cache_dir``,
        with ``cache_workers`` processes (0: in this process).
    max_images
        Use only the first N records (0: all).
    """

    format: Literal["nih", "chexpert", "dicom"] = "nih"
    images: str = ""
    labels: str = ""
    split_file: str = ""
    fractions: tuple[float, ...] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    official_test_list: str = ""
    official_train_val_list: str = ""
    val_fraction: float = 0.1
    uncertain: Literal["zeros", "ones"] = "zeros"
    dicom_key: Literal["SOPInstanceUID", "AccessionNumber"] = "SOPInstanceUID"
    patient_column: str = ""
    cache: bool = True
    cache_dir: str = "runs/cache"
    cache_dtype: Literal["uint8", "uint16"] = "uint8"
    cache_workers: int = 0
    max_images: int = 0


@dataclass(frozen=True)
class TrainPreprocessConfig:
    """``[preprocessing]``: resize side and network input side (centre crop).

    Attributes
    ----------
    resize
        Side the images are resized to (and cached at).
    input_size
        Side of the centre crop the network sees (16 <= input_size <= resize).
    """

    resize: int = 256
    input_size: int = 224

    def __post_init__(self) -> None:
        if not 16 <= self.input_size <= self.resize:
            raise ConfigError("preprocessing needs 16 <= input_size <= resize")


@dataclass(frozen=True)
class AugmentConfig:
    """``[augment]``: training-time augmentation applied to the resized image.

    Attributes
    ----------
    hflip
        Probability of a horizontal flip.
    rotate_deg
        Maximum rotation in degrees.
    scale
        Zoom range ``[low, high]``.
    translate
        Maximum shift as a fraction of the side.
    brightness, contrast
        Maximum additive / multiplicative jitter.
    """

    hflip: float = 0.5
    rotate_deg: float = 0.0
    scale: tuple[float, ...] = (1.0, 1.0)
    translate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.hflip <= 1.0:
            raise ConfigError("augment.hflip must be a probability")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError("augment.scale must be [low, high] with 0 < low <= high")


@dataclass(frozen=True)
class OptimConfig:
    """``[train]``: optimisation, schedule, precision and budget.

    Attributes
    ----------
    epochs, batch_size, eval_batch_size
        Epochs to run, training batch per process, validation batch.
    lr, betas, weight_decay
        Adam settings.
    plateau_factor, plateau_patience, min_lr
        ReduceLROnPlateau on the validation loss.
    class_weights
        ``"balanced"``: BCE ``pos_weight`` = negatives / positives per class (capped
        at 100); ``"none"``: unweighted.
    seed
        Seed of the initialisation, the epoch order and the augmentation draws.
    max_minutes
        Time budget in minutes (0: none); after the first epoch, a new one starts only
        when 1.1 x the longest epoch so far still fits.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    precision, channels_last
        ``"bf16"`` autocast forward passes and NHWC activations; ``"auto"`` turns both
        on on CUDA and off on CPU.
    deterministic
        Deterministic cuDNN kernels (no benchmark autotuning).
    threads, num_workers
        Torch intra-op threads (0: default) and DataLoader workers.
    init_weights
        An ImageNet torchvision file or a project ``*.card.json`` bundle (empty: random).
    """

    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 1e-3
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 0.0
    plateau_factor: float = 0.1
    plateau_patience: int = 1
    min_lr: float = 0.0
    class_weights: Literal["none", "balanced"] = "none"
    seed: int = 0
    max_minutes: float = 0.0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    deterministic: bool = True
    threads: int = 0
    num_workers: int = 0
    init_weights: str = ""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.eval_batch_size < 1:
            raise ConfigError("train.epochs >= 1 and train.batch_size >= 2 are required")
        if self.lr <= 0 or not 0 < self.plateau_factor < 1:
            raise ConfigError("train.lr must be > 0 and train.plateau_factor in (0, 1)")


@dataclass(frozen=True)
class TrainOutputConfig:
    """``[output]``: run folder and the exported bundle.

    Attributes
    ----------
    run_dir
        Checkpoints, ``log.csv`` and ``config.json`` of the run.
    export_dir
        Where the fp16 bundle and its model card go (empty: no export).
    stem, name, version, intended_use
        Bundle file stem and the card's name, version and intended use.
    bootstrap
        Patient-level bootstrap resamples for the card's confidence intervals.
    cam_percentile
        Percentile of the validation CAM values that sets the card's ``cam_scale``.
    command
        The command recorded as the card's source (default ``chexdcm train``).
    operating_point
        How each finding's operating point is chosen on the validation split:
        ``"youden"`` (maximum sensitivity + specificity - 1) or ``"specificity:S"`` (the
        lowest threshold whose validation specificity is at least S, e.g. 0.90).
    """

    run_dir: str = "runs/train"
    export_dir: str = ""
    stem: str = "chexnet"
    name: str = "chexnet-dicom"
    version: str = "0.0.0"
    intended_use: str = "Research use only. Not for clinical use."
    bootstrap: int = 2000
    cam_percentile: float = 99.0
    command: str = ""
    operating_point: str = "youden"

    def __post_init__(self) -> None:
        if self.operating_point == "youden":
            return
        kind, _, value = self.operating_point.partition(":")
        try:
            ok = kind == "specificity" and 0.0 < float(value) < 1.0
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f"output.operating_point must be 'youden' or 'specificity:S' with 0 < S < 1, "
                f"not {self.operating_point!r}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """A whole training recipe: one attribute per TOML section."""

    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    preprocessing: TrainPreprocessConfig = field(default_factory=TrainPreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    output: TrainOutputConfig = field(default_factory=TrainOutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (stored in checkpoints and the model card).

        Returns
        -------
        dict
            ``{section: {key: value}}``.
        """
        return dataclasses.asdict(self)


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load and validate a training recipe.

    Parameters
    ----------
    path
        TOML file.
    overrides
        ``{"train.epochs": 2, ...}`` applied on top (dotted section.key).

    Returns
    -------
    TrainConfig
        The validated recipe.

    Raises
    ------
    ConfigError
        Unknown keys, wrong types, invalid values (the message names the key).
    """
    doc = load_toml(Path(path))
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r} must be section.key")
        doc.setdefault(section, {})[key] = value
    return from_mapping(TrainConfig, doc)


# --------------------------------------------------------------------------- listener node
#
# The sections of ``chexdcm listen --config pipelines/node.toml``: ``[listen]``,
# ``[access]``, ``[tls]``, ``[spool]``, ``[work]``, ``[metrics]`` and
# ``[destination]``, plus the analysis tables ``[ingest]``, ``[runtime]`` and
# ``[outputs]``.  The defaults are the secure ones of DESIGN.md section 6: bound to
# 127.0.0.1, an allow-list required unless explicitly opened, the called AE title
# checked, bounded associations, PDUs and instances.

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def check_ae_title(value: str, key: str) -> str:
    """An AE title (PS3.5: 1-16 characters, no backslash or control character), stripped.

    Raises
    ------
    ConfigError
        Naming ``key``.
    """
    if not _AE_TITLE.match(value) or not value.strip():
        raise ConfigError(f"{key} {value!r} is not a valid AE title (1-16 characters, no backslash)")
    return value.strip()


@dataclass(frozen=True)
class ListenConfig:
    """``[listen]``: where the node listens and how long it waits (dcmtk's names).

    Attributes
    ----------
    ae_title
        The node's AE title (the called AE title peers must use).
    bind
        The IP address to listen on (127.0.0.1 unless configured).
    port
        The TCP port (0: any free port, for tests).
    acse_timeout
        Seconds to wait for an A-ASSOCIATE-RQ after the connection opens, and for a
        release (dcmtk ``--acse-timeout``).
    dimse_timeout
        Seconds to wait for DIMSE messages (dcmtk ``--dimse-timeout``).
    socket_timeout
        Seconds an established association may stay silent, and within which each PDU
        must arrive completely (dcmtk ``--socket-timeout``).
    max_pdu
        The largest PDU this node receives (dcmtk ``--max-pdu``, 4096-131072 there).
    max_associations
        Associations served at once; more are rejected (transient, local limit).
    max_connections
        Open TCP connections at once (associations, handshakes and idle sockets); more
        are closed at once.
    quiet_period
        Seconds without a new instance, after the study's associations ended, before
        a study is analysed.
    open_wait
        Seconds without a new instance after which a study is analysed even though an
        association that sent it is still open.
    """

    ae_title: str = "CHEXDCM"
    bind: str = "127.0.0.1"
    port: int = 11112
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    socket_timeout: float = 60.0
    max_pdu: int = 131072
    max_associations: int = 8
    max_connections: int = 16
    quiet_period: float = 5.0
    open_wait: float = 300.0

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, "listen.ae_title")
        try:
            ipaddress.ip_address(self.bind)
        except ValueError:
            raise ConfigError(f"listen.bind must be an IP address, not {self.bind!r}") from None
        if not 0 <= self.port <= 65535:
            raise ConfigError("listen.port must be between 0 and 65535")
        for name in ("acse_timeout", "dimse_timeout", "socket_timeout"):
            if not 0 < getattr(self, name) <= 3600:
                raise ConfigError(f"listen.{name} must be > 0 and <= 3600 seconds")
        if not 4096 <= self.max_pdu <= 16 * MiB:
            raise ConfigError("listen.max_pdu must be between 4096 and 16777216 bytes")
        if not 1 <= self.max_associations <= self.max_connections <= 4096:
            raise ConfigError("listen needs 1 <= max_associations <= max_connections <= 4096")
        if not 0 <= self.quiet_period <= 3600 or self.open_wait < self.quiet_period:
            raise ConfigError("listen.quiet_period must be 0-3600 s and listen.open_wait >= quiet_period")


def parse_allowed(entry: str, key: str = "access.allow") -> tuple[str, str]:
    """``MODALITY`` or ``MODALITY@host`` as (AE title, host or ``""``).

    Raises
    ------
    ConfigError
        Naming ``key``.
    """
    ae, at, host = entry.rpartition("@") if "@" in entry else (entry, "", "")
    if at and not host.strip():
        raise ConfigError(f"{key} entry {entry!r} has an empty host after '@'")
    return check_ae_title(ae, f"{key} entry"), host.strip()


@dataclass(frozen=True)
class AccessConfig:
    """``[access]``: who may send, and how much.

    Attributes
    ----------
    allow
        Calling AE titles allowed to associate, as ``MODALITY`` or ``MODALITY@host``
        (an IP address or a name resolved at start-up).  Required unless ``open``.
    open
        Accept any calling AE title (explicitly opening the node).
    check_called_aet
        Reject associations whose called AE title is not the node's.
    max_association_bytes
        Bytes one association may send in all.
    max_instance_bytes
        Largest instance (file) accepted.
    """

    allow: tuple[str, ...] = ()
    open: bool = False
    check_called_aet: bool = True
    max_association_bytes: int = 16 * 1024 * MiB
    max_instance_bytes: int = 1024 * MiB

    def __post_init__(self) -> None:
        for entry in self.allow:
            parse_allowed(entry)
        if self.max_association_bytes <= 0 or self.max_instance_bytes <= 0:
            raise ConfigError("access.max_association_bytes and access.max_instance_bytes must be positive")


@dataclass(frozen=True)
class ServerTlsConfig:
    """``[tls]``: TLS (1.2 or later) for the listener.

    Attributes
    ----------
    enabled
        Listen with TLS instead of plain TCP.
    cert, key
        The node's certificate (chain) and key, PEM.
    ca_bundle
        PEM CA certificates that sign the peers' certificates.
    require_client_cert
        Mutual TLS: refuse a peer without a certificate the CA bundle verifies.
    """

    enabled: bool = False
    cert: str = ""
    key: str = ""
    ca_bundle: str = ""
    require_client_cert: bool = True

    def __post_init__(self) -> None:
        if self.enabled and not (self.cert and self.key):
            raise ConfigError("tls.enabled needs tls.cert and tls.key")
        if self.enabled and self.require_client_cert and not self.ca_bundle:
            raise ConfigError(
                "tls.require_client_cert needs tls.ca_bundle (the CA of the peers' certificates)"
            )


@dataclass(frozen=True)
class SpoolConfig:
    """``[spool]``: the node's durable folder and what it keeps.

    Attributes
    ----------
    dir
        The spool folder (instances, ledger, results awaiting delivery).
    outbox
        Where results go when no destination is configured (``""``: ``<dir>/outbox``).
    min_free_bytes
        Free-space watermark: below it, C-STORE is refused with 0xA700.
    max_bytes
        Cap on the received instances kept (0: none); above it, 0xA700.
    retention_s
        Seconds after a study's results are delivered before its images are purged.
    record_retention_days
        Days after which a delivered study's ledger records (headers and predictions
        kept for later versions of its SR) are deleted.
    own_outputs
        This node's results coming back: ``"drop"`` (acknowledged, not kept) or
        ``"store"`` (kept until purged); never analysed either way.
    out_of_scope
        Instances the gate does not analyse (lateral views, other modalities):
        ``"store"`` (listed in the SR as not analysed) or ``"drop"``.
    """

    dir: str = "chexdcm-spool"
    outbox: str = ""
    min_free_bytes: int = 1024 * MiB
    max_bytes: int = 0
    retention_s: float = 3600.0
    record_retention_days: float = 30.0
    own_outputs: Literal["drop", "store"] = "drop"
    out_of_scope: Literal["store", "drop"] = "store"

    def __post_init__(self) -> None:
        if not self.dir:
            raise ConfigError("spool.dir must name a folder")
        if self.min_free_bytes < 0 or self.max_bytes < 0:
            raise ConfigError("spool.min_free_bytes and spool.max_bytes must be >= 0")
        if self.retention_s < 0 or self.record_retention_days <= 0:
            raise ConfigError("spool.retention_s must be >= 0 and spool.record_retention_days > 0")


@dataclass(frozen=True)
class WorkConfig:
    """``[work]``: the analysis processes.

    Attributes
    ----------
    workers
        Worker processes, each holding the model (loaded once).
    poll_s
        Seconds between looks at the ledger when idle.
    max_studies
        Studies one worker takes at once (their images are predicted in shared batches).
    """

    workers: int = 1
    poll_s: float = 0.1
    max_studies: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 64 or not 0 < self.poll_s <= 10 or not 1 <= self.max_studies <= 64:
            raise ConfigError("work needs 1 <= workers <= 64, 0 < poll_s <= 10 and 1 <= max_studies <= 64")


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint (always bound to 127.0.0.1).

    Attributes
    ----------
    enabled
        Serve ``/metrics``.
    port
        Its TCP port (0: any free port).
    """

    enabled: bool = False
    port: int = 9464

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("metrics.port must be between 0 and 65535")


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``chexdcm listen`` reads: one attribute per TOML table.

    Attributes
    ----------
    weights
        Model card, folder holding one, or registry name (``""``: the usual resolution).
    listen, access, tls, spool, work, metrics, destination
        See their classes (``[destination]`` is shared with ``chexdcm batch``; its
        ``attempts`` and backoff are the node's per-delivery retry schedule, kept in
        the ledger).
    ingest, runtime, outputs
        The analysis tables, as for ``chexdcm infer``.
    """

    weights: str = ""
    listen: ListenConfig = field(default_factory=ListenConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    tls: ServerTlsConfig = field(default_factory=ServerTlsConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    work: WorkConfig = field(default_factory=WorkConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    destination: DestinationConfig = field(default_factory=DestinationConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    outputs: OutputOptions = field(default_factory=OutputOptions)

    def __post_init__(self) -> None:
        if not self.access.allow and not self.access.open:
            raise ConfigError(
                "access.allow is empty: list the calling AE titles that may send (MODALITY or "
                "MODALITY@host), or set access.open = true to accept any"
            )
        if self.access.max_instance_bytes > self.ingest.limits.max_file_bytes:
            raise ConfigError("access.max_instance_bytes must not exceed ingest.limits.max_file_bytes")


def load_node_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> NodeConfig:
    """Load and validate a node configuration, with ``{"listen.port": 11112, ...}`` on top.

    Parameters
    ----------
    path
        TOML file; None: defaults only.
    overrides
        Dotted ``table.key`` settings (the command line's flags) that replace the file's.

    Returns
    -------
    NodeConfig

    Raises
    ------
    ConfigError
        Unknown tables or keys, wrong types, invalid values (the message names the key).
    """
    doc = load_toml(path) if path is not None else {}
    for dotted, value in (overrides or {}).items():
        table, _, key = dotted.rpartition(".")
        target = doc
        for part in table.split(".") if table else ():
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{table} must be a table")
        target[key] = value
    return from_mapping(NodeConfig, doc)


# --------------------------------------------------------------------------- batch runs
#
# ``chexdcm batch --config pipelines/batch.toml`` reads the same ``[ingest]``,
# ``[runtime]`` and ``[outputs]`` tables as ``infer`` (and the node), plus ``[batch]``.

#: Engines of ``chexdcm batch``.
BATCH_ENGINES: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class BatchOptions:
    """``[batch]``: how a retrospective run over an export is organised.

    Attributes
    ----------
    engine
        ``"local"`` (decode worker processes + one predictor in this process) or
        ``"ray"`` (Ray Data: decode tasks, a predictor actor pool; extra ``[ray]``).
    write_dicom
        Also write each study's SR and SC into ``OUT/dicom/<study ref>/``.
    pseudonymize
        Replace identifiers and paths in the tables by keyed hashes, dates shifted per
        patient (the key from ``pseudonym_key_file`` or ``CHEXDCM_PSEUDONYM_KEY``).
    pseudonym_key_file
        File holding the pseudonymisation key (at least 16 bytes); empty: the environment.
    commit_every
        Discovery commits its index every this many files (a killed run keeps them).
    ray_address
        ``ray.init`` address: empty starts a local instance, ``"auto"`` joins the cluster
        this machine belongs to, ``"ray://host:10001"`` a remote one.
    ray_actors
        Predictor actors in the pool (each loads the model once).
    ray_decode_cpus
        CPUs reserved per decode task.
    ray_chunk_images
        Images per Ray Dataset (memory stays bounded by one chunk's items).
    """

    engine: Literal["local", "ray"] = "local"
    write_dicom: bool = False
    pseudonymize: bool = False
    pseudonym_key_file: str = ""
    commit_every: int = 256
    ray_address: str = ""
    ray_actors: int = 1
    ray_decode_cpus: float = 1.0
    ray_chunk_images: int = 2048

    def __post_init__(self) -> None:
        if self.engine not in BATCH_ENGINES:
            raise ConfigError(f"batch.engine must be local or ray, not {self.engine!r}")
        if self.commit_every < 1 or self.ray_actors < 1 or self.ray_chunk_images < 1:
            raise ConfigError("batch.commit_every, batch.ray_actors and batch.ray_chunk_images must be >= 1")
        if self.ray_decode_cpus <= 0:
            raise ConfigError("batch.ray_decode_cpus must be > 0")


@dataclass(frozen=True)
class BatchConfig:
    """What ``chexdcm batch --config FILE`` reads: the analysis tables of ``infer`` plus ``[batch]``.

    Attributes
    ----------
    weights, ingest, runtime, outputs
        As :class:`AnalysisConfig` (the same objects).
    batch
        ``[batch]``.
    destination
        ``[destination]``: where ``--send`` delivers (the node's table; ``--send`` sets its ``url``).
    """

    weights: str = ""
    ingest: IngestConfig = field(default_factory=IngestConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    outputs: OutputOptions = field(default_factory=OutputOptions)
    batch: BatchOptions = field(default_factory=BatchOptions)
    destination: DestinationConfig = field(default_factory=DestinationConfig)

    @property
    def analysis(self) -> AnalysisConfig:
        """The analysis part, as ``infer`` reads it."""
        return AnalysisConfig(self.weights, self.ingest, self.runtime, self.outputs)


def load_batch_config(path: str | Path) -> BatchConfig:
    """Read ``[ingest]``, ``[runtime]``, ``[outputs]``, ``[batch]``, ``[destination]`` (and ``weights``) from TOML.

    Raises
    ------
    ConfigError
        Unknown tables or keys, wrong types, invalid values (the message names the key).
    """
    return from_mapping(BatchConfig, load_toml(path))
