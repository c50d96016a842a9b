from importlib import metadata

import numpy as np
import pytest

import openpi_embodiment_libero
import openpi_embodiment_libero.plugin
from openpi_core.errors import InputError
from openpi_core.plugins import PluginManager
from openpi_core.transforms import compose
from openpi_embodiment_libero import LiberoEmbodiment

FAMILIES = ("pi0", "pi05", "pi0_fast")
BASE = "observation/image"
WRIST = "observation/wrist_image"
STATE = "observation/state"


def observation(seed=0):
    rng = np.random.default_rng(seed)
    return {
        BASE: rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
        WRIST: rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
        STATE: np.array([0.1, 0.2, 0.3, 1.0, -1.0, 0.5, 0.04, -0.04]),
        "prompt": "put the bowl on the plate",
    }


def run_inputs(data, family="pi0"):
    return compose(LiberoEmbodiment().transforms(family).inputs)(data)


@pytest.mark.parametrize(("family", "right_mask"), [("pi0", False), ("pi05", False), ("pi0_fast", True)])
def test_cameras_state_and_masks(family, right_mask):
    data = observation()
    out = run_inputs(data, family)
    assert set(out["image"]) == {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"}
    np.testing.assert_array_equal(out["image"]["base_0_rgb"], data[BASE])
    np.testing.assert_array_equal(out["image"]["left_wrist_0_rgb"], data[WRIST])
    assert out["image"]["right_wrist_0_rgb"].shape == (6, 8, 3)
    assert not out["image"]["right_wrist_0_rgb"].any()
    # Only π0-FAST was trained with the black right-wrist slot unmasked.
    assert out["image_mask"] == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": right_mask}
    assert all(isinstance(mask, np.bool_) for mask in out["image_mask"].values())
    assert out["state"].dtype == np.float32
    np.testing.assert_allclose(out["state"], data[STATE], rtol=1e-6)
    assert out["prompt"] == "put the bowl on the plate"
    assert "actions" not in out


def test_training_actions_pass_through_as_float32():
    actions = np.linspace(-1.0, 1.0, 50 * 7).reshape(50, 7)
    out = run_inputs({**observation(), "actions": actions})
    assert out["actions"].dtype == np.float32
    assert out["actions"].shape == (50, 7)
    np.testing.assert_allclose(out["actions"], actions, rtol=1e-6)


def test_chw_images_become_hwc():
    chw = np.random.default_rng(1).integers(0, 256, (3, 6, 8), dtype=np.uint8)
    out = run_inputs({**observation(), WRIST: chw})
    np.testing.assert_array_equal(out["image"]["left_wrist_0_rgb"], chw.transpose(1, 2, 0))


@pytest.mark.parametrize("family", FAMILIES)
def test_outputs_keep_the_first_seven_dims(family):
    model_actions = np.arange(10 * 32, dtype=np.float32).reshape(10, 32)
    out = compose(LiberoEmbodiment().transforms(family).outputs)({"actions": model_actions})
    assert out["actions"].shape == (10, 7)
    np.testing.assert_array_equal(out["actions"], model_actions[:, :7])


def test_default_prompt_only_when_none_given():
    inputs = compose(LiberoEmbodiment(default_prompt="do the task").transforms("pi0").inputs)
    without = observation()
    del without["prompt"]
    assert inputs(without)["prompt"] == "do the task"
    assert inputs(observation())["prompt"] == "put the bowl on the plate"


def test_missing_wrist_camera_is_an_input_error_naming_it():
    data = observation()
    del data[WRIST]
    with pytest.raises(InputError, match=WRIST):
        run_inputs(data)


def test_wrong_camera_name_is_an_input_error_naming_the_expected_key():
    data = observation()
    data["observation/agentview_image"] = data.pop(BASE)
    with pytest.raises(InputError, match=BASE):
        run_inputs(data)


@pytest.mark.parametrize(("key", "value"), [(STATE, np.zeros(7)), ("actions", np.zeros((4, 8)))])
def test_wrong_dims_are_input_errors_naming_the_key(key, value):
    with pytest.raises(InputError, match=key):
        run_inputs({**observation(), key: value})


def test_nan_in_state_is_an_input_error():
    state = np.zeros(8)
    state[7] = np.nan
    with pytest.raises(InputError, match=f"{STATE}.*finite"):
        run_inputs({**observation(), STATE: state})


def test_unknown_model_family_is_an_input_error():
    with pytest.raises(InputError, match="pi1"):
        LiberoEmbodiment().transforms("pi1")


def test_registration_through_the_plugin_manager():
    manager = PluginManager(entry_points=False, plugins=[("libero", openpi_embodiment_libero.plugin)])
    embodiment = manager.registry("embodiment").get("libero")
    assert isinstance(embodiment, LiberoEmbodiment)
    assert embodiment.action_dim == 7


def test_entry_point_is_declared():
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="openpi")}
    assert entry_points.get("libero") == "openpi_embodiment_libero.plugin"


def test_delta_action_mask_covers_six_eef_dims():
    assert LiberoEmbodiment.delta_action_mask == (True,) * 6 + (False,)


@pytest.mark.parametrize("family", FAMILIES)
def test_example_is_valid_deterministic_and_transformable(family):
    embodiment = LiberoEmbodiment()
    example = embodiment.example(11)
    embodiment.validate(example)
    np.testing.assert_array_equal(example[STATE], embodiment.example(11)[STATE])
    assert not np.array_equal(example[STATE], embodiment.example(12)[STATE])
    out = compose(embodiment.transforms(family).inputs)(example)
    assert out["state"].shape == (8,)
    assert out["image"]["base_0_rgb"].shape == (224, 224, 3)


def test_repack_maps_a_lerobot_sample():
    rng = np.random.default_rng(13)
    sample = {
        "image": rng.uniform(0.0, 1.0, (3, 6, 8)).astype(np.float32),
        "wrist_image": rng.uniform(0.0, 1.0, (3, 6, 8)).astype(np.float32),
        "state": rng.uniform(-1.0, 1.0, 8).astype(np.float32),
        "actions": rng.uniform(-1.0, 1.0, (50, 7)).astype(np.float32),
        "prompt": "open the drawer",
        "frame_index": np.int64(0),
    }
    embodiment = LiberoEmbodiment()
    repacked = compose(embodiment.repack_transforms().inputs)(sample)
    assert set(repacked) == {BASE, WRIST, STATE, "actions", "prompt"}
    np.testing.assert_array_equal(repacked[BASE], sample["image"])
    np.testing.assert_array_equal(repacked[WRIST], sample["wrist_image"])
    np.testing.assert_array_equal(repacked[STATE], sample["state"])
    out = compose(embodiment.transforms("pi0").inputs)(repacked)
    assert out["actions"].shape == (50, 7)
    assert out["image"]["base_0_rgb"].dtype == np.uint8
    assert out["prompt"] == "open the drawer"
