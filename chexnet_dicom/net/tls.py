"""TLS contexts for DICOM associations and DICOMweb: TLS 1.2 or later, verified, mutual on request.

The client context verifies the peer against the CA bundle given (or the system's) and
its host name; the server context can require a client certificate signed by the CA
bundle (mutual TLS, PS3.15 Annex B "BCP 195" profile practice).  Protocol versions
below TLS 1.2 are refused on both sides.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from chexnet_dicom.errors import ConfigError

__all__ = ["client_context", "server_context"]


def _readable(path: str | Path, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist or is not a file")
    return str(p)


def client_context(
    ca_bundle: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> ssl.SSLContext:
    """A client context: verifies the server (certificate and host name), TLS >= 1.2.

    Parameters
    ----------
    ca_bundle
        PEM CA certificates that sign the server's certificate; None: the system's.
    cert, key
        This side's certificate and key (PEM) for mutual TLS; both or neither.

    Raises
    ------
    ConfigError
        A file is missing, or the certificate and key do not match.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca_bundle:
            ctx.load_verify_locations(cafile=_readable(ca_bundle, "CA bundle"))
        if cert or key:
            if not (cert and key):
                raise ConfigError("a TLS client certificate needs its key (and the key its certificate)")
            ctx.load_cert_chain(_readable(cert, "TLS certificate"), _readable(key, "TLS key"))
    except ssl.SSLError as exc:
        raise ConfigError(f"TLS files cannot be used: {exc.reason or type(exc).__name__}") from exc
    return ctx


def server_context(
    cert: str | Path,
    key: str | Path,
    ca_bundle: str | Path | None = None,
    *,
    require_client_cert: bool = True,
) -> ssl.SSLContext:
    """A server context with this side's certificate, TLS >= 1.2.

    Parameters
    ----------
    cert, key
        The server's certificate (chain) and key, PEM.
    ca_bundle
        PEM CA certificates that sign the clients' certificates.
    require_client_cert
        Mutual TLS: refuse a client without a certificate the CA bundle verifies.

    Raises
    ------
    ConfigError
        A file is missing or unusable, or mutual TLS is asked for without a CA bundle.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(_readable(cert, "TLS certificate"), _readable(key, "TLS key"))
        if ca_bundle:
            ctx.load_verify_locations(cafile=_readable(ca_bundle, "CA bundle"))
    except ssl.SSLError as exc:
        raise ConfigError(f"TLS files cannot be used: {exc.reason or type(exc).__name__}") from exc
    if require_client_cert:
        if not ca_bundle:
            raise ConfigError("mutual TLS needs a CA bundle that signs the clients' certificates")
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
