"""compute_norm_stats over a dataset equals numpy over the same frames and flags flat dims."""

import logging

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from openpi_core.data import LeRobotDataset, compute_norm_stats
from openpi_core.data.norm_stats import near_zero_warnings, sample_indices
from openpi_core.data.testing import make_synthetic_dataset
from openpi_core.transforms import RepackTransform

REPACK = RepackTransform({"state": "observation.state", "actions": "action"})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_synthetic_dataset(
        tmp_path_factory.mktemp("stats") / "ds",
        episodes=3,
        frames_per_episode=[9, 4, 7],
        cameras=("top",),
        image_size=(8, 8),
        state_dim=5,
        action_dim=3,
        fps=10,
    )
    return LeRobotDataset(root, action_horizon=4, decode_cameras=False)


def test_matches_numpy_over_the_same_frames(dataset):
    done = []
    stats = compute_norm_stats(dataset, [REPACK], progress=done.append)
    assert sum(done) == len(dataset) == 20
    states = np.stack([dataset[i]["observation.state"] for i in range(len(dataset))]).astype(np.float64)
    actions = np.concatenate([dataset[i]["action"] for i in range(len(dataset))]).astype(np.float64)
    assert actions.shape == (80, 3)  # every step of every chunk, padding included, as in openpi
    for key, values in (("state", states), ("actions", actions)):
        np.testing.assert_allclose(stats[key].mean, values.mean(0), atol=1e-9)
        np.testing.assert_allclose(stats[key].std, values.std(0), atol=1e-9)
        # Histogram quantiles of so few values: between the two smallest (largest) values, give or take a bin.
        ordered = np.sort(values, axis=0)
        bin_width = (ordered[-1] - ordered[0]) / 5000
        assert np.all((ordered[0] <= stats[key].q01) & (stats[key].q01 <= ordered[1] + bin_width))
        assert np.all((ordered[-2] - bin_width <= stats[key].q99) & (stats[key].q99 <= ordered[-1]))


def test_max_frames_uses_a_seeded_subset(dataset):
    assert sample_indices(20, None).tolist() == list(range(20))
    subset = sample_indices(20, 6, seed=1)
    assert len(set(subset.tolist())) == 6 and subset.tolist() == sorted(subset.tolist())
    done = []
    stats = compute_norm_stats(dataset, [REPACK], max_frames=6, seed=1, progress=done.append)
    states = np.stack([dataset[int(i)]["observation.state"] for i in subset]).astype(np.float64)
    assert sum(done) == 6
    np.testing.assert_allclose(stats["state"].mean, states.mean(0), atol=1e-9)


def test_near_zero_dims_are_reported_by_key_and_dim(dataset, caplog):
    def freeze_dim_2(sample):
        state = np.array(sample["state"])
        state[2] = 0.25
        return {**sample, "state": state}

    with caplog.at_level(logging.WARNING):
        stats = compute_norm_stats(dataset, [REPACK, freeze_dim_2])
    messages = near_zero_warnings(stats)
    assert list(messages) == ["state"]
    assert "'state'" in messages["state"] and "dim 2 (std 0" in messages["state"]
    assert "dim 2" in caplog.text and "'actions'" not in caplog.text
