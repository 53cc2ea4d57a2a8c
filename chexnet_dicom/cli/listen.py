"""``chexdcm listen``: run the DICOM listener node (receive by C-STORE, analyse, deliver).

The configuration is ``--config FILE`` (TOML: ``[listen]``, ``[access]``, ``[tls]``,
``[spool]``, ``[work]``, ``[metrics]``, ``[destination]``, ``[ingest]``, ``[runtime]``,
``[outputs]``; see ``pipelines/node.toml``) with the flags on top.  The defaults are the
secure ones: bound to 127.0.0.1, the calling AE title must be on ``--allow-aet`` (or
``--open``), the called AE title is checked, associations, PDUs and instances are
bounded.  With no ``--dest`` the results go to the spool's ``outbox/`` folder.

The node runs until SIGTERM or SIGINT, then stops gracefully: no new associations,
open ones get a grace period, the worker finishes its study.  After any stop, even
``kill -9``, the next start resumes from the ledger.

Also here: the helpers ``chexdcm status`` and ``chexdcm dead-letters`` use to find the
spool from ``--spool`` or ``--config``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chexnet_dicom.cli.options import (
    add_draw_unreliable_option,
    add_runtime_options,
    add_weights_option,
    draw_unreliable_override,
    runtime_overrides,
)
from chexnet_dicom.errors import EXIT_OK, ConfigError

if TYPE_CHECKING:
    import ssl

    from chexnet_dicom.config import NodeConfig
    from chexnet_dicom.net.destination import Destination

__all__ = ["add_spool_options", "config_from_args", "register", "run", "spool_of", "start_checks"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``listen`` subcommand."""
    p = sub.add_parser(
        "listen",
        help="run the DICOM listener node: receive, analyse, deliver SR + heatmaps",
        description="Receive chest radiographs by C-STORE, analyse each study once it is complete "
        "(association released and quiet for --quiet-period seconds) and deliver the SR and "
        "heatmap overlays to --dest (C-STORE AE@host:port or a STOW-RS URL), or to the spool's "
        "outbox. Runs until SIGTERM. Research use only.",
    )
    p.add_argument("--config", type=Path, help="TOML node configuration (e.g. pipelines/node.toml)")
    p.add_argument("--ae-title", help="this node's AE title (default CHEXDCM)")
    p.add_argument("--port", type=int, help="TCP port (default 11112; 0: any free port)")
    p.add_argument("--bind", help="IP address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--allow-aet",
        action="append",
        metavar="AE[@host]",
        help="calling AE title allowed to send (repeatable; replaces the file's list)",
    )
    p.add_argument("--open", action="store_true", default=None, help="accept any calling AE title")
    p.add_argument("--dest", help="where results go: AE@host:port (C-STORE) or an http(s) STOW-RS URL")
    p.add_argument("--dest-token-file", help="STOW-RS bearer token file")
    p.add_argument("--dest-token-env", help="environment variable holding the STOW-RS bearer token")
    p.add_argument("--dest-basic-file", help="file holding STOW-RS basic credentials user:password")
    p.add_argument("--dest-basic-env", help="environment variable holding user:password")
    p.add_argument("--dest-ca-bundle", help="CA bundle (PEM) verifying an https or TLS destination")
    p.add_argument(
        "--quiet-period", type=float, help="seconds without new instances before analysis (default 5)"
    )
    p.add_argument(
        "--spool",
        help="the spool folder (instances, ledger, results; default: [spool] dir, else ./chexdcm-spool)",
    )
    add_weights_option(p)
    add_runtime_options(p, "device")
    add_draw_unreliable_option(p)
    p.add_argument("--acse-timeout", type=float, metavar="S", help="seconds for association messages (30)")
    p.add_argument("--dimse-timeout", type=float, metavar="S", help="seconds for DIMSE messages (60)")
    p.add_argument(
        "--socket-timeout", type=float, metavar="S", help="seconds a connection may be silent (60)"
    )
    p.add_argument("--max-associations", type=int, metavar="N", help="associations at once (8)")
    p.add_argument("--max-pdu", type=int, metavar="BYTES", help="largest PDU received (131072)")
    p.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", help="the certificate's key (PEM)")
    p.add_argument("--tls-ca", help="CA bundle of the peers' certificates (mutual TLS)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """The configuration file (if any) with the flags on top, validated.

    Raises
    ------
    ConfigError
        Naming the key path of the first problem.
    """
    from chexnet_dicom.config import load_node_config

    flags: dict[str, Any] = {
        "listen.ae_title": args.ae_title,
        "listen.port": args.port,
        "listen.bind": args.bind,
        "listen.quiet_period": args.quiet_period,
        "listen.acse_timeout": args.acse_timeout,
        "listen.dimse_timeout": args.dimse_timeout,
        "listen.socket_timeout": args.socket_timeout,
        "listen.max_associations": args.max_associations,
        "listen.max_pdu": args.max_pdu,
        "access.allow": args.allow_aet,
        "access.open": args.open,
        "destination.url": args.dest,
        "destination.token_file": args.dest_token_file,
        "destination.token_env": args.dest_token_env,
        "destination.basic_file": args.dest_basic_file,
        "destination.basic_env": args.dest_basic_env,
        "destination.ca_bundle": args.dest_ca_bundle,
        "spool.dir": args.spool,
        "tls.cert": args.tls_cert,
        "tls.key": args.tls_key,
        "tls.ca_bundle": args.tls_ca,
        "metrics.port": args.metrics_port,
    }
    overrides = {k: v for k, v in flags.items() if v is not None} | runtime_overrides(args)
    overrides |= draw_unreliable_override(args)
    if args.tls_cert or args.tls_key:
        overrides["tls.enabled"] = True
        overrides.setdefault("tls.require_client_cert", bool(args.tls_ca))
    if args.metrics_port is not None:
        overrides["metrics.enabled"] = True
    if args.max_associations is not None:  # keep the connection limit at least as high
        overrides.setdefault("listen.max_connections", max(16, 2 * args.max_associations))
    return load_node_config(args.config, overrides)


def start_checks(config: NodeConfig) -> tuple[Destination | None, ssl.SSLContext | None]:
    """What ``listen`` checks before it binds, beyond the configuration's own validation.

    The destination (URL, credentials), the TLS certificate, key and CA files, and the
    allow-list's hosts (each must resolve, as the listener resolves them once at start).
    ``chexdcm config check`` runs the same checks.

    Returns
    -------
    (Destination or None, ssl.SSLContext or None)
        Where results go (None: the outbox) and the listener's TLS context (None: plain TCP).

    Raises
    ------
    ConfigError
        Naming the setting at fault.
    """
    from chexnet_dicom.net.destination import destination_from_config
    from chexnet_dicom.node.scp import AccessPolicy

    destination = destination_from_config(config.destination)
    tls = None
    if config.tls.enabled:
        from chexnet_dicom.net.tls import server_context

        tls = server_context(
            config.tls.cert,
            config.tls.key,
            config.tls.ca_bundle or None,
            require_client_cert=config.tls.require_client_cert,
        )
    AccessPolicy(config.access.allow, config.access.open)
    return destination, tls


def run(args: argparse.Namespace) -> int:
    """Start the node and serve until SIGTERM."""
    import os

    from chexnet_dicom.node.service import Node

    config = config_from_args(args)
    os.environ["CHEXDCM_VERBOSITY"] = str(getattr(args, "verbose", 0) or 0)  # the workers log alike
    destination, tls = start_checks(config)
    node = Node(config, destination, tls)
    port = node.start()
    where = destination.describe() if destination is not None else f"outbox {node.spool.outbox}"
    print(
        f"chexdcm listen: {config.listen.ae_title} on {config.listen.bind}:{port}"
        f"{' (TLS)' if tls else ''}, spool {node.spool.root}, results to {where}",
        file=sys.stderr,
        flush=True,
    )
    return node.run() or EXIT_OK


# --------------------------------------------------------------------------- shared by status, dead-letters


def add_spool_options(p: argparse.ArgumentParser) -> None:
    """``--spool DIR | --config FILE``."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--spool", type=Path, help="the node's spool folder (default: ./chexdcm-spool)")
    g.add_argument("--config", type=Path, help="the node's TOML configuration (its spool.dir)")


def spool_of(args: argparse.Namespace) -> Path:
    """The spool folder named by ``--spool`` or ``--config`` (default ``chexdcm-spool``).

    Raises
    ------
    ConfigError
        The folder holds no ledger.
    """
    if args.spool is not None:
        root = Path(args.spool)
    else:
        from chexnet_dicom.config import load_toml

        doc = load_toml(args.config) if args.config is not None else {}
        spool = doc.get("spool", {}) if isinstance(doc.get("spool", {}), dict) else {}
        root = Path(str(spool.get("dir", "chexdcm-spool")))
    if not (root / "ledger.sqlite").is_file():
        raise ConfigError(f"no node ledger in {root} (is it the node's spool.dir?)")
    return root
