"""heatmap_region without ``nan_to_num``: a NaN pixel counts as 0, as it did."""

from __future__ import annotations

import numpy as np
import pytest

from chexnet_dicom.outputs.regions import heatmap_region
from tests.helpers.outputs import blob


@pytest.mark.parametrize("threshold", [0.5, 0.0, -0.1])
def test_a_nan_pixel_counts_as_zero(threshold: float) -> None:
    h = np.maximum(blob(60, 50, 20, 15, 6), 0.7 * blob(60, 50, 45, 35, 4))
    h[::7, ::5] = np.nan
    h[30:, 25:] = np.nan  # a NaN block beside the second blob
    got = heatmap_region(h, threshold)
    want = heatmap_region(np.nan_to_num(h, nan=0.0), threshold)
    assert got is not None and want is not None
    np.testing.assert_array_equal(got, want)
