"""Streaming computation of normalization statistics over a dataset.

:class:`RunningStats` sees the data one batch at a time and never keeps it. Mean
and std are exact up to float64 rounding (batches are merged with Chan et al.'s
pairwise update, which avoids the cancellation of ``E[x²] - E[x]²``). Quantiles come
from per-dimension histograms over ``[min, max]``, as in openpi: when a batch widens
the range, the counts collected so far are moved into the new, wider bins. Unlike
openpi, a quantile is interpolated inside its bin rather than reported as the bin's
lower edge, and only the dimensions whose range grew are re-binned.
"""

import numpy as np

from openpi_core.errors import InputError, NormStatsError
from openpi_core.transforms.normalize import NormStats

DEFAULT_NUM_BINS = 5000


class RunningStats:
    """Accumulates mean, std, q01 and q99 of vectors ``[..., D]`` fed in batches."""

    def __init__(self, num_bins: int = DEFAULT_NUM_BINS) -> None:
        if num_bins < 1:
            raise InputError(f"num_bins should be >= 1, got {num_bins}")
        self._num_bins = num_bins
        self._count = 0
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)  # sum of squared deviations from the mean
        self._low = np.zeros(0)  # histogram range per dim: the min and max seen so far
        self._high = np.zeros(0)
        self._hist = np.zeros((0, num_bins))  # [D, num_bins] counts, float64 for weighted bincount

    @property
    def count(self) -> int:
        """Number of vectors seen so far."""
        return self._count

    def update(self, batch: np.ndarray) -> None:
        """Add a batch ``[..., D]``: every axis but the last indexes a vector.

        Raises:
            InputError: a scalar, non-finite values, or a D that differs from earlier batches.
        """
        batch = np.asarray(batch, dtype=np.float64)
        if batch.ndim == 0:
            raise InputError("RunningStats.update expects an array [..., D], got a scalar")
        batch = batch.reshape(-1, batch.shape[-1])
        n, dims = batch.shape
        if self._count and dims != self._mean.size:
            raise InputError(f"RunningStats.update expects vectors of length {self._mean.size}, got {dims}")
        if n == 0:
            return
        if not np.all(np.isfinite(batch)):
            row, dim = np.argwhere(~np.isfinite(batch))[0]
            raise InputError(f"RunningStats.update got a non-finite value {batch[row, dim]} at dim {dim}")

        batch_mean = batch.mean(axis=0)
        batch_m2 = ((batch - batch_mean) ** 2).sum(axis=0)
        low, high = batch.min(axis=0), batch.max(axis=0)
        if self._count == 0:
            self._mean, self._m2 = batch_mean, batch_m2
            self._low, self._high = low, high
            self._hist = np.zeros((dims, self._num_bins))
        else:
            total = self._count + n
            delta = batch_mean - self._mean
            self._mean = self._mean + delta * (n / total)
            self._m2 = self._m2 + batch_m2 + delta**2 * (self._count * n / total)
            self._widen(np.minimum(self._low, low), np.maximum(self._high, high))
        self._count += n
        self._hist += self._bin_counts(batch)

    def get_statistics(self) -> NormStats:
        """Statistics of everything seen so far; ``std`` is the population std (ddof 0).

        Raises:
            NormStatsError: fewer than 2 vectors were seen.
        """
        if self._count < 2:
            raise NormStatsError(f"norm stats need at least 2 vectors, got {self._count}")
        std = np.sqrt(np.maximum(self._m2 / self._count, 0.0))
        return NormStats(mean=self._mean.copy(), std=std, q01=self._quantile(0.01), q99=self._quantile(0.99))

    def _bin_width(self) -> np.ndarray:
        return (self._high - self._low) / self._num_bins

    def _bin_index(self, values: np.ndarray, low: np.ndarray, width: np.ndarray) -> np.ndarray:
        """Bin of each value ``[N, D]``; the range's top edge belongs to the last bin."""
        # A constant dimension has width 0; its values all equal ``low`` and go to bin 0.
        safe_width = np.where(width > 0, width, 1.0)
        index = np.floor((values - low) / safe_width).astype(np.int64)
        return np.clip(index, 0, self._num_bins - 1)

    def _bin_counts(self, batch: np.ndarray) -> np.ndarray:
        """Histogram ``[D, num_bins]`` of ``batch`` ``[N, D]`` in the current bins."""
        dims = batch.shape[1]
        index = self._bin_index(batch, self._low, self._bin_width())
        flat = index + np.arange(dims) * self._num_bins
        return np.bincount(flat.ravel(), minlength=dims * self._num_bins).reshape(dims, self._num_bins)

    def _widen(self, low: np.ndarray, high: np.ndarray) -> None:
        """Move to the range ``[low, high]``, re-binning the dims whose range grew."""
        grown = np.flatnonzero((low < self._low) | (high > self._high))
        if grown.size == 0:
            return
        # Each old bin's count moves, whole, to the new bin that holds the old bin's centre.
        old_width = self._bin_width()[grown]
        centers = self._low[grown, None] + (np.arange(self._num_bins) + 0.5) * old_width[:, None]
        self._low, self._high = low, high
        index = self._bin_index(centers.T, self._low[grown], self._bin_width()[grown]).T
        flat = index + np.arange(grown.size)[:, None] * self._num_bins
        moved = np.bincount(flat.ravel(), weights=self._hist[grown].ravel(), minlength=grown.size * self._num_bins)
        self._hist[grown] = moved.reshape(grown.size, self._num_bins)

    def _quantile(self, q: float) -> np.ndarray:
        """Value ``[D]`` below which a fraction ``q`` of the data lies, interpolated in its bin."""
        target = q * self._count
        cumulative = np.cumsum(self._hist, axis=1)
        # First bin whose cumulative count reaches the target; it holds at least one count.
        index = np.minimum((cumulative < target).sum(axis=1), self._num_bins - 1)
        rows = np.arange(self._hist.shape[0])
        in_bin = self._hist[rows, index]
        before = cumulative[rows, index] - in_bin
        fraction = np.clip((target - before) / np.where(in_bin > 0, in_bin, 1.0), 0.0, 1.0)
        return self._low + (index + fraction) * self._bin_width()


def near_zero_dims(stats: NormStats, tol: float) -> list[int]:
    """Dims whose ``std`` or, when present, ``q99 - q01`` is below ``tol``.

    Normalizing such a dim divides by almost nothing (only the 1e-6 guard), so tiny
    noise becomes huge; callers warn about these dims.
    """
    small = stats.std < tol
    if stats.q01 is not None and stats.q99 is not None:
        small |= (stats.q99 - stats.q01) < tol
    return np.flatnonzero(small).tolist()
