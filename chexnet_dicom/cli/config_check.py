"""``chexdcm config check FILE``: validate a TOML configuration without starting anything.

The kind is told by its tables: a batch configuration (``[batch]``), a node
configuration (``[listen]``, ``[access]``, ``[spool]``, ...), a training recipe
(``[data]``, ``[train]``, ...) or an analysis configuration (``[ingest]``,
``[runtime]``, ``[outputs]``); ``--kind`` forces one.  A node configuration gets the
checks ``chexdcm listen`` makes before it binds (:func:`chexnet_dicom.cli.listen.start_checks`:
destination, TLS files, allow-list hosts that must resolve), a batch configuration the
destination check of ``chexdcm batch``.  Exit 0 and "ok" when valid; exit 2 with the
key path of the first problem otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chexnet_dicom.errors import EXIT_OK

__all__ = ["NODE_TABLES", "register", "run"]

#: Tables only a node configuration has.
NODE_TABLES = frozenset({"listen", "access", "tls", "spool", "work", "metrics", "drift", "destination"})
_TRAIN_TABLES = frozenset({"data", "preprocessing", "augment", "train", "output"})
_KINDS = ("auto", "node", "batch", "analysis", "train")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``config`` subcommand (``config check FILE``)."""
    p = sub.add_parser("config", help="validate a TOML configuration (config check FILE)")
    p.add_argument("action", choices=("check",), help="check: validate FILE")
    p.add_argument("file", type=Path, metavar="FILE", help="the TOML configuration to validate")
    p.add_argument(
        "--kind",
        choices=_KINDS,
        default="auto",
        help="which door's configuration FILE is (default: auto, from the tables it holds)",
    )
    p.set_defaults(func=run)


def _kind(tables: set[str]) -> str:
    if "batch" in tables:
        return "batch"
    if tables & NODE_TABLES:
        return "node"
    return "train" if tables & _TRAIN_TABLES else "analysis"


def run(args: argparse.Namespace) -> int:
    """Validate ``FILE``; a ConfigError (exit 2) names the key path."""
    from chexnet_dicom.config import (
        load_analysis_config,
        load_batch_config,
        load_node_config,
        load_toml,
        load_train_config,
    )

    kind = _kind(set(load_toml(args.file))) if args.kind == "auto" else args.kind
    if kind == "node":
        from chexnet_dicom.cli.listen import start_checks

        start_checks(load_node_config(args.file))
    elif kind == "batch":
        from chexnet_dicom.net.destination import destination_from_config

        destination_from_config(load_batch_config(args.file).destination)
    elif kind == "train":
        load_train_config(args.file)
    else:
        load_analysis_config(args.file)
    print(f"{args.file}: ok ({kind} configuration)")
    return EXIT_OK
