"""What ``chexdcm listen`` reads (``pipelines/node.toml``): :class:`NodeConfig`.

Its tables: ``[listen]``, ``[access]``, ``[tls]``, ``[spool]``, ``[work]``,
``[metrics]``, ``[drift]`` and ``[destination]``, plus the analysis tables ``[ingest]``,
``[runtime]`` and ``[outputs]``.  The defaults are the secure ones of DESIGN.md
section 6: bound to 127.0.0.1, an allow-list required unless explicitly opened, the
called AE title checked, bounded associations, PDUs and instances.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chexnet_dicom.config.analysis import IngestConfig, OutputOptions, RuntimeConfig
from chexnet_dicom.config.net import DestinationConfig
from chexnet_dicom.config.overrides import load_config
from chexnet_dicom.config.schema import MiB
from chexnet_dicom.errors import ConfigError

__all__ = [
    "AccessConfig",
    "DriftConfig",
    "ListenConfig",
    "MetricsConfig",
    "NodeConfig",
    "ServerTlsConfig",
    "SpoolConfig",
    "WorkConfig",
    "check_ae_title",
    "load_node_config",
    "parse_allowed",
]

_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")


def check_ae_title(value: str, key: str) -> str:
    """An AE title (PS3.5: 1-16 characters, no backslash or control character), stripped.

    Raises
    ------
    ConfigError
        Naming ``key``.
    """
    if not isinstance(value, str) or not _AE_TITLE.fullmatch(value) or not value.strip():
        raise ConfigError(
            f"{key} {value!r} is not a valid AE title (1-16 characters, no backslash or control character)"
        )
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
    max_connections_per_source
        Open TCP connections at once from one source address (``max_connections`` when
        that is smaller).
    first_pdu_timeout
        Seconds from connect within which the TLS handshake and the A-ASSOCIATE-RQ must
        be complete; the calling AE is checked before the peer takes an association slot.
    min_receive_rate
        Bytes per second below which a DIMSE message still arriving is cut off once it
        has taken longer than ``socket_timeout`` (0: no minimum).
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
    max_connections_per_source: int = 8
    first_pdu_timeout: float = 5.0
    min_receive_rate: float = 4096.0
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
        if self.max_connections_per_source < 1:
            raise ConfigError("listen.max_connections_per_source must be at least 1")
        if not 0 < self.first_pdu_timeout <= 600:
            raise ConfigError("listen.first_pdu_timeout must be > 0 and <= 600 seconds")
        if self.min_receive_rate < 0:
            raise ConfigError("listen.min_receive_rate must be >= 0 bytes per second (0: no minimum)")
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
    host = host.strip()
    if at and not host:
        raise ConfigError(f"{key} entry {entry!r} has an empty host after '@'")
    if ":" in host and not _is_ip(host):  # an IPv6 address has colons; host:port does not belong here
        raise ConfigError(
            f"{key} entry {entry!r}: {host!r} is not a host name or IP address (no :port: the "
            "allow-list names where a peer calls from, not a port)"
        )
    return check_ae_title(ae, f"{key} entry"), host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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
        Worker processes, each holding the model (loaded once) and warmed up with one
        tiny study before it takes work; they share nothing but the ledger.  With more
        than one and ``runtime.threads = 0``, each model gets ``CPUs // workers``
        threads.
    poll_s
        Seconds between looks at the ledger when idle.
    max_studies
        Studies one worker takes at once: their images are decoded and predicted in
        shared batches, then each study's results are built and written on its own.
    nice
        How much lower the workers' CPU priority is than the listener's (``os.nice``,
        0-19), so that C-ECHO and C-STORE are answered promptly while they analyse.
    """

    workers: int = 1
    poll_s: float = 0.1
    max_studies: int = 4
    nice: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 64 or not 0 < self.poll_s <= 10 or not 1 <= self.max_studies <= 64:
            raise ConfigError("work needs 1 <= workers <= 64, 0 < poll_s <= 10 and 1 <= max_studies <= 64")
        if not 0 <= self.nice <= 19:
            raise ConfigError("work.nice must be between 0 and 19")


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
class DriftConfig:
    """``[drift]``: input drift monitoring (:mod:`chexnet_dicom.node.drift_window`).

    The most recent analysed images are compared with the model's reference sample
    (the card's ``drift`` entry) by :func:`chexnet_dicom.drift.score_window`; the
    window is kept in the ledger, so it survives a restart.

    Attributes
    ----------
    enabled
        Monitor drift (off by itself when the model card has no drift reference).
    window
        Analysed images in the rolling window (the most recent ones).
    min_window
        Images the window needs before it is scored.
    alpha
        False-alarm level of one evaluation (weighted Bonferroni over the parts);
        a score of 1.0 is the threshold.
    """

    enabled: bool = True
    window: int = 50
    min_window: int = 20
    alpha: float = 1e-3

    def __post_init__(self) -> None:
        if not 2 <= self.min_window <= self.window <= 100_000:
            raise ConfigError("drift needs 2 <= min_window <= window <= 100000")
        if not 0 < self.alpha < 1:
            raise ConfigError("drift.alpha must be between 0 and 1 (exclusive)")


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``chexdcm listen`` reads: one attribute per TOML table.

    Attributes
    ----------
    weights
        Model card, folder holding one, or registry name (``""``: the usual resolution).
    listen, access, tls, spool, work, metrics, drift, destination
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
    drift: DriftConfig = field(default_factory=DriftConfig)
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


def load_node_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> NodeConfig:
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
    return load_config(NodeConfig, path, overrides)
