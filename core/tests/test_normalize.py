import json

import numpy as np
import pytest

from openpi_core.errors import InputError, NormStatsError
from openpi_core.transforms import Normalize, NormStats, Unnormalize, load_norm_stats, save_norm_stats

STATS = {
    "state": NormStats(mean=[1.0, 2.0], std=[2.0, 4.0], q01=[0.0, -1.0], q99=[2.0, 1.0]),
    "actions": NormStats(mean=[0.0, 10.0], std=[1.0, 5.0], q01=[-2.0, 0.0], q99=[2.0, 20.0]),
}


def test_z_score_normalization():
    out = Normalize(STATS)({"state": np.array([3.0, 10.0], dtype=np.float32)})

    # (3 - 1) / (2 + 1e-6) and (10 - 2) / (4 + 1e-6)
    np.testing.assert_allclose(out["state"], [0.9999995, 1.9999995], rtol=1e-7)
    assert out["state"].dtype == np.float32


def test_quantile_normalization_maps_q01_q99_to_minus_one_one():
    state = np.array([[0.0, -1.0], [1.0, 0.0], [2.0, 1.0], [4.0, 3.0]])

    out = Normalize(STATS, use_quantiles=True)({"state": state})

    # (x - q01) / (q99 - q01 + 1e-6) * 2 - 1 with width 2 on both dims: 2 * 2 / 2.000001 - 1 = 0.999999.
    expected = [[-1.0, -1.0], [-0.0000005, -0.0000005], [0.999999, 0.999999], [2.999997, 2.999997]]
    np.testing.assert_allclose(out["state"], expected, atol=1e-6)


def test_normalize_batched_actions():
    actions = np.array([[[1.0, 15.0], [-1.0, 5.0]]])  # [B=1, H=2, A=2]

    out = Normalize(STATS)({"actions": actions})

    np.testing.assert_allclose(out["actions"], [[[1.0, 1.0], [-1.0, -1.0]]], rtol=1e-5)


def test_narrower_stats_leave_the_extra_dims_alone():
    state = np.array([3.0, 10.0, 7.0, -7.0])

    out = Normalize(STATS)({"state": state})
    back = Unnormalize(STATS, strict=False)({"state": state})

    assert out["state"][2:].tolist() == [7.0, -7.0]
    assert back["state"][2:].tolist() == [7.0, -7.0]
    np.testing.assert_allclose(back["state"][:2], [3.0 * 2.0 + 1.0, 10.0 * 4.0 + 2.0], rtol=1e-5)


def test_wider_stats_use_their_leading_dims():
    out = Normalize(STATS, use_quantiles=True)({"actions": np.array([[2.0]])})

    np.testing.assert_allclose(out["actions"], [[1.0]], atol=1e-6)


@pytest.mark.parametrize("use_quantiles", [False, True])
def test_normalize_then_unnormalize_round_trips(use_quantiles):
    rng = np.random.default_rng(0)
    data = {"state": rng.normal(size=(4, 2)), "actions": rng.normal(size=(10, 2)), "prompt": "hi"}

    normalized = Normalize(STATS, use_quantiles=use_quantiles)(data)
    restored = Unnormalize(STATS, use_quantiles=use_quantiles)(normalized)

    assert not np.allclose(normalized["state"], data["state"])
    np.testing.assert_allclose(restored["state"], data["state"], atol=1e-12)
    np.testing.assert_allclose(restored["actions"], data["actions"], atol=1e-12)
    assert restored["prompt"] == "hi"


def test_normalize_applies_to_nested_key_paths_and_does_not_mutate():
    state = np.array([3.0, 2.0])
    data = {"observation": {"state": state}}

    out = Normalize({"observation/state": STATS["state"]})(data)

    np.testing.assert_allclose(out["observation"]["state"], [1.0, 0.0], rtol=1e-5)
    assert state.tolist() == [3.0, 2.0]


def test_flat_keys_with_separators_stay_flat():
    data = {"observation/state": np.array([3.0, 2.0]), "observation": {"other": 1}}

    out = Normalize({"observation/state": STATS["state"]})(data)

    assert set(out) == {"observation/state", "observation"}
    np.testing.assert_allclose(out["observation/state"], [1.0, 0.0], rtol=1e-5)


