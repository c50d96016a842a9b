from importlib import metadata

import numpy as np
import pytest

import openpi_embodiment_droid
import openpi_embodiment_droid.plugin
from openpi_core.errors import InputError
from openpi_core.plugins import PluginManager
from openpi_core.transforms import compose
from openpi_embodiment_droid import DroidEmbodiment

FAMILIES = ("pi0", "pi05", "pi0_fast")
BASE = "observation/exterior_image_1_left"
WRIST = "observation/wrist_image_left"
JOINTS = "observation/joint_position"
GRIPPER = "observation/gripper_position"


def observation(seed=0):
    rng = np.random.default_rng(seed)
    return {
        BASE: rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
        WRIST: rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
        JOINTS: np.array([0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7]),
        GRIPPER: np.array([0.25]),
    }


def run_inputs(data, family="pi05"):
    return compose(DroidEmbodiment().transforms(family).inputs)(data)


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_pi0_slots_and_masks(family):
    data = observation()
    out = run_inputs(data, family)
    assert set(out["image"]) == {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"}
    np.testing.assert_array_equal(out["image"]["base_0_rgb"], data[BASE])
    np.testing.assert_array_equal(out["image"]["left_wrist_0_rgb"], data[WRIST])
    assert out["image"]["right_wrist_0_rgb"].shape == (6, 8, 3)
    assert not out["image"]["right_wrist_0_rgb"].any()
    assert out["image_mask"] == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}
    assert all(isinstance(mask, np.bool_) for mask in out["image_mask"].values())


def test_pi0_fast_uses_its_own_slots_and_masks_nothing():
    data = observation()
    out = run_inputs(data, "pi0_fast")
    assert set(out["image"]) == {"base_0_rgb", "base_1_rgb", "wrist_0_rgb"}
    np.testing.assert_array_equal(out["image"]["base_0_rgb"], data[BASE])
    np.testing.assert_array_equal(out["image"]["wrist_0_rgb"], data[WRIST])
    assert not out["image"]["base_1_rgb"].any()
    # π0-FAST DROID was trained with the black padding image unmasked.
    assert out["image_mask"] == {"base_0_rgb": True, "base_1_rgb": True, "wrist_0_rgb": True}


def test_state_is_joints_then_gripper():
    out = run_inputs(observation())
    assert out["state"].dtype == np.float32
    np.testing.assert_allclose(out["state"], [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, 0.25], atol=1e-7)
    assert "actions" not in out


def test_scalar_gripper_is_accepted():
    data = {**observation(), GRIPPER: 0.75}
    out = run_inputs(data)
    assert out["state"].shape == (8,)
    assert out["state"][7] == pytest.approx(0.75)


def test_training_actions_pass_through_as_float32():
    actions = np.arange(10 * 8, dtype=np.float64).reshape(10, 8) / 10
    out = run_inputs({**observation(), "actions": actions})
    assert out["actions"].dtype == np.float32
    np.testing.assert_allclose(out["actions"], actions, rtol=1e-6)


def test_chw_float_images_become_uint8_hwc():
    chw = np.zeros((3, 6, 8), np.float32)
    chw[2] = 1.0
    out = run_inputs({**observation(), BASE: chw})["image"]["base_0_rgb"]
    assert out.shape == (6, 8, 3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[3, 4], [0, 0, 255])


@pytest.mark.parametrize("family", FAMILIES)
def test_outputs_keep_the_first_eight_dims(family):
    model_actions = np.arange(10 * 32, dtype=np.float32).reshape(10, 32)
    out = compose(DroidEmbodiment().transforms(family).outputs)({"actions": model_actions})
    assert out["actions"].shape == (10, 8)
    np.testing.assert_array_equal(out["actions"], model_actions[:, :8])


def test_prompt_and_default_prompt():
    assert run_inputs({**observation(), "prompt": b"pick up the cup"})["prompt"] == "pick up the cup"
    assert "prompt" not in run_inputs(observation())
    inputs = compose(DroidEmbodiment(default_prompt="clean the table").transforms("pi05").inputs)
    assert inputs(observation())["prompt"] == "clean the table"


