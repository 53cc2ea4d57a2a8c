"""``chexdcm`` command line: a thin dispatcher over one module per subcommand.

Each subcommand lives in ``chexnet_dicom/cli/<name>.py`` and exposes
``register(subparsers)`` that adds its parser and sets ``func(args) -> int``.
Modules are imported lazily so that ``chexdcm check`` never pays for torch.

Exit codes (the ``EXIT_*`` constants of :mod:`chexnet_dicom.errors`): 0 success, 1
runtime failure, 2 usage or configuration error (argparse, or a
:class:`~chexnet_dicom.errors.ConfigError` from any command), 3 results written but a
DICOM file meant for analysis could not be analysed (``infer``, ``batch``, ``check``).
Other :class:`~chexnet_dicom.errors.ChexDicomError` reaching :func:`main` give 1
(:func:`~chexnet_dicom.errors.exit_code_for`).

Modules
-------

- :mod:`~chexnet_dicom.cli.check`: ``chexdcm check``: gate DICOM files.
- :mod:`~chexnet_dicom.cli.render`: ``chexdcm render``: the image the model sees, as a PNG.
- :mod:`~chexnet_dicom.cli.infer`: ``chexdcm infer``: analyse a study folder and write DICOM
  results.
- :mod:`~chexnet_dicom.cli.batch`: ``chexdcm batch``: a resumable retrospective run over a PACS
  export.
- :mod:`~chexnet_dicom.cli.listen`: ``chexdcm listen``: run the listener node.
- :mod:`~chexnet_dicom.cli.status`: ``chexdcm status``: the node's queue, states, last errors and
  throughput.
- :mod:`~chexnet_dicom.cli.dead_letters`: ``chexdcm dead-letters``: deliveries that used up their
  attempts.
- :mod:`~chexnet_dicom.cli.weights`: ``chexdcm weights``: published checkpoints and model bundles.
- :mod:`~chexnet_dicom.cli.train`: ``chexdcm train``: train CheXNet from a TOML recipe.
- :mod:`~chexnet_dicom.cli.evaluate`: ``chexdcm evaluate``: metrics with patient-level bootstrap CIs
  and a report.
- :mod:`~chexnet_dicom.cli.audit_labels`: ``chexdcm audit-labels``: rank the images whose label is
  most likely wrong, per finding.
- :mod:`~chexnet_dicom.cli.options`: the runtime flags every door declares, declared once.
- :mod:`~chexnet_dicom.cli.config_check`: ``chexdcm config check``: validate a TOML configuration
  without starting anything.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from chexnet_dicom import __version__
from chexnet_dicom.atomic import use_private_umask
from chexnet_dicom.errors import EXIT_FAILURE, EXIT_USAGE, ChexDicomError, exit_code_for
from chexnet_dicom.logs import setup_logging

__all__ = ["main", "SUBCOMMANDS"]

#: name -> (module, one-line help). Order is the order shown in ``--help``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check": ("chexnet_dicom.cli.check", "gate DICOM files: accepted / skipped / error with a reason"),
    "render": ("chexnet_dicom.cli.render", "render the display image the model sees to PNG"),
    "infer": ("chexnet_dicom.cli.infer", "analyse a study folder and write DICOM SR/SC results"),
    "batch": (
        "chexnet_dicom.cli.batch",
        "resumable retrospective run over a PACS export, with result tables",
    ),
    "weights": ("chexnet_dicom.cli.weights", "list, fetch, import and inspect model weights"),
    "train": ("chexnet_dicom.cli.train", "train CheXNet from a TOML recipe"),
    "evaluate": ("chexnet_dicom.cli.evaluate", "evaluate predictions with bootstrap CIs"),
    "audit-labels": (
        "chexnet_dicom.cli.audit_labels",
        "rank the labels most likely wrong (confident learning)",
    ),
    "listen": ("chexnet_dicom.cli.listen", "run the DICOM listener node: receive, analyse, deliver"),
    "status": ("chexnet_dicom.cli.status", "the listener node's queue, states, last errors and throughput"),
    "dead-letters": ("chexnet_dicom.cli.dead_letters", "list, re-send or purge undeliverable results"),
    "config": ("chexnet_dicom.cli.config_check", "validate a TOML configuration (config check FILE)"),
}

log = logging.getLogger(__name__)


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chexdcm",
        description="chexnet-dicom: CheXNet for DICOM chest radiographs (research use only).",
    )
    parser.add_argument("--version", action="version", version=f"chexnet-dicom {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging on stderr: -v info, -vv debug (repeat the flag; it goes before the "
        "command: chexdcm -v infer DIR)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        if wanted is not None and wanted != name:
            sub.add_parser(name, help=help_text)
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            sub.add_parser(name, help=f"{help_text} (not available in this build)")
            continue
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``chexdcm`` command line.

    Parameters
    ----------
    argv
        Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        The process exit code.
    """
    # Idle OpenMP workers must sleep, not spin: on a shared or small machine spinning
    # threads made single forward passes 10-100x slower at random. Must precede torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    use_private_umask()  # PHI at rest: folders 0700, files 0600 (issue 18)
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(args_list)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: --help gives 0, usage errors 2
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    setup_logging(args.verbose)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args))
    except ChexDicomError as exc:
        print(f"chexdcm {args.command}: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("chexdcm: interrupted", file=sys.stderr)
        return EXIT_FAILURE


def console_main() -> None:
    """Entry point of the ``chexdcm`` script: run :func:`main`, then exit at once.

    Output and logs are flushed, then the process ends with :func:`os._exit`, skipping the
    interpreter teardown of torch and MONAI (over a second on a small machine) that
    would otherwise be added to every command's wall time. Every file the commands write
    is closed (and fsynced where it matters) before :func:`main` returns.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)
