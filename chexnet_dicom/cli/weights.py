"""``chexdcm weights list|fetch|import|info|calibrate-ood``: published checkpoints and model bundles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from chexnet_dicom.errors import EXIT_OK, EXIT_USAGE, WeightsError

__all__ = ["register", "run"]

_DTYPES = ("float32", "float16")


def register(subparsers: Any) -> None:
    """Add the ``weights`` subcommand and its sub-actions."""
    p = subparsers.add_parser("weights", help="list, fetch, import and inspect model weights")
    sub = p.add_subparsers(dest="weights_action", metavar="ACTION")

    sub.add_parser("list", help="published checkpoints, their hashes and cache state")

    f = sub.add_parser("fetch", help="download (or verify a manually placed) checkpoint and convert it")
    f.add_argument("name", help="registry name (see `chexdcm weights list`)")
    f.add_argument("--sha256", help="expected sha256 when the registry publishes no hash")
    f.add_argument("--no-convert", action="store_true", help="only download and verify")
    f.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")

    i = sub.add_parser("import", help="convert a foreign checkpoint into a safetensors + card bundle")
    i.add_argument("format", help="torchvision-imagenet, arnoweng, reproduce-chexnet or auto")
    i.add_argument("file", type=Path, help="the checkpoint file")
    i.add_argument("--out", type=Path, required=True, help="output folder")
    i.add_argument("--name", help="file stem of the bundle (default: the format's model name)")
    i.add_argument(
        "--dtype", choices=_DTYPES, default="float32", help="tensor storage dtype (default float32)"
    )
    i.add_argument("--sha256", help="verify the file against this sha256 before loading it")

    n = sub.add_parser("info", help="describe a model card or a checkpoint file (verifies hashes)")
    n.add_argument("path", type=Path, help="*.card.json or a checkpoint file")
    n.add_argument("--json", action="store_true", help="machine-readable output")

    c = sub.add_parser(
        "calibrate-ood",
        help="fit the out-of-distribution reference statistics and threshold of a bundle",
    )
    c.add_argument("card", type=Path, help="the bundle's *.card.json (its weights are not changed)")
    c.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="folder of in-distribution images (DICOM, PNG, JPEG, TIFF); 20%% are held out for the threshold",
    )
    c.add_argument("--backend", default="torch", help="predictor backend (default torch)")
    p.set_defaults(func=run, _weights_parser=p)


def run(args: argparse.Namespace) -> int:
    """Dispatch ``chexdcm weights ACTION``."""
    action = getattr(args, "weights_action", None)
    if action is None:
        args._weights_parser.print_help(sys.stderr)
        return EXIT_USAGE
    handler = {
        "list": _list,
        "fetch": _fetch,
        "import": _import,
        "info": _info,
        "calibrate-ood": _calibrate_ood,
    }[action]
    return handler(args)


def _hash_arg(value: str | None) -> Any:
    from chexnet_dicom.model.registry import HashSpec

    return HashSpec("sha256", value.lower()) if value else None


def _list(args: argparse.Namespace) -> int:
    from chexnet_dicom.model.card import ModelCard
    from chexnet_dicom.model.registry import (
        DEFAULT_CHECKPOINT,
        REGISTRY,
        bundle_dir,
        cache_dir,
        download_path,
    )
    from chexnet_dicom.model.resolve import DEMO_CARD

    print(f"cache: {cache_dir()}")
    if DEMO_CARD.is_file():
        demo = ModelCard.read(DEMO_CARD)
        print(f"{demo.name} {demo.version} (bundled with the package)")
        print("  demo weights for pipeline demonstration only, not for clinical use")
        print(f"  card:   {DEMO_CARD}")
        print(f"  sha256: {demo.weights_sha256}")
        print(
            "  used by `chexdcm infer` when neither --weights, CHEXDCM_WEIGHTS nor a converted "
            f"{DEFAULT_CHECKPOINT} bundle is there"
        )
    for entry in REGISTRY.values():
        raw = "downloaded" if download_path(entry).is_file() else "not downloaded"
        bundle = "converted" if any(bundle_dir(entry).glob("*.card.json")) else "not converted"
        default = " (default)" if entry.name == DEFAULT_CHECKPOINT else ""
        print(f"{entry.name}{default}")
        print(f"  {entry.description}")
        print(f"  url:    {entry.url}")
        print(f"  hash:   {entry.hash.describe() if entry.hash else 'none published (fetch needs --sha256)'}")
        print(f"  format: {entry.format}; {raw}, {bundle}")
    return EXIT_OK


def _fetch(args: argparse.Namespace) -> int:
    from chexnet_dicom.model.weights import fetch

    raw, card = fetch(
        args.name, expected=_hash_arg(args.sha256), convert=not args.no_convert, timeout=args.timeout
    )
    print(f"verified: {raw}")
    if card is not None:
        print(f"bundle:   {card}")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    import torch

    from chexnet_dicom.model.weights import import_checkpoint

    result = import_checkpoint(
        args.file,
        args.out,
        fmt=args.format,
        stem=args.name,
        dtype=getattr(torch, args.dtype),
        expected=_hash_arg(args.sha256),
    )
    print(f"read {args.file} as {result.format} (sha256 {result.sha256})")
    print(f"bundle: {result.card_path}")
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    from chexnet_dicom.model.card import CARD_SUFFIX, load_bundle

    path: Path = args.path
    if not path.is_file():
        raise WeightsError(f"{path} does not exist or is not a file")
    info: dict[str, Any]
    if path.name.endswith(CARD_SUFFIX):
        net, card = load_bundle(path)  # verifies sha256, labels and tensors
        info = {
            "kind": "bundle",
            "name": card.name,
            "version": card.version,
            "source": card.source,
            "weights_file": card.weights_file,
            "weights_sha256": card.weights_sha256,
            "weights_dtype": card.weights_dtype,
            "device_uid": card.device_uid,
            "preprocessing": card.to_dict()["preprocessing"],
            "intended_use": card.intended_use,
            "ood": card.ood or "not calibrated (chexdcm weights calibrate-ood)",
            "drift": card.drift or "no drift reference (chexdcm weights calibrate-ood)",
            "labels": len(card.labels),
            "parameters": sum(p.numel() for p in net.parameters()),
            "verified": "sha256 matches the card; all tensors loaded strictly",
        }
    else:
        info = _checkpoint_info(path)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k}: {v}")
    return EXIT_OK


def _calibrate_ood(args: argparse.Namespace) -> int:
    from chexnet_dicom.model.backends import load_predictor
    from chexnet_dicom.train.ood_calibration import calibrate_card, reference_images

    files = reference_images(args.reference)
    predictor = load_predictor(args.card, backend=args.backend)
    ref = calibrate_card(args.card, predictor, files, source=f"reference folder {args.reference.name}")
    print(f"OOD reference: {ref.file} (sha256 {ref.sha256})")
    print(f"  fitted on {ref.images['fit']} images, thresholds on {ref.images['validation']}")
    for method, thr in ref.thresholds.items():
        mark = " (default)" if method == ref.default_method else ""
        print(f"  {method}{mark}: threshold {thr:.6g} (95% of held-out reference images below)")
    from chexnet_dicom.model.card import ModelCard

    drift = ModelCard.read(args.card).drift
    if drift:
        known = ", ".join(drift.get("metadata_variables", [])) or "none (images without DICOM headers)"
        print(f"drift reference: {drift['file']} (sha256 {drift['sha256']}), {drift['size']} images")
        print(f"  metadata variables known: {known}")
    else:
        print("drift reference: not written (at least 20 reference images are needed)")
    return EXIT_OK


def _checkpoint_info(path: Path) -> dict[str, Any]:
    import zipfile

    from chexnet_dicom.model.registry import REGISTRY, file_digests
    from chexnet_dicom.model.weights import load_checkpoint

    digests = file_digests(path)
    matches = []
    for entry in REGISTRY.values():
        h = entry.hash
        if h is None:
            continue
        value = digests["sha256"] if h.kind.startswith("sha256") else digests[h.kind]
        if value.startswith(h.value) if h.kind == "sha256-prefix" else value == h.value:
            matches.append(entry.name)
    net, fmt = load_checkpoint(path)
    return {
        "kind": "checkpoint",
        "format": fmt,
        "serialization": "zip" if zipfile.is_zipfile(path) else "legacy",
        "bytes": path.stat().st_size,
        "sha256": digests["sha256"],
        "git_blob_sha1": digests["git-blob-sha1"],
        "registry_match": ", ".join(matches) or "none",
        "parameters": sum(p.numel() for p in net.parameters()),
        "loads_strictly": True,
    }
