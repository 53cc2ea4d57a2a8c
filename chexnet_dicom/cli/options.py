"""The flags several subcommands share, declared once: ``--weights`` and the runtime flags.

Also the line that tells which weights those flags chose (:func:`announce_weights`).

Each flag maps to one configuration setting (``--device`` -> ``runtime.device``) and
defaults to None, so that a flag not given leaves the ``--config`` file's value; the
values given become dotted overrides (:func:`runtime_overrides`) for the configuration
loaders, which check them by the same rules as the file's.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

from chexnet_dicom.config import DEVICE_FORMS, RuntimeConfig, check_device
from chexnet_dicom.errors import ConfigError

__all__ = [
    "RUNTIME_FLAGS",
    "add_draw_unreliable_option",
    "add_runtime_options",
    "add_weights_option",
    "announce_weights",
    "device_name",
    "draw_unreliable_override",
    "non_negative_int",
    "positive_int",
    "runtime_overrides",
]

#: The ``[runtime]`` settings that have a flag (``batch_size`` is ``--batch-size``).
RUNTIME_FLAGS: tuple[str, ...] = ("device", "backend", "precision", "batch_size", "threads", "workers", "tta")


def device_name(value: str) -> str:
    """argparse type of ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises
    ------
    argparse.ArgumentTypeError
        Any other name (argparse reports it as a usage error, exit 2).
    """
    try:
        return check_device(value, "--device")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int(value: str, low: int, words: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < low:
        raise argparse.ArgumentTypeError(f"must be {words}, not {number}")
    return number


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    return _int(value, 1, ">= 1")


def non_negative_int(value: str) -> int:
    """argparse type: an integer >= 0."""
    return _int(value, 0, ">= 0")


def _choices(name: str) -> tuple[str, ...]:
    """The values a ``Literal`` setting of ``[runtime]`` accepts (the config is the one list)."""
    return typing.get_args(typing.get_type_hints(RuntimeConfig)[name])


def _declarations() -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "device": (
            "--device",
            {
                "type": device_name,
                "metavar": "DEVICE",
                "help": f"where the model runs: {DEVICE_FORMS} (default: auto)",
            },
        ),
        "backend": (
            "--backend",
            {
                "choices": _choices("backend"),
                "help": "inference engine: onnxruntime, torch (PyTorch) or auto (default: "
                "ONNX Runtime float32 on a CPU, PyTorch on a GPU or for bf16)",
            },
        ),
        "precision": (
            "--precision",
            {
                "choices": _choices("precision"),
                "help": "numeric precision of the model: fp32, or bf16 (bfloat16, on a GPU or a CPU with bf16) "
                "(default: auto, chosen per device)",
            },
        ),
        "batch_size": (
            "--batch-size",
            {"type": positive_int, "metavar": "B", "help": "images per forward pass (default 8)"},
        ),
        "threads": (
            "--threads",
            {
                "type": positive_int,
                "metavar": "N",
                "help": "model CPU threads (default: every CPU available)",
            },
        ),
        "workers": (
            "--workers",
            {
                "type": non_negative_int,
                "metavar": "N",
                "help": "decode worker processes (default: 0, in-process)",
            },
        ),
        "tta": ("--tta", {"action": "store_true", "help": "TenCrop test-time augmentation (10x slower)"}),
    }


def add_runtime_options(p: argparse.ArgumentParser, *names: str, helps: dict[str, str] | None = None) -> None:
    """Add the runtime flags ``names`` (all of :data:`RUNTIME_FLAGS` when none) to ``p``.

    Parameters
    ----------
    p
        The subcommand's parser.
    names
        Settings of ``[runtime]`` to offer as flags.
    helps
        Help texts that differ for this subcommand (``{"workers": "... default: CPUs - 1"}``).
    """
    declared = _declarations()
    for name in names or RUNTIME_FLAGS:
        flag, kwargs = declared[name]
        if helps and name in helps:
            kwargs = {**kwargs, "help": helps[name]}
        p.add_argument(flag, dest=name, default=None, **kwargs)


def add_weights_option(p: argparse.ArgumentParser) -> None:
    """``--weights CARD|FOLDER|NAME`` (the ``weights`` setting)."""
    p.add_argument(
        "--weights",
        default=None,
        help="model card, folder holding one, or registry name (default: CHEXDCM_WEIGHTS, then the "
        "cache, then the bundled weak demo weights, which are used when nothing else is found)",
    )


def add_draw_unreliable_option(p: argparse.ArgumentParser) -> None:
    """``--draw-unreliable`` (the ``outputs.draw_unreliable`` setting)."""
    p.add_argument(
        "--draw-unreliable",
        action="store_true",
        default=None,
        help="also draw findings marked 'unreliable at this threshold' (validation sensitivity 0 or "
        "fewer than 5 validation positives) as overlays; by default they are listed, not drawn",
    )


def draw_unreliable_override(args: argparse.Namespace) -> dict[str, Any]:
    """``{"outputs.draw_unreliable": True}`` when ``--draw-unreliable`` was given, else ``{}``."""
    return {"outputs.draw_unreliable": True} if getattr(args, "draw_unreliable", None) else {}


def announce_weights(card_path: Path, why: str) -> None:
    """Print which weights ``--weights`` (or the usual resolution) chose, and why, on stderr.

    Given to :func:`~chexnet_dicom.model.startup.start_model` as ``announce``, so the line
    comes before the load (and before a load that fails).
    """
    print(f"weights: {card_path} ({why})", file=sys.stderr)


def runtime_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The runtime flags (and ``--weights``) given on the command line, as dotted settings.

    Parameters
    ----------
    args
        Parsed arguments of a parser given :func:`add_runtime_options`.

    Returns
    -------
    dict
        ``{"runtime.device": "cuda:1", "weights": "...", ...}`` for the flags given only.
    """
    out: dict[str, Any] = {}
    for name in RUNTIME_FLAGS:
        value = getattr(args, name, None)
        if name == "tta":
            value = "tencrop" if value else None
        if value is not None:
            out[f"runtime.{name}"] = value
    if getattr(args, "weights", None) is not None:
        out["weights"] = args.weights
    return out
