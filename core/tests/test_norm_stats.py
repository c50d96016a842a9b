import numpy as np
import pytest

from openpi_core.errors import InputError, NormStatsError
from openpi_core.norm_stats import RunningStats, near_zero_dims
from openpi_core.transforms import NormStats


def test_small_known_data_one_vector_at_a_time():
    data = np.arange(12, dtype=np.float64).reshape(4, 3)  # columns [0,3,6,9], [1,4,7,10], [2,5,8,11]
    stats = RunningStats()
    for row in data:
        stats.update(row[None])

    result = stats.get_statistics()

    assert stats.count == 4
    np.testing.assert_allclose(result.mean, [4.5, 5.5, 6.5], rtol=1e-12)
    # Deviations from the mean are ±1.5 and ±4.5: variance (2 * 2.25 + 2 * 20.25) / 4 = 11.25.
    np.testing.assert_allclose(result.std, [np.sqrt(11.25)] * 3, rtol=1e-12)


def test_leading_dims_are_batch_dims():
    stats = RunningStats()
    stats.update(np.array([[[1.0, 10.0], [3.0, 10.0]], [[5.0, 10.0], [7.0, 10.0]]]))  # [2, 2, D=2]

    result = stats.get_statistics()

    assert result.mean.tolist() == [4.0, 10.0]
    np.testing.assert_allclose(result.std, [np.sqrt(5.0), 0.0], atol=1e-12)


def test_constant_dimension_has_zero_width():
    stats = RunningStats()
    stats.update(np.full((10, 1), 3.0))
    stats.update(np.full((10, 1), 3.0))

    result = stats.get_statistics()

    assert result.std.tolist() == [0.0]
    assert result.q01.tolist() == [3.0]
    assert result.q99.tolist() == [3.0]


def test_quantiles_survive_range_growth():
    stats = RunningStats()
    stats.update(np.arange(100, dtype=np.float64)[:, None])  # range [0, 99]
    stats.update(np.arange(100, 200, dtype=np.float64)[:, None])  # widens to [0, 199]

    result = stats.get_statistics()

    # The empirical CDF of 0..199 reaches 1% (2 values) at 1 and 99% (198 values) at 197;
    # each estimate may sit anywhere inside that value's histogram bin (width 0.04).
    assert result.q01[0] == pytest.approx(1.0, abs=0.1)
    assert result.q99[0] == pytest.approx(197.0, abs=0.1)


def _batches(data, size):
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("sort", [False, True], ids=["shuffled", "sorted"])
def test_large_sample_matches_numpy(sort):
    rng = np.random.default_rng(42)
    n = 100_000
    data = np.stack(
        [
            rng.normal(3.0, 2.0, n),
            rng.uniform(-5.0, 1.0, n),
            rng.exponential(1.0, n),
            1e4 + rng.normal(0.0, 1e-2, n),  # a large offset that E[x²] - E[x]² would ruin
        ],
        axis=1,
    )
    if sort:
        data = np.sort(data, axis=0)  # the range grows with nearly every batch
    stats = RunningStats()
    for batch in _batches(data, 1000):
        stats.update(batch)

    result = stats.get_statistics()

    np.testing.assert_allclose(result.mean, data.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(result.std, data.std(axis=0), rtol=1e-8)
    bin_width = (data.max(axis=0) - data.min(axis=0)) / 5000
    assert np.all(np.abs(result.q01 - np.quantile(data, 0.01, axis=0)) < 3 * bin_width)
    assert np.all(np.abs(result.q99 - np.quantile(data, 0.99, axis=0)) < 3 * bin_width)
    # And the known distributions: N(3, 2) has q01 = 3 - 2 * 2.3263; U(-5, 1) has q99 = 0.94.
    assert result.q01[0] == pytest.approx(3.0 - 2.0 * 2.3263, abs=0.05)
    assert result.q99[1] == pytest.approx(0.94, abs=0.01)


def test_fewer_than_two_vectors_is_an_error():
    stats = RunningStats()
    with pytest.raises(NormStatsError, match="at least 2"):
        stats.get_statistics()
    stats.update(np.ones((1, 3)))
    with pytest.raises(NormStatsError, match="got 1"):
        stats.get_statistics()


def test_update_rejects_bad_batches():
    stats = RunningStats()
    stats.update(np.ones((2, 3)))
    with pytest.raises(InputError, match="length 3, got 4"):
        stats.update(np.ones((2, 4)))
    with pytest.raises(InputError, match="non-finite"):
        stats.update(np.array([[1.0, np.nan, 1.0]]))
    with pytest.raises(InputError, match="scalar"):
        stats.update(np.float64(1.0))


def test_statistics_pass_norm_stats_validation():
    stats = RunningStats()
    stats.update(np.random.default_rng(0).normal(size=(100, 2)))

    stats.get_statistics().check("state")


def test_near_zero_dims():
    stats = NormStats(mean=[0.0] * 4, std=[1.0, 1e-9, 1.0, 1.0], q01=[0.0, 0.0, 0.0, -1.0], q99=[1.0, 1.0, 1e-9, 1.0])

    assert near_zero_dims(stats, 1e-6) == [1, 2]
    assert near_zero_dims(NormStats(mean=[0.0, 0.0], std=[0.5, 2.0]), 1.0) == [0]
