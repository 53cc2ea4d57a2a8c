"""Delivery settings shared by the node and batch: ``[destination]`` and its ``[destination.timeouts]``."""

from __future__ import annotations

from dataclasses import dataclass, field

from chexnet_dicom.config.schema import MiB
from chexnet_dicom.errors import ConfigError

__all__ = ["DestinationConfig", "NetTimeouts"]


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
