"""engine.order_stats against np.percentile: the colour prior's seven rows, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from engine.colour_prior import OPPONENT, PERCENTILES
from engine.order_stats import lattice_codes, percentiles_by_codes, rows_percentiles


def _rows(rgb: np.ndarray) -> np.ndarray:
    """The seven rows exactly as engine.colour_prior.region_features builds them."""
    rows = np.empty((7, rgb.shape[1]))
    rows[:3] = rgb
    np.dot(OPPONENT.T, rgb, out=rows[3:6])
    np.subtract(rgb.max(0), rgb.min(0), out=rows[6])
    return rows


def _levels(rng, n, low=0, high=256):
    """Colours as the prior sees them: a uint8 resize, float32 times 1/255, then float64 (3, N)."""
    image = rng.integers(low, high, (n, 3), dtype=np.uint8)
    return np.ascontiguousarray((image.astype(np.float32) * np.float32(1 / 255)).astype(np.float64).T)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 997, 40_000])
def test_rows_percentiles_are_np_percentile_bit_for_bit(n):
    rng = np.random.default_rng(n)
    for low, high in ((0, 256), (100, 110), (0, 2), (250, 256)):  # wide, narrow (many ties), saturated
        rgb = _levels(rng, n, low, high)
        rows = _rows(rgb)
        codes = lattice_codes(rgb)
        assert codes is not None
        got = rows_percentiles(rows, codes, PERCENTILES)
        assert np.array_equal(got, np.percentile(rows, PERCENTILES, axis=1)), (n, low, high)


def test_any_q_and_a_single_code():
    values = np.full(50, 0.25)
    q = np.linspace(0, 100, 41)
    assert np.array_equal(percentiles_by_codes(values, np.full(50, 3), 8, q), np.percentile(values, q))
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 1000, 5000)
    values = codes / 999.0
    assert np.array_equal(percentiles_by_codes(values, codes, 1000, q), np.percentile(values, q))


def test_off_the_lattice_is_refused_and_bad_shapes_raise():
    rgb = np.random.default_rng(2).random((3, 100))  # a float picture: not uint8 levels
    assert lattice_codes(rgb) is None
    with pytest.raises(ValueError):
        percentiles_by_codes(np.zeros(3), np.zeros(4, int), 2, [50])
    with pytest.raises(ValueError):
        percentiles_by_codes(np.zeros(0), np.zeros(0, int), 2, [50])
