"""engine.inputs: the masks the engine accepts, as float32 in [0, 1], with no copy where none is needed."""

from __future__ import annotations

import numpy as np
import pytest

from engine.inputs import mask_float


def test_a_float32_mask_in_range_is_used_as_it_is():
    mask = np.random.default_rng(0).random((90, 160), dtype=np.float32)
    mask[0, 0], mask[1, 1] = 0.0, 1.0
    assert mask_float(mask, (90, 160)) is mask
    as_channel = mask[..., None]  # H x W x 1 is accepted as a view of the same pixels
    assert np.shares_memory(mask_float(as_channel, (90, 160)), mask)


@pytest.mark.parametrize("bad, expected", [(np.nan, 0.0), (np.inf, 1.0), (-np.inf, 0.0), (1.5, 1.0), (-0.25, 0.0)])
def test_out_of_range_values_are_clipped_and_nan_is_zero_on_a_copy(bad, expected):
    mask = np.full((40, 60), 0.5, np.float32)
    mask[7, 9] = bad
    out = mask_float(mask, (40, 60))
    assert out is not mask and out.dtype == np.float32
    assert out[7, 9] == expected and np.all(out[mask == 0.5] == 0.5)
    assert np.isnan(mask[7, 9]) if np.isnan(bad) else mask[7, 9] == bad  # the caller's mask untouched


def test_other_dtypes_and_strided_views_come_back_as_float32_in_range():
    rng = np.random.default_rng(1)
    wide = rng.random((80, 120)) * 1.2  # float64, partly above 1
    out = mask_float(wide, (80, 120))
    assert out.dtype == np.float32 and out.max() == 1.0
    np.testing.assert_allclose(out, np.clip(wide, 0, 1).astype(np.float32))
    strided = rng.random((80, 240), dtype=np.float32)[:, ::2]
    strided[3, 4] = np.nan
    out = mask_float(strided, (80, 120))
    assert out[3, 4] == 0.0 and out.flags.c_contiguous
    assert mask_float(np.full((4, 4), 255, np.uint8), (4, 4)).max() == pytest.approx(1.0)
    assert mask_float(np.ones((4, 4), bool), (4, 4)).dtype == np.float32


def test_the_live_settings_have_one_rule_for_both_frame_paths():
    from engine.inputs import MAX_SMOOTHING, smoothing_seconds, strength_share

    assert smoothing_seconds("0.25") == 0.25 and smoothing_seconds(MAX_SMOOTHING) == MAX_SMOOTHING
    assert strength_share(1) == 1.0
    with pytest.raises(ValueError, match=r"smoothing must be a time constant in seconds in \[0, 2\], got 2.5"):
        smoothing_seconds(2.5)
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\], got -0.1"):
        strength_share(-0.1)
