"""The working-set budget of one image (issue 18 item 1): reduce early, bounded grid, refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import measure

from chexnet_dicom.config import IngestConfig, IngestLimits
from chexnet_dicom.dicom.budget import SETTING, area_reduce, grid_shape
from chexnet_dicom.dicom.check import check_file
from chexnet_dicom.dicom.load import load_image
from chexnet_dicom.dicom.pixels import GridMap
from chexnet_dicom.dicom.read import read_header
from chexnet_dicom.errors import InputTooLargeError
from chexnet_dicom.outputs.regions import heatmap_region
from chexnet_dicom.testing.bombs import write_bomb


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32])
@pytest.mark.parametrize(("shape", "f"), [((37, 50), 4), ((64, 64), 8), ((5, 3), 2), ((9, 9), 1)])
def test_area_reduce_is_the_rounded_block_mean(dtype: type, shape: tuple[int, int], f: int) -> None:
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    arr: np.ndarray = rng.integers(max(info.min, -30000), min(info.max, 30000), size=shape).astype(dtype)
    out = area_reduce(arr, f)
    rows, cols = -(-shape[0] // f), -(-shape[1] // f)
    assert out.shape == (rows, cols) and out.dtype == arr.dtype
    for r in range(rows):
        for c in range(cols):
            block = arr[r * f : (r + 1) * f, c * f : (c + 1) * f].astype(np.float64)
            assert int(out[r, c]) == int(np.floor(block.mean() + 0.5))


@pytest.mark.parametrize("syntax", ["rle", "jpegls", "native"])
def test_over_budget_refused_before_decode_naming_the_setting(tmp_path: Path, syntax: str) -> None:
    path = write_bomb(tmp_path / f"{syntax}.dcm", syntax, 512)
    limits = IngestLimits(max_working_bytes=256 * 1024)  # a 512x512 16-bit decode needs 1 MiB
    with pytest.raises(InputTooLargeError) as err:
        read_header(path, limits=limits)
    assert err.value.reason == "TOO_LARGE" and SETTING in str(err.value)
    result = check_file(path, config=IngestConfig(limits=limits))
    assert (result.status, result.reason) == ("error", "TOO_LARGE") and SETTING in result.message
    assert check_file(path).status == "accepted"  # the default budget holds it


def test_rle_bomb_at_the_default_caps_refused_cheaply(tmp_path: Path) -> None:
    """The attack of issue 18: 16384x16384 16-bit RLE zeros, 8.4 MB on the wire."""
    path = write_bomb(tmp_path / "bomb.dcm", "rle", 16384)
    assert path.stat().st_size < 9_000_000
    result = check_file(path)
    assert (result.status, result.reason) == ("error", "TOO_LARGE") and SETTING in result.message


@pytest.mark.parametrize("syntax", ["rle", "j2k", "native"])
def test_large_source_lands_on_the_bounded_grid(tmp_path: Path, syntax: str) -> None:
    path = write_bomb(tmp_path / f"{syntax}.dcm", syntax, 600)
    cfg = IngestConfig(limits=IngestLimits(max_grid_side=128))
    image = load_image(path, config=cfg)  # full resolution asked: still reduced onto the grid
    disp = image.display
    assert disp.source_shape == (600, 600)
    assert max(disp.image.shape) <= 128
    assert disp.grid_shape == grid_shape(600, 600, 128)[0] == (120, 120)
    assert disp.grid_scale == (5.0, 5.0)
    mapped = disp.to_source_grid(np.ones(disp.image.shape, np.float32))
    assert isinstance(mapped, GridMap) and mapped.shape == (120, 120) and mapped.source_shape == (600, 600)
    kept = np.clip(mapped, 0.0, 1.0).astype(np.float32)  # what ImageResult.heatmap does
    assert getattr(kept, "source_shape", None) == (600, 600)


def _old_region(h: np.ndarray, threshold: float) -> np.ndarray | None:
    """The region as outputs/sr.py computed it before (contours on the whole map)."""
    mask = h >= threshold
    if not mask.any():
        return None
    labels = measure.label(mask, connectivity=2)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = labels == int(np.argmax(sizes))
    contours = measure.find_contours(np.pad(largest, 1).astype(np.float32), 0.5)
    outline = measure.approximate_polygon(
        max(contours, key=len) - 1.0, tolerance=max(0.5, 0.002 * max(h.shape))
    )
    coords = np.clip(
        np.stack([outline[:, 1] + 0.5, outline[:, 0] + 0.5], axis=1), 0.0, [h.shape[1], h.shape[0]]
    )
    if len(coords) < 4 or not np.array_equal(coords[0], coords[-1]):
        coords = np.vstack([coords, coords[:1]])
    return coords.astype(np.float32)


def _blobs(seed: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    out = np.zeros(shape, np.float32)
    for _ in range(3):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        s = rng.uniform(5, shape[0] / 4)
        out = np.maximum(out, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)) * rng.uniform(0.4, 1))
    return out


@pytest.mark.parametrize("seed", range(24))
def test_region_on_the_bounded_mask_is_the_same_polygon(seed: int) -> None:
    """Experiment E of issue 17: contours on the bounding box give the same polygon."""
    h = _blobs(seed, (181, 157))
    old, new = _old_region(h, 0.5), heatmap_region(h, 0.5)
    assert (old is None) == (new is None)
    if old is not None and new is not None:
        np.testing.assert_array_equal(new, old)


def test_region_of_a_grid_map_scaled_to_source_coordinates() -> None:
    h = _blobs(5, (100, 80))
    on_grid = heatmap_region(GridMap.wrap(h, (400, 320)), 0.5)
    plain = heatmap_region(h, 0.5)
    assert on_grid is not None and plain is not None
    np.testing.assert_allclose(on_grid, plain * 4.0, rtol=1e-6)
    explicit = heatmap_region(h, 0.5, source_shape=(400, 320))
    assert explicit is not None
    np.testing.assert_array_equal(explicit, on_grid)
