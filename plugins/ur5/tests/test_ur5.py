from importlib import metadata

import numpy as np
import pytest

import openpi_embodiment_ur5
import openpi_embodiment_ur5.plugin
from openpi_core.errors import InputError
from openpi_core.plugins import PluginManager
from openpi_core.transforms import compose
from openpi_embodiment_ur5 import UR5Embodiment

FAMILIES = ("pi0", "pi05", "pi0_fast")


def observation(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "base_rgb": rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
        "wrist_rgb": rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
        "joints": np.array([0.5, -1.0, 1.5, -2.0, 2.5, -3.0]),
        "gripper": np.array([0.8]),
    }


def run_inputs(data, family="pi0"):
    return compose(UR5Embodiment().transforms(family).inputs)(data)


@pytest.mark.parametrize(("family", "right_mask"), [("pi0", False), ("pi05", False), ("pi0_fast", True)])
def test_cameras_state_and_masks(family, right_mask):
    data = observation()
    out = run_inputs(data, family)
    assert set(out["image"]) == {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"}
    np.testing.assert_array_equal(out["image"]["base_0_rgb"], data["base_rgb"])
    np.testing.assert_array_equal(out["image"]["left_wrist_0_rgb"], data["wrist_rgb"])
    assert not out["image"]["right_wrist_0_rgb"].any()
    assert out["image"]["right_wrist_0_rgb"].shape == (6, 8, 3)
    assert out["image_mask"] == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": right_mask}
    assert all(isinstance(mask, np.bool_) for mask in out["image_mask"].values())
    assert out["state"].dtype == np.float32
    np.testing.assert_allclose(out["state"], [0.5, -1.0, 1.5, -2.0, 2.5, -3.0, 0.8], rtol=1e-6)


def test_scalar_gripper_is_accepted():
    out = run_inputs({**observation(), "gripper": 0.3})
    assert out["state"].shape == (7,)
    assert out["state"][6] == pytest.approx(0.3)


def test_training_actions_pass_through_as_float32():
    actions = np.linspace(-1.0, 1.0, 20 * 7).reshape(20, 7)
    out = run_inputs({**observation(), "actions": actions})
    assert out["actions"].dtype == np.float32
    np.testing.assert_allclose(out["actions"], actions, rtol=1e-6)


def test_float_chw_images_become_uint8_hwc():
    chw = np.zeros((3, 6, 8), np.float64)
    chw[1] = 1.0
    out = run_inputs({**observation(), "base_rgb": chw})["image"]["base_0_rgb"]
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [0, 255, 0])


@pytest.mark.parametrize("family", FAMILIES)
def test_outputs_keep_the_first_seven_dims(family):
    model_actions = np.arange(10 * 32, dtype=np.float32).reshape(10, 32)
    out = compose(UR5Embodiment().transforms(family).outputs)({"actions": model_actions})
    assert out["actions"].shape == (10, 7)
    np.testing.assert_array_equal(out["actions"], model_actions[:, :7])


def test_prompt_and_default_prompt():
    assert run_inputs({**observation(), "prompt": "stack the blocks"})["prompt"] == "stack the blocks"
    assert "prompt" not in run_inputs(observation())
    inputs = compose(UR5Embodiment(default_prompt="wipe the table").transforms("pi0").inputs)
    assert inputs(observation())["prompt"] == "wipe the table"


def test_missing_wrist_camera_is_an_input_error_naming_it():
    data = observation()
    del data["wrist_rgb"]
    with pytest.raises(InputError, match="wrist_rgb"):
        run_inputs(data)


def test_wrong_camera_name_is_an_input_error_naming_the_expected_key():
    data = observation()
    data["top_rgb"] = data.pop("base_rgb")
    with pytest.raises(InputError, match="base_rgb"):
        run_inputs(data)


@pytest.mark.parametrize(
    ("key", "value"), [("joints", np.zeros(7)), ("gripper", np.zeros(2)), ("actions", np.zeros((4, 6)))]
)
def test_wrong_dims_are_input_errors_naming_the_key(key, value):
    with pytest.raises(InputError, match=key):
        run_inputs({**observation(), key: value})


def test_nan_in_state_is_an_input_error():
    joints = np.zeros(6)
    joints[0] = np.nan
    with pytest.raises(InputError, match=r"joints.*finite"):
        run_inputs({**observation(), "joints": joints})


def test_unknown_model_family_is_an_input_error():
    with pytest.raises(InputError, match="pi1"):
        UR5Embodiment().transforms("pi1")


def test_registration_through_the_plugin_manager():
    manager = PluginManager(entry_points=False, plugins=[("ur5", openpi_embodiment_ur5.plugin)])
    embodiment = manager.registry("embodiment").get("ur5")
    assert isinstance(embodiment, UR5Embodiment)
    assert embodiment.action_dim == 7


def test_entry_point_is_declared():
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="openpi")}
    assert entry_points.get("ur5") == "openpi_embodiment_ur5.plugin"


def test_delta_action_mask_covers_six_joints():
    assert UR5Embodiment.delta_action_mask == (True,) * 6 + (False,)


@pytest.mark.parametrize("family", FAMILIES)
def test_example_is_valid_deterministic_and_transformable(family):
    embodiment = UR5Embodiment()
    example = embodiment.example(21)
    embodiment.validate(example)
    np.testing.assert_array_equal(example["joints"], embodiment.example(21)["joints"])
    assert not np.array_equal(example["joints"], embodiment.example(22)["joints"])
    out = compose(embodiment.transforms(family).inputs)(example)
    assert out["state"].shape == (7,)
    assert out["image"]["left_wrist_0_rgb"].shape == (224, 224, 3)


def test_repack_maps_a_lerobot_sample():
    rng = np.random.default_rng(23)
    sample = {
        "image": rng.uniform(0.0, 1.0, (3, 6, 8)).astype(np.float32),
        "wrist_image": rng.uniform(0.0, 1.0, (3, 6, 8)).astype(np.float32),
        "joints": rng.uniform(-1.0, 1.0, 6).astype(np.float32),
        "gripper": np.array([0.1], np.float32),
        "actions": rng.uniform(-1.0, 1.0, (50, 7)).astype(np.float32),
        "prompt": "pick up the block",
        "episode_index": np.int64(2),
    }
    embodiment = UR5Embodiment()
    repacked = compose(embodiment.repack_transforms().inputs)(sample)
    assert set(repacked) == {"base_rgb", "wrist_rgb", "joints", "gripper", "actions", "prompt"}
    np.testing.assert_array_equal(repacked["base_rgb"], sample["image"])
    np.testing.assert_array_equal(repacked["wrist_rgb"], sample["wrist_image"])
    out = compose(embodiment.transforms("pi0").inputs)(repacked)
    assert out["actions"].shape == (50, 7)
    np.testing.assert_allclose(out["state"], np.concatenate([sample["joints"], sample["gripper"]]))
