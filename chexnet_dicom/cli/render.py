"""``chexdcm render FILE -o out.png [--size N] [--no-fast-path]``: the image the model sees.

Reads one DICOM file, decodes and renders it exactly as analysis does
(:func:`chexnet_dicom.dicom.load.load_image`: Modality LUT, VOI, Presentation,
then the measured corrections: percentile window, orientation, inversion) and writes
it as an 8-bit greyscale PNG (bright = dense, head up, patient's right on the image
left).  With ``--size N`` the image is resized to N x N with the model's own resize
(anti-aliased bilinear, identical to :func:`chexnet_dicom.transforms.resize_image`) and the decoder may take its
reduced-resolution fast path.  The decode path, the VOI used, the orientation
operations and the provenance flags are printed on stdout.

Exit codes
----------
0
    The PNG was written.
1
    Runtime failure: the file cannot be analysed (not DICOM, corrupt, unsupported,
    too large) or the PNG cannot be written.
2
    Usage or configuration error (bad options, input file missing, invalid ``--config``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from chexnet_dicom.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError

if TYPE_CHECKING:
    from chexnet_dicom.config import IngestConfig

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``render`` subcommand."""
    p = sub.add_parser(
        "render",
        help="render the display image the model sees to PNG",
        description="Render one DICOM file to an 8-bit PNG exactly as the model sees it "
        "(after window fallback, orientation and inversion corrections) and print the "
        "provenance flags. Exit status: 0 written, 1 runtime failure, 2 usage error.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="DICOM file")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.png", help="PNG to write")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        metavar="N",
        help="resize to N x N as the model input does (and allow a reduced-resolution decode)",
    )
    p.add_argument("--no-fast-path", action="store_true", help="always decode at full resolution")
    p.add_argument(
        "--inversion",
        choices=("correct", "flag", "ignore"),
        default=None,
        help="content inversion check policy (default: config, else correct)",
    )
    p.add_argument(
        "--orientation",
        choices=("correct", "flag", "ignore"),
        default=None,
        help="PatientOrientation policy (default: config, else correct)",
    )
    p.add_argument("--config", type=Path, help="TOML file with an [ingest] table (limits, pixels)")
    p.add_argument("--json", action="store_true", help="print the provenance as one JSON object")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> IngestConfig:
    import dataclasses

    from chexnet_dicom.config import IngestConfig, from_mapping, load_toml

    config = IngestConfig()
    if args.config is not None:
        table = load_toml(args.config).get("ingest", {})
        if not isinstance(table, dict):
            raise ConfigError(f"[ingest] in {args.config} must be a table")
        config = from_mapping(IngestConfig, table, _prefix="ingest")
    changes: dict[str, object] = {}
    if args.no_fast_path:
        changes["fast_path"] = False
    if args.inversion is not None:
        changes["inversion"] = args.inversion
    if args.orientation is not None:
        changes["orientation"] = args.orientation
    if changes:
        config = dataclasses.replace(config, pixels=dataclasses.replace(config.pixels, **changes))  # type: ignore[arg-type]
    return config


def run(args: argparse.Namespace) -> int:
    """Render ``args.file`` to ``args.output``; see the module docstring for exit codes."""
    import numpy as np
    from PIL import Image

    # resize_display is the same anti-aliased bilinear resize as transforms.resize_image
    # (one implementation) without importing MONAI/torch.
    from chexnet_dicom.atomic import atomic_write
    from chexnet_dicom.dicom.load import load_image
    from chexnet_dicom.dicom.resize import resize_display

    if args.size is not None and args.size < 1:
        print("chexdcm render: error: --size must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    if not args.file.is_file():
        print(f"chexdcm render: error: {args.file} is not a file", file=sys.stderr)
        return EXIT_USAGE
    config = _config(args)
    with warnings.catch_warnings():
        # pydicom warns about invalid values and may quote them (PHI); the flags say enough.
        warnings.simplefilter("ignore", UserWarning)
        shown = load_image(args.file, config=config, target_size=args.size).display
    image = shown.image if args.size is None else resize_display(shown.image, (args.size, args.size))
    pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    try:
        png = Image.fromarray(pixels, mode="L")
        atomic_write(args.output, lambda tmp: png.save(tmp, format="PNG"), parents=False)
    except OSError as exc:
        print(f"chexdcm render: error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    prov = shown.provenance
    if args.json:
        record: dict[str, object] = {
            "path": str(args.file),
            "output": str(args.output),
            "shape": list(pixels.shape),
            "source_shape": list(shown.source_shape),
            "decode_factor": shown.decode_factor,
            "orientation_ops": list(shown.orientation_ops),
            **{k: prov[k] for k in ("decode_path", "voi", "flags", "steps") if k in prov},
        }
        print(json.dumps(record))
        return EXIT_OK
    flags = ", ".join(prov.get("flags", [])) or "none"
    ops = ", ".join(shown.orientation_ops) or "none"
    print(
        f"{args.output}: {pixels.shape[0]}x{pixels.shape[1]} from {shown.source_shape[0]}x{shown.source_shape[1]}"
    )
    print(f"  decode: {prov.get('decode_path', '?')} (factor {shown.decode_factor})")
    print(f"  voi: {prov.get('voi', '?')}")
    print(f"  orientation: {ops}")
    print(f"  flags: {flags}")
    return EXIT_OK