def test_integer_data_becomes_float32():
    out = Normalize(STATS)({"state": np.array([1, 2])})

    assert out["state"].dtype == np.float32
    assert out["state"].tolist() == [0.0, 0.0]


def test_missing_key_is_ignored_unless_strict():
    data = {"state": np.zeros(2)}

    assert set(Normalize(STATS)(data)) == {"state"}
    with pytest.raises(InputError, match=r"\['actions'\]"):
        Normalize(STATS, strict=True)(data)
    with pytest.raises(InputError, match=r"\['actions'\]"):
        Unnormalize(STATS)(data)
    assert set(Unnormalize(STATS, strict=False)(data)) == {"state"}


def test_none_stats_are_the_identity():
    data = {"state": np.zeros(2)}

    assert Normalize(None)(data) is data
    assert Unnormalize(None)(data) is data


def test_quantile_mode_needs_quantiles():
    with pytest.raises(NormStatsError, match=r"'state'.*q01"):
        Normalize({"state": NormStats(mean=[0.0], std=[1.0])}, use_quantiles=True)


def test_zero_std_on_some_dims_is_allowed():
    stats = {"state": NormStats(mean=[0.0, 0.0], std=[0.0, 1.0])}

    out = Normalize(stats)({"state": np.array([1e-6, 1.0])})

    np.testing.assert_allclose(out["state"], [1.0, 1.0], rtol=1e-5)


def write(tmp_path, document, name="norm_stats.json"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


OPENPI_FILE = """{
  "norm_stats": {
    "state": {
      "mean": [0.5, -1.25],
      "std": [2.0, 0.125],
      "q01": [-3.0, -1.5],
      "q99": [4.0, -1.0]
    },
    "actions": {
      "mean": [1.0],
      "std": [3.0],
      "q01": null,
      "q99": null
    }
  }
}"""


def test_load_openpi_file_from_directory(tmp_path):
    write(tmp_path, OPENPI_FILE)

    stats = load_norm_stats(tmp_path)

    assert set(stats) == {"state", "actions"}
    assert stats["state"].mean.tolist() == [0.5, -1.25]
    assert stats["state"].std.tolist() == [2.0, 0.125]
    assert stats["state"].q01.tolist() == [-3.0, -1.5]
    assert stats["state"].q99.tolist() == [4.0, -1.0]
    assert stats["actions"].q01 is None
    assert stats["actions"].q99 is None


def test_load_file_path_and_missing_quantile_fields(tmp_path):
    path = write(tmp_path, {"norm_stats": {"state": {"mean": [1], "std": [2]}}}, name="stats.json")

    stats = load_norm_stats(path)

    assert stats["state"] == NormStats(mean=[1.0], std=[2.0])


def test_save_writes_openpi_format(tmp_path):
    path = save_norm_stats(STATS, tmp_path / "assets" / "aloha")

    assert path == tmp_path / "assets" / "aloha" / "norm_stats.json"
    document = json.loads(path.read_text())
    assert document == {
        "norm_stats": {
            "state": {"mean": [1.0, 2.0], "std": [2.0, 4.0], "q01": [0.0, -1.0], "q99": [2.0, 1.0]},
            "actions": {"mean": [0.0, 10.0], "std": [1.0, 5.0], "q01": [-2.0, 0.0], "q99": [2.0, 20.0]},
        }
    }


def test_save_then_load_round_trips(tmp_path):
    stats = {"state": NormStats(mean=[0.1, 1 / 3], std=[1e-7, 2.5]), "actions": STATS["actions"]}

    loaded = load_norm_stats(save_norm_stats(stats, tmp_path / "stats.json"))

    assert loaded == stats


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ("{not json", "not valid JSON"),
        ({"stats": {}}, "'norm_stats'"),
        ({"norm_stats": {"state": {"std": [1.0]}}}, "'state'.*'mean'"),
        ({"norm_stats": {"state": {"mean": [1.0]}}}, "'state'.*'std'"),
        ({"norm_stats": {"state": [1.0]}}, "'state'"),
        ({"norm_stats": {"state": {"mean": ["a"], "std": [1.0]}}}, "'state'.*'mean'.*list of numbers"),
        ({"norm_stats": {"state": {"mean": [1.0, 2.0], "std": [1.0]}}}, "'state'.*'std' has length 1"),
        ('{"norm_stats": {"state": {"mean": [NaN], "std": [1.0]}}}', "'state'.*'mean'.*finite"),
        ('{"norm_stats": {"a": {"mean": [0.0], "std": [Infinity]}}}', "'a'.*'std'.*finite"),
        ({"norm_stats": {"state": {"mean": [0.0, 0.0], "std": [0.0, 0.0]}}}, "'state'.*'std'.*every dimension"),
        ({"norm_stats": {"state": {"mean": [0.0, 0.0], "std": [1.0, -1.0]}}}, "'state'.*'std'.*>= 0"),
        (
            {"norm_stats": {"state": {"mean": [0.0], "std": [1.0], "q01": [1.0], "q99": [0.0]}}},
            "'state'.*'q99 - q01'.*>= 0",
        ),
        (
            {"norm_stats": {"state": {"mean": [0.0], "std": [1.0], "q01": [1.0], "q99": [1.0]}}},
            "'state'.*'q99 - q01'.*every dimension",
        ),
        ({"norm_stats": {"state": {"mean": [0.0], "std": [1.0], "q01": [1.0]}}}, "'state'.*'q99' is missing"),
    ],
)
def test_bad_files_raise_norm_stats_error(tmp_path, document, match):
    write(tmp_path, document)

    with pytest.raises(NormStatsError, match=match):
        load_norm_stats(tmp_path)


