"""``chexdcm check PATH... [--json] [--no-decode] [--strict]``: gate DICOM files.

Each file (folders are walked by the rule of :mod:`chexnet_dicom.dicom.walk`, the
same walker ``infer`` and ``batch`` use) gets one line: a
human-readable ``STATUS REASON path: message [flags]`` or, with ``--json``, one JSON
object per line with ``path``, ``status`` (``accepted`` / ``skipped`` / ``error``),
``reason``, ``message``, ``flags``, ``view_evidence`` and ``decode_path``. A summary goes
to stderr.

Exit codes
----------
0
    Every file was checked (accepted, skipped or error alike), unless ``--strict``.
1
    Runtime failure: a path that does not exist, an unexpected failure while checking a
    file (reported as status ``error`` with reason ``INTERNAL``), no file found.
2
    Usage or configuration error (bad options, invalid ``--config``).
3
    With ``--strict``: a DICOM file is defective (status ``error``: corrupt header or
    pixels, too large, a decoder that gave up), or a path named on the command line is
    not DICOM.  Non-DICOM files met while walking a folder (a README) do not count.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from chexnet_dicom.errors import EXIT_FAILURE, EXIT_INCOMPLETE, EXIT_OK, ConfigError

if TYPE_CHECKING:
    from chexnet_dicom.config import IngestConfig

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``check`` subcommand."""
    p = sub.add_parser(
        "check",
        help="gate DICOM files: accepted / skipped / error with a reason",
        description="Read each DICOM file safely, decide from its header whether it is a "
        "single-frame frontal chest radiograph, and decode the pixels of accepted files. "
        "Exit status: 0 all checked, 1 runtime failure, 2 usage error, 3 (with --strict) a "
        "DICOM file is defective or a named path is not DICOM.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders (recursed)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--no-decode", action="store_true", help="header gate only; do not decode pixels")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 3 when a DICOM file is defective (status error) or a named path is not DICOM; "
        "non-DICOM files met while walking a folder do not count",
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        metavar="N",
        help="decode to at least N pixels a side (fast path; default 256); 0 decodes full resolution",
    )
    p.add_argument("--config", type=Path, help="TOML file with an [ingest] table (limits, pixels)")
    p.set_defaults(func=run)


def _load_config(path: Path | None) -> IngestConfig:
    from chexnet_dicom.config import IngestConfig, from_mapping, load_toml

    if path is None:
        return IngestConfig()
    doc = load_toml(path)
    table = doc.get("ingest", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[ingest] in {path} must be a table")
    return from_mapping(IngestConfig, table, _prefix="ingest")


def _line(result: dict[str, object]) -> str:
    flags = result["flags"]
    tail = f" [{', '.join(str(f) for f in flags)}]" if flags else ""  # type: ignore[attr-defined]
    reason = result["reason"] or "-"
    return f"{str(result['status']).upper():8s} {reason:18s} {result['path']}: {result['message']}{tail}"


def run(args: argparse.Namespace) -> int:
    """Check the files; return the exit code (see the module docstring)."""
    from chexnet_dicom.dicom.check import CHECK_TARGET_SIZE, CheckResult, check_file
    from chexnet_dicom.dicom.reasons import INTERNAL, counts_against_run, status_for
    from chexnet_dicom.dicom.walk import iter_files
    from chexnet_dicom.logs import log_failure

    if args.size is not None and args.size < 0:
        raise ConfigError("--size must be >= 0")
    config = _load_config(args.config)
    target = CHECK_TARGET_SIZE if args.size is None else (args.size or None)
    missing = [p for p in args.paths if not os.path.exists(p)]
    for p in missing:
        print(f"chexdcm check: no such file or folder: {p}", file=sys.stderr)
    counts = {"accepted": 0, "skipped": 0, "error": 0}
    failed = bool(missing)
    named = {os.path.normpath(p) for p in args.paths}
    incomplete = 0
    with warnings.catch_warnings():
        # pydicom warns about invalid values and quotes them (PHI); the result says enough.
        warnings.simplefilter("ignore", UserWarning)
        for entry in iter_files(p for p in args.paths if p not in missing):
            path = entry.path
            if entry.reason is not None:  # the walker's own verdict (a link outside the folder)
                result = CheckResult(path, status_for(entry.reason), entry.reason, entry.message)
            else:
                try:
                    result = check_file(path, config=config, decode=not args.no_decode, target_size=target)
                except Exception as exc:  # a bug must not hide the other files' results
                    log_failure(log, "checking a file", exc)
                    result = CheckResult(
                        path, "error", INTERNAL, f"unexpected {type(exc).__name__}; please report"
                    )
                    failed = True
            counts[result.status] += 1
            incomplete += counts_against_run(
                result.status, result.reason, named=os.path.normpath(path) in named
            )
            record = result.to_dict()
            try:
                print(json.dumps(record, ensure_ascii=False) if args.json else _line(record), flush=True)
            except BrokenPipeError:  # e.g. piped into `head`: stop quietly
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                return EXIT_FAILURE
    total = sum(counts.values())
    print(
        f"chexdcm check: {total} file(s): {counts['accepted']} accepted, "
        f"{counts['skipped']} skipped, {counts['error']} error",
        file=sys.stderr,
    )
    if total == 0 and not missing:
        print("chexdcm check: no files found", file=sys.stderr)
        return EXIT_FAILURE
    if failed:
        return EXIT_FAILURE
    if args.strict and incomplete:
        return EXIT_INCOMPLETE
    return EXIT_OK
