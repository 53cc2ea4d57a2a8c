"""Where results go: ``AE@host:port`` (DICOM C-STORE) or a DICOMweb STOW-RS URL.

One parser for the node's ``--dest`` and the batch runner's ``--send``
(:func:`parse_destination`), and one for the ``[destination]`` table of a TOML file
(:func:`destination_from_config`).  Credentials never sit in the URL (it is logged):
a bearer token or basic ``user:password`` comes from a file or an environment
variable, read when the destination is parsed so that a missing one fails at start-up.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from chexnet_dicom.config import DestinationConfig, check_ae_title
from chexnet_dicom.errors import ConfigError
from chexnet_dicom.net.tls import client_context

__all__ = [
    "DicomDestination",
    "Destination",
    "StowDestination",
    "destination_from_config",
    "parse_ae_title",
    "parse_destination",
]

_HOST_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def parse_ae_title(text: str, what: str = "AE title") -> str:
    """An Application Entity title (PS3.5 AE: 1-16 characters, no backslash or control character).

    The same rule as the node's configuration (:func:`chexnet_dicom.config.check_ae_title`).

    Raises
    ------
    ConfigError
        An empty, all-space, too long or ill-formed title.
    """
    return check_ae_title(text, what)


@dataclass(frozen=True)
class DicomDestination:
    """A DICOM Storage SCP (a PACS) reached by C-STORE.

    Attributes
    ----------
    ae_title, host, port
        The called AE title and address.
    calling_ae
        This side's AE title.
    tls
        A client TLS context (TLS >= 1.2, verified), or None for plain TCP.
    """

    ae_title: str
    host: str
    port: int
    calling_ae: str = "CHEXDCM"
    tls: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        """``AE@host:port`` (AE titles and addresses are configuration, not PHI)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}" + (" (TLS)" if self.tls else "")


@dataclass(frozen=True)
class StowDestination:
    """A DICOMweb server that takes STOW-RS (``POST {root}/studies``).

    Attributes
    ----------
    url
        The ``/studies`` endpoint.
    authorization
        The ``Authorization`` header value (``Bearer ...`` or ``Basic ...``), or None.
    tls
        The context that verifies an ``https`` server (CA bundle or the system's).
    """

    url: str
    authorization: str | None = field(default=None, repr=False, compare=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        """The endpoint without query or fragment (credentials are never in it)."""
        return self.url


Destination = DicomDestination | StowDestination


def _secret(file: str | None, env: str | None, what: str) -> str | None:
    if file:
        path = Path(file)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{what} file {path} cannot be read ({exc.strerror or type(exc).__name__})"
            ) from exc
    elif env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError(f"{what}: environment variable {env} is not set or empty")
    else:
        return None
    if not value or any(c in value for c in "\r\n"):
        raise ConfigError(f"{what} must be one non-empty line")
    return value


def _parse_host(host: str, text: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ConfigError(f"destination {text!r}: {host} is not an IPv6 address") from None
    if not _HOST_RE.match(host):
        raise ConfigError(f"destination {text!r}: {host!r} is not a host name or IPv4 address")
    return host


def parse_destination(
    text: str,
    *,
    calling_ae: str = "CHEXDCM",
    token_file: str | None = None,
    token_env: str | None = None,
    basic_file: str | None = None,
    basic_env: str | None = None,
    ca_bundle: str | None = None,
    tls: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> Destination:
    """Parse ``AE@host:port`` or a STOW-RS URL (``http(s)://host[:port]/dicom-web[/studies]``).

    Parameters
    ----------
    text
        The destination as the user wrote it.
    calling_ae
        This side's AE title (C-STORE).
    token_file, token_env, basic_file, basic_env
        STOW-RS credentials: a bearer token or ``user:password``, from a file or an
        environment variable (at most one).
    ca_bundle
        CA certificates for ``https`` or a TLS DICOM peer.
    tls, tls_cert, tls_key
        C-STORE over TLS, with this side's certificate for mutual TLS.

    Returns
    -------
    DicomDestination or StowDestination

    Raises
    ------
    ConfigError
        Anything ill-formed, credentials in the URL, unreadable credential or TLS files.
    """
    text = text.strip()
    if "://" in text:
        return _parse_stow(text, token_file, token_env, basic_file, basic_env, ca_bundle)
    if any((token_file, token_env, basic_file, basic_env)):
        raise ConfigError("STOW-RS credentials were given for a DICOM (AE@host:port) destination")
    ae, at, address = text.rpartition("@")
    if not at:
        raise ConfigError(f"destination {text!r} must be AE@host:port or an http(s):// STOW-RS URL")
    host, colon, port_text = address.rpartition(":")
    if not colon or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"destination {text!r}: the port must be a number from 1 to 65535")
    context = None
    if tls or tls_cert or tls_key:
        context = client_context(ca_bundle, tls_cert, tls_key)
    return DicomDestination(
        ae_title=parse_ae_title(ae, "destination AE title"),
        host=_parse_host(host, text),
        port=int(port_text),
        calling_ae=parse_ae_title(calling_ae, "calling AE title"),
        tls=context,
    )


def _parse_stow(
    text: str,
    token_file: str | None,
    token_env: str | None,
    basic_file: str | None,
    basic_env: str | None,
    ca_bundle: str | None,
) -> StowDestination:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"STOW-RS destination {text!r} must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise ConfigError(
            "STOW-RS destination: credentials in the URL would be logged; "
            "use a token or basic credentials file or environment variable instead"
        )
    if not parts.hostname:
        raise ConfigError(f"STOW-RS destination {text!r} has no host")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ConfigError(f"STOW-RS destination {text!r} has an invalid port") from None
    path = parts.path.rstrip("/")
    if not path.endswith("/studies"):
        path += "/studies"
    url = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    if sum(bool(v) for v in (token_file, token_env, basic_file, basic_env)) > 1:
        raise ConfigError(
            "give one STOW-RS credential: a token or basic credentials, from a file or the environment"
        )
    authorization = None
    token = _secret(token_file, token_env, "STOW-RS bearer token")
    if token:
        authorization = f"Bearer {token}"
    basic = _secret(basic_file, basic_env, "STOW-RS basic credentials")
    if basic:
        if ":" not in basic:
            raise ConfigError("STOW-RS basic credentials must read user:password")
        import base64

        authorization = "Basic " + base64.b64encode(basic.encode("utf-8")).decode("ascii")
    if authorization and parts.scheme != "https":
        raise ConfigError("STOW-RS credentials are only sent over https")
    context = client_context(ca_bundle) if parts.scheme == "https" else None
    return StowDestination(url=url, authorization=authorization, tls=context)


def destination_from_config(cfg: DestinationConfig) -> Destination | None:
    """The ``[destination]`` table as a destination; None when ``url`` is empty."""
    if not cfg.url:
        return None
    return parse_destination(
        cfg.url,
        calling_ae=cfg.calling_ae,
        token_file=cfg.token_file or None,
        token_env=cfg.token_env or None,
        basic_file=cfg.basic_file or None,
        basic_env=cfg.basic_env or None,
        ca_bundle=cfg.ca_bundle or None,
        tls=cfg.tls,
        tls_cert=cfg.tls_cert or None,
        tls_key=cfg.tls_key or None,
    )