def test_missing_file_raises_norm_stats_error(tmp_path):
    with pytest.raises(NormStatsError, match="cannot read"):
        load_norm_stats(tmp_path)


def test_save_refuses_invalid_stats(tmp_path):
    with pytest.raises(NormStatsError, match=r"'state'.*'std'"):
        save_norm_stats({"state": NormStats(mean=[0.0], std=[0.0])}, tmp_path)
    assert not (tmp_path / "norm_stats.json").exists()


@pytest.mark.parametrize(
    ("value", "dtype"), [(3e38, np.float32), (1e300, np.float64), (-5e4, np.float32)], ids=["3e38", "1e300", "-5e4"]
)
def test_a_state_far_outside_its_stats_is_refused_naming_the_key_and_dim(value, dtype):
    state = np.array([0.5, value, 0.0], dtype)
    with pytest.raises(InputError, match=r"data\['state'\] dim 1 is .*stds from the mean.*check its units"):
        Normalize({"state": NormStats(mean=[0.0, 1.0, 0.0], std=[1.0, 2.0, 1.0])})({"state": state})


def test_the_deviation_limit_is_1e4_stds_or_quantile_widths():
    z = Normalize({"state": NormStats(mean=[0.0], std=[2.0])})
    assert np.isfinite(z({"state": np.array([1.9e4])})["state"]).all()  # 9500 stds: kept
    with pytest.raises(InputError, match="dim 0"):
        z({"state": np.array([2.1e4])})  # 10500 stds
    quantile = Normalize({"actions": NormStats(mean=[0.0], std=[1.0], q01=[-1.0], q99=[1.0])}, use_quantiles=True)
    assert np.isfinite(quantile({"actions": np.array([[1.9e4]])})["actions"]).all()  # 9500 widths from the middle
    with pytest.raises(InputError, match=r"data\['actions'\] dim 0 .*q99 - q01 widths"):
        quantile({"actions": np.array([[2.1e4]])})


def test_constant_training_dims_are_not_held_to_the_deviation_limit_but_must_stay_finite():
    normalize = Normalize({"state": NormStats(mean=[0.0, 0.0], std=[0.0, 1.0])})
    out = normalize({"state": np.array([0.5, 0.0])})  # 5e5 "stds" on a constant dim: noise, kept
    np.testing.assert_allclose(out["state"], [0.5 / 1e-6, 0.0], rtol=1e-5)
    with pytest.raises(InputError, match="dim 0"):
        normalize({"state": np.array([1e36, 0.0])})  # 1e42 overflows float32


def test_max_deviation_none_turns_the_check_off():
    out = Normalize({"state": NormStats(mean=[0.0], std=[1.0])}, max_deviation=None)({"state": np.array([1e6])})
    np.testing.assert_allclose(out["state"], [1e6], rtol=1e-5)