def test_missing_wrist_camera_is_an_input_error_naming_it():
    data = observation()
    del data[WRIST]
    with pytest.raises(InputError, match=WRIST):
        run_inputs(data)


def test_wrong_camera_name_is_an_input_error_naming_the_expected_key():
    data = observation()
    data["observation/exterior_image_1"] = data.pop(BASE)
    with pytest.raises(InputError, match=BASE):
        run_inputs(data)


@pytest.mark.parametrize(
    ("key", "value"), [(JOINTS, np.zeros(6)), (GRIPPER, np.zeros(2)), ("actions", np.zeros((4, 7)))]
)
def test_wrong_dims_are_input_errors_naming_the_key(key, value):
    with pytest.raises(InputError, match=key):
        run_inputs({**observation(), key: value})


def test_nan_in_state_is_an_input_error():
    joints = np.zeros(7)
    joints[2] = np.nan
    with pytest.raises(InputError, match=f"{JOINTS}.*finite"):
        run_inputs({**observation(), JOINTS: joints})


def test_unknown_model_family_is_an_input_error():
    with pytest.raises(InputError, match="pi1"):
        DroidEmbodiment().transforms("pi1")


def test_registration_through_the_plugin_manager():
    manager = PluginManager(entry_points=False, plugins=[("droid", openpi_embodiment_droid.plugin)])
    embodiment = manager.registry("embodiment").get("droid")
    assert isinstance(embodiment, DroidEmbodiment)
    assert embodiment.action_dim == 8


def test_entry_point_is_declared():
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="openpi")}
    assert entry_points.get("droid") == "openpi_embodiment_droid.plugin"


def test_delta_action_mask_covers_the_seven_joints():
    assert DroidEmbodiment.delta_action_mask == (True,) * 7 + (False,)


@pytest.mark.parametrize("family", FAMILIES)
def test_example_is_valid_deterministic_and_transformable(family):
    embodiment = DroidEmbodiment()
    example = embodiment.example(7)
    embodiment.validate(example)
    np.testing.assert_array_equal(example[JOINTS], embodiment.example(7)[JOINTS])
    assert not np.array_equal(example[JOINTS], embodiment.example(8)[JOINTS])
    out = compose(embodiment.transforms(family).inputs)(example)
    assert out["state"].shape == (8,)
    assert len(out["image"]) == 3


def test_repack_maps_a_lerobot_sample():
    rng = np.random.default_rng(9)
    sample = {
        "exterior_image_1_left": rng.uniform(0.0, 1.0, (3, 6, 8)).astype(np.float32),
        "exterior_image_2_left": rng.uniform(0.0, 1.0, (3, 6, 8)).astype(np.float32),
        "wrist_image_left": rng.uniform(0.0, 1.0, (3, 6, 8)).astype(np.float32),
        "joint_position": rng.uniform(-1.0, 1.0, 7).astype(np.float32),
        "gripper_position": np.array([0.5], np.float32),
        "actions": rng.uniform(-1.0, 1.0, (16, 8)).astype(np.float32),
        "prompt": "put the marker in the cup",
        "timestamp": np.float32(1.0),
    }
    embodiment = DroidEmbodiment()
    repacked = compose(embodiment.repack_transforms().inputs)(sample)
    assert set(repacked) == {
        BASE,
        "observation/exterior_image_2_left",
        WRIST,
        JOINTS,
        GRIPPER,
        "actions",
        "prompt",
    }
    np.testing.assert_array_equal(repacked[BASE], sample["exterior_image_1_left"])
    np.testing.assert_array_equal(repacked[WRIST], sample["wrist_image_left"])
    np.testing.assert_array_equal(repacked[JOINTS], sample["joint_position"])
    np.testing.assert_array_equal(repacked["actions"], sample["actions"])
    out = compose(embodiment.transforms("pi05").inputs)(repacked)
    assert out["actions"].shape == (16, 8)
    assert out["prompt"] == "put the marker in the cup"
    assert out["image"]["base_0_rgb"].shape == (6, 8, 3)
