"""The fast stored-integer block mean gives area_reduce's values bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from chexnet_dicom.dicom.budget import area_reduce
from chexnet_dicom.dicom.resize import block_mean


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [
        (np.uint8, 0, 256),
        (np.uint16, 0, 4096),
        (np.uint16, 0, 65536),
        (np.int16, -32768, 32768),
        (np.int32, -(2**20), 2**20),
        (np.uint32, 0, 2**31),  # sums could overflow 32 bits: area_reduce itself
    ],
)
@pytest.mark.parametrize("shape", [(513, 517), (64, 64), (7, 5), (3, 9), (1, 1)])
def test_block_mean_equals_area_reduce(dtype: type, low: int, high: int, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape) + high)
    arr = rng.integers(low, high, size=shape, dtype=np.int64).astype(dtype)
    for factor in (1, 2, 3, 4, 8, 16):
        got, want = block_mean(arr, factor), area_reduce(arr, factor)
        assert got.dtype == arr.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=f"factor {factor}")


def test_block_mean_strips_and_views() -> None:
    """Strips of output rows and a non-contiguous input give the same values."""
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 4096, size=(2050, 4100), dtype=np.uint16)[:, ::2]  # a strided view
    np.testing.assert_array_equal(block_mean(arr, 4), area_reduce(arr, 4))


def test_block_mean_refuses_floats() -> None:
    with pytest.raises(TypeError):
        block_mean(np.zeros((4, 4), dtype=np.float32), 2)
