"""Order statistics from histograms: `np.percentile` (linear) of values that come in integer levels, in O(N).

The colour prior's features (engine.colour_prior.region_features) take nine percentiles of seven rows per
region: R, G, B, the opponent channels and the chroma (max - min) of colours that were uint8 levels
(the composite at network size is a uint8 resize, divided by 255). Each row is then a function of a small
integer code that never decreases as the value grows: the level itself, (299 r + 587 g + 114 b) // 1000 for
the luma (256 bins of 1000 of its exact steps), r - g for red-green, r + g - 2 b for yellow-blue, max - min
for the chroma. So the rank of any percentile is found from a histogram of the codes (a bincount and a
cumulative sum, no sort), and only the samples whose codes hold the wanted ranks are sorted, to read their
exact values: the result is `np.percentile`'s bit for bit, not an approximation of it (two codes never
interleave: the values of different codes are at least 1/255000 apart, float rounding 1e-8).

engine.colour_prior.region_features uses it for every region; `lattice_codes` says None for values that
are not on the uint8 lattice (float pictures), where the caller keeps `np.percentile`.
"""

from __future__ import annotations

import numpy as np

# The seven rows' codes from integer r, g, b in 0..255: (offset-free code, number of codes).
CODE_SIZES = (256, 256, 256, 256, 511, 1021, 256)
LATTICE_TOLERANCE = 1e-3  # |x * 255 - round(x * 255)| above this anywhere: not uint8 levels


def percentile_positions(n: int, q) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower rank, upper rank, weight of the upper) of `np.percentile`'s linear method for n samples, q in
    percent: the same arithmetic as NumPy's (q / 100 * (n - 1), floor, the fraction)."""
    virtual = np.true_divide(np.asarray(q, np.float64), 100) * (n - 1)
    lower = np.floor(virtual)
    gamma = virtual - lower
    lower = lower.astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    return lower, upper, gamma


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """NumPy's own interpolation for percentiles (numpy.lib._function_base_impl._lerp): exact at both ends."""
    diff = b - a
    out = a + diff * t
    return np.where(t >= 0.5, b - diff * (1 - t), out)


def percentiles_by_codes(values: np.ndarray, codes: np.ndarray, n_codes: int, q) -> np.ndarray:
    """`np.percentile(values, q)` where the integer `codes` (N,) in [0, n_codes) never decrease as `values`
    (N,) grow: every value of a code is below every value of a higher code (many values may share a code).

    The codes' histogram gives the code of every rank wanted; the samples of those codes alone are sorted to
    read the exact values at those ranks.

    Raises:
        ValueError: no values, or values and codes of different lengths.
    """
    values, codes = np.asarray(values), np.asarray(codes)
    if values.shape != codes.shape or values.ndim != 1 or values.size == 0:
        raise ValueError(f"expected values and codes of one equal length N >= 1, got {values.shape} and {codes.shape}")
    counts = np.bincount(codes, minlength=n_codes)
    ends = np.cumsum(counts)  # ends[c]: samples with a code <= c
    lower, upper, gamma = percentile_positions(values.size, q)
    ranks = np.concatenate([lower, upper])
    wanted = np.searchsorted(ends, ranks, side="right")  # the code holding each rank
    chosen = np.zeros(n_codes, bool)
    chosen[wanted] = True
    subset = np.sort(values[chosen[codes]])  # the chosen codes' samples, in order (codes do not interleave)
    # A rank's place in the subset: its place within its code, plus the chosen samples of lower codes.
    chosen_counts = np.where(chosen, counts, 0)
    before_in_subset = np.cumsum(chosen_counts) - chosen_counts
    starts = ends - counts
    picked = subset[ranks - starts[wanted] + before_in_subset[wanted]]
    return _lerp(picked[:lower.size], picked[lower.size:], gamma)


def lattice_codes(rgb: np.ndarray) -> np.ndarray | None:
    """(7, N) int codes of the rows of engine.colour_prior.region_features (R, G, B, luma, red-green,
    yellow-blue, chroma) for colours `rgb` (3, N) in [0, 1] that are uint8 levels / 255; None when they are not.
    Code sizes are CODE_SIZES."""
    scaled = np.asarray(rgb, np.float64) * 255.0
    levels = np.rint(scaled)
    if levels.size and (np.abs(scaled - levels).max() > LATTICE_TOLERANCE or levels.min() < 0 or levels.max() > 255):
        return None
    r, g, b = levels.astype(np.int64)
    codes = np.empty((7, r.size), np.int64)
    codes[:3] = r, g, b
    codes[3] = (299 * r + 587 * g + 114 * b) // 1000
    codes[4] = r - g + 255
    codes[5] = r + g - 2 * b + 510
    codes[6] = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return codes


def rows_percentiles(rows: np.ndarray, codes: np.ndarray, q) -> np.ndarray:
    """`np.percentile(rows, q, axis=1)` (len(q), 7) for the seven rows of region_features and their
    `lattice_codes`."""
    return np.stack([percentiles_by_codes(rows[k], codes[k], CODE_SIZES[k], q) for k in range(len(CODE_SIZES))],
                    axis=1)
