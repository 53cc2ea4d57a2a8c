"""Frozen, validated configuration loaded from TOML recipes in ``pipelines/``.

Each table is a frozen dataclass; unknown keys and wrong types are a
:class:`~chexnet_dicom.errors.ConfigError` at load time that names the key path and the
type expected, so a typo never becomes a silently ignored setting.  Command-line flags
reach the same classes by one path: dotted settings (``{"runtime.device": "cuda:1"}``)
merged into the file's tables before validation (:mod:`.overrides`).

This layer imports only :mod:`chexnet_dicom.errors`.  Every public name is re-exported
here: import from ``chexnet_dicom.config``.

Submodules
----------
:mod:`chexnet_dicom.config.schema`
    TOML into dataclasses: :func:`load_toml`, :func:`from_mapping` and the type check
    behind every message.
:mod:`chexnet_dicom.config.overrides`
    The one override path: :func:`merge_overrides`, :func:`load_config`,
    :func:`apply_overrides`.
:mod:`chexnet_dicom.config.analysis`
    The tables every door reads: ``[ingest]``, ``[runtime]``, ``[outputs]``
    (:class:`AnalysisConfig`, read by ``chexdcm infer``) and :func:`check_device`.
:mod:`chexnet_dicom.config.net`
    ``[destination]`` and its timeouts, shared by the node and batch.
:mod:`chexnet_dicom.config.node`
    ``chexdcm listen``: :class:`NodeConfig` (listen, access, TLS, spool, work, metrics, drift),
    AE title and allow-list checks.
:mod:`chexnet_dicom.config.batch`
    ``chexdcm batch``: :class:`BatchConfig` (``[batch]``) and the pseudonymisation rule.
:mod:`chexnet_dicom.config.train`
    ``chexdcm train``: :class:`TrainConfig` (data, preprocessing, augment, train, output).
"""

from __future__ import annotations

from chexnet_dicom.config.analysis import (
    DEVICE_FORMS,
    SC_COMPRESSION_NAMES,
    AnalysisConfig,
    IngestConfig,
    IngestLimits,
    OutputOptions,
    PixelPolicy,
    RuntimeConfig,
    check_device,
    load_analysis_config,
)
from chexnet_dicom.config.batch import (
    BATCH_ENGINES,
    BatchConfig,
    BatchOptions,
    check_pseudonymization,
    load_batch_config,
)
from chexnet_dicom.config.net import DestinationConfig, NetTimeouts
from chexnet_dicom.config.node import (
    AccessConfig,
    DriftConfig,
    ListenConfig,
    MetricsConfig,
    NodeConfig,
    ServerTlsConfig,
    SpoolConfig,
    WorkConfig,
    check_ae_title,
    load_node_config,
    parse_allowed,
)
from chexnet_dicom.config.overrides import apply_overrides, load_config, merge_overrides
from chexnet_dicom.config.schema import MiB, from_mapping, load_toml
from chexnet_dicom.config.train import (
    AugmentConfig,
    OptimConfig,
    TrainConfig,
    TrainDataConfig,
    TrainOutputConfig,
    TrainPreprocessConfig,
    load_train_config,
)

__all__ = [
    "IngestLimits",
    "PixelPolicy",
    "IngestConfig",
    "SC_COMPRESSION_NAMES",
    "OutputOptions",
    "RuntimeConfig",
    "DEVICE_FORMS",
    "check_device",
    "NetTimeouts",
    "DestinationConfig",
    "AnalysisConfig",
    "load_analysis_config",
    "MiB",
    "from_mapping",
    "load_toml",
    "merge_overrides",
    "load_config",
    "apply_overrides",
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
    "DriftConfig",
    "NodeConfig",
    "load_node_config",
    "BATCH_ENGINES",
    "BatchOptions",
    "BatchConfig",
    "check_pseudonymization",
    "load_batch_config",
]
