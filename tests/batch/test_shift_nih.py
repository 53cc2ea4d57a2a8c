"""The export's cohort shift on real NIH images: held out, no alarm; the same images inverted, an alarm.

The analysis corrects a grey scale that its content shows inverted (``pixels.inversion =
"correct"``, the default): an inverted export analysed so scored no alarm when this test
was written (features 0.07, outputs 0.19), which is the correction working.  The shifted
run therefore only flags the inversion (``"flag"``), so that the model sees the negatives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from chexnet_dicom.errors import EXIT_OK
from tests.helpers.batch import nih_test_keys, run_batch_cli, write_nih_export

CARD = Path(__file__).resolve().parents[2] / "chexnet_dicom" / "model" / "data" / "chexnet_demo.card.json"

pytestmark = pytest.mark.slow


def _invert(root: Path) -> int:
    """Store ``max - value`` in every image of the export (MONOCHROME2 kept: the model sees a negative)."""
    n = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
        top = (1 << int(ds.BitsStored)) - 1
        ds.PixelData = (top - arr.astype(np.int64)).astype(arr.dtype).tobytes()
        ds.save_as(path, enforce_file_format=True)
        n += 1
    return n


def _shift(export: Path, out: Path, *extra: str) -> dict[str, object]:
    assert run_batch_cli(export, out, CARD, *extra) == EXIT_OK
    return json.loads((out / "shift.json").read_text())


def test_inverted_pixels_raise_the_alarm_and_held_out_images_do_not(nih_dir: Path, tmp_path: Path) -> None:
    keys = nih_test_keys()
    held_out = write_nih_export(nih_dir, tmp_path / "held_out", keys)
    same = _shift(held_out, tmp_path / "run_held_out")
    assert same["status"] == "scored" and same["scored_images"] == len(keys)
    assert not same["alarm"], same["parts"]
    inverted = write_nih_export(nih_dir, tmp_path / "inverted", keys)
    assert _invert(inverted) == len(keys)
    config = tmp_path / "flag_inversion.toml"
    config.write_text('[ingest.pixels]\ninversion = "flag"\n')
    shifted = _shift(inverted, tmp_path / "run_inverted", "--config", str(config))
    assert shifted["status"] == "scored" and shifted["scored_images"] == len(keys)
    assert shifted["alarm"], shifted["parts"]
    parts = shifted["parts"]
    assert isinstance(parts, dict) and parts["features"] >= 1.0  # the features see a negative
    # the review table's worst image of the inverted export scores above every held-out one
    top_inv = shifted["most_out_of_distribution"][0]["ood_score"]  # type: ignore[index]
    top_same = same["most_out_of_distribution"][0]["ood_score"]  # type: ignore[index]
    assert top_inv > top_same
