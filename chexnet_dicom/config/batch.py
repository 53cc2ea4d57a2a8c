"""What ``chexdcm batch --config FILE`` reads (``pipelines/batch.toml``): :class:`BatchConfig`.

The same ``[ingest]``, ``[runtime]`` and ``[outputs]`` tables as ``infer`` (and the
node), plus ``[batch]`` and the node's ``[destination]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chexnet_dicom.config.analysis import AnalysisConfig, IngestConfig, OutputOptions, RuntimeConfig
from chexnet_dicom.config.net import DestinationConfig
from chexnet_dicom.config.overrides import load_config
from chexnet_dicom.errors import ConfigError

__all__ = ["BATCH_ENGINES", "BatchConfig", "BatchOptions", "check_pseudonymization", "load_batch_config"]


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

    def __post_init__(self) -> None:
        check_pseudonymization(
            self.batch.pseudonymize, write_dicom=self.batch.write_dicom, send=bool(self.destination.url)
        )

    @property
    def analysis(self) -> AnalysisConfig:
        """The analysis part, as ``infer`` reads it."""
        return AnalysisConfig(self.weights, self.ingest, self.runtime, self.outputs)


def check_pseudonymization(pseudonymize: bool, *, write_dicom: bool, send: bool) -> None:
    """The rule: pseudonymised tables never come with DICOM results (written or sent).

    DICOM results must link to the real study, and pseudonymised tables must not: the
    one place this is decided, for the configuration file, the flags and the runner.

    Parameters
    ----------
    pseudonymize
        The tables are pseudonymised.
    write_dicom
        SR and SC objects are written.
    send
        Results are delivered to a destination.

    Raises
    ------
    ConfigError
        Pseudonymisation with either.
    """
    if pseudonymize and (write_dicom or send):
        raise ConfigError(
            "--pseudonymize (batch.pseudonymize) cannot be combined with --write-dicom (batch.write_dicom) "
            "or --send (destination.url): DICOM results must link to the real study, and pseudonymised "
            "tables must not"
        )


def load_batch_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> BatchConfig:
    """Read ``[ingest]``, ``[runtime]``, ``[outputs]``, ``[batch]``, ``[destination]`` (and ``weights``) from TOML.

    Parameters
    ----------
    path
        TOML file; None: the defaults.
    overrides
        Dotted settings on top (the command line's flags).

    Returns
    -------
    BatchConfig

    Raises
    ------
    ConfigError
        Unknown tables or keys, wrong types, invalid values (the message names the key).
    """
    return load_config(BatchConfig, path, overrides)
