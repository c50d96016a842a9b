from importlib import metadata

import numpy as np
import pytest

import openpi_embodiment_aloha
import openpi_embodiment_aloha.plugin
from openpi_core.errors import InputError
from openpi_core.plugins import PluginManager
from openpi_core.transforms import compose
from openpi_embodiment_aloha import AlohaEmbodiment
from openpi_embodiment_aloha.aloha import LEROBOT_REAL_REPACK

FAMILIES = ("pi0", "pi05", "pi0_fast")

# Gripper state conversion at standard ALOHA's endpoints, worked out from the constants:
# open (1.0): finger at 0.058 m; sin = (0.022^2 + 0.058^2 - 0.036^2) / (2 * 0.022 * 0.058) = 0.002552 / 0.002552 = 1,
# so the angle is pi/2, normalized over [0.5476, 1.6296].
STATE_GRIPPER_OPEN = (np.pi / 2 - 0.5476) / (1.6296 - 0.5476)
# closed (0.0): finger at 0.01844 m; sin = (0.000484 + 0.0003400336 - 0.001296) / 0.00081136.
STATE_GRIPPER_CLOSED = (np.arcsin(-0.0004719664 / 0.00081136) - 0.5476) / (1.6296 - 0.5476)


def observation(state, **cameras):
    images = cameras or {"cam_high": np.zeros((3, 4, 6), np.uint8)}
    return {"images": images, "state": np.asarray(state, dtype=np.float64)}


def run_inputs(data, *, adapt_to_pi=True, family="pi0"):
    return compose(AlohaEmbodiment(adapt_to_pi=adapt_to_pi).transforms(family).inputs)(data)


def run_outputs(actions, *, adapt_to_pi=True, family="pi0"):
    return compose(AlohaEmbodiment(adapt_to_pi=adapt_to_pi).transforms(family).outputs)({"actions": actions})


def test_endpoint_constants_are_what_the_formulas_give():
    np.testing.assert_allclose(STATE_GRIPPER_OPEN, 0.9456528, atol=1e-6)
    np.testing.assert_allclose(STATE_GRIPPER_CLOSED, -1.0798655, atol=1e-6)


def test_state_joints_flip_and_grippers_become_pi_angles():
    state = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6, 0.0]
    out = run_inputs(observation(state))["state"]
    # Shoulder and elbow (1, 2 and 8, 9) change sign; the grippers (6, 13) are converted.
    expected = [0.1, -0.2, -0.3, 0.4, 0.5, 0.6, STATE_GRIPPER_OPEN, -0.1, 0.2, 0.3, -0.4, -0.5, -0.6]
    expected.append(STATE_GRIPPER_CLOSED)
    assert out.dtype == np.float32
    assert out.shape == (14,)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_state_unchanged_without_adapt_to_pi():
    state = np.linspace(-1.0, 1.0, 14)
    out = run_inputs(observation(state), adapt_to_pi=False)["state"]
    np.testing.assert_array_equal(out, state.astype(np.float32))


def test_training_actions_are_mapped_into_pi_space():
    actions = np.zeros((2, 14), np.float32)
    actions[0] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0]
    data = {**observation(np.zeros(14)), "actions": actions}
    out = run_inputs(data)["actions"]
    assert out.dtype == np.float32
    assert out.shape == (2, 14)
    # gripper 1.0 -> -0.6213 + 1.0 * (1.4910 + 0.6213) - 0.5476 = 0.9434; gripper 0.0 -> -0.6213 - 0.5476 = -1.1689.
    expected_first = [0.1, -0.2, -0.3, 0.4, 0.5, 0.6, 0.9434, 0.1, -0.2, -0.3, 0.4, 0.5, 0.6, -1.1689]
    np.testing.assert_allclose(out[0], expected_first, atol=1e-6)
    np.testing.assert_allclose(out[1, [6, 13]], [-1.1689, -1.1689], atol=1e-6)


def test_output_actions_are_cropped_flipped_and_mapped_to_aloha_grippers():
    model_actions = np.zeros((3, 32), np.float32)
    model_actions[:, 14:] = 7.0  # padding, must be dropped
    model_actions[0, :14] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9434, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, -1.1689]
    model_actions[1, 6] = 0.0
    out = run_outputs(model_actions)["actions"]
    assert out.shape == (3, 14)
    assert out.dtype == np.float32
    # Grippers: (x + 0.5476 + 0.6213) / 2.1123, so 0.9434 -> 1 (open) and -1.1689 -> 0 (closed).
    expected_first = [0.1, -0.2, -0.3, 0.4, 0.5, 0.6, 1.0, 0.1, -0.2, -0.3, 0.4, 0.5, 0.6, 0.0]
    np.testing.assert_allclose(out[0], expected_first, atol=1e-6)
    np.testing.assert_allclose(out[1, 6], 1.1689 / 2.1123, atol=1e-6)


def test_output_actions_only_cropped_without_adapt_to_pi():
    model_actions = np.arange(2 * 32, dtype=np.float32).reshape(2, 32)
    out = run_outputs(model_actions, adapt_to_pi=False)["actions"]
    np.testing.assert_array_equal(out, model_actions[:, :14])


@pytest.mark.parametrize("adapt_to_pi", [True, False])
def test_actions_round_trip_through_inputs_and_outputs(adapt_to_pi):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.0, 1.0, (10, 14)).astype(np.float32)
    actions[:, [6, 13]] = rng.uniform(0.0, 1.0, (10, 2))
    model_ready = run_inputs({**observation(np.zeros(14)), "actions": actions}, adapt_to_pi=adapt_to_pi)
    padded = np.pad(model_ready["actions"], ((0, 0), (0, 18)), constant_values=3.0)
    back = run_outputs(padded, adapt_to_pi=adapt_to_pi)["actions"]
    if adapt_to_pi:
        assert not np.allclose(model_ready["actions"], actions)
        np.testing.assert_allclose(back, actions, atol=1e-5)
    else:
        np.testing.assert_array_equal(back, actions)


@pytest.mark.parametrize("family", FAMILIES)
def test_cameras_land_in_the_model_slots(family):
    rng = np.random.default_rng(1)
    high, low, left, right = (rng.integers(0, 256, (3, 8, 10), dtype=np.uint8) for _ in range(4))
    data = observation(np.zeros(14), cam_high=high, cam_low=low, cam_left_wrist=left, cam_right_wrist=right)
    out = run_inputs(data, family=family)
    assert set(out["image"]) == {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"}
    np.testing.assert_array_equal(out["image"]["base_0_rgb"], high.transpose(1, 2, 0))
    np.testing.assert_array_equal(out["image"]["left_wrist_0_rgb"], left.transpose(1, 2, 0))
    np.testing.assert_array_equal(out["image"]["right_wrist_0_rgb"], right.transpose(1, 2, 0))
    assert out["image"]["base_0_rgb"].shape == (8, 10, 3)
    assert out["image_mask"] == {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": True}
    assert all(isinstance(mask, np.bool_) for mask in out["image_mask"].values())
    assert "actions" not in out
    assert "prompt" not in out


def test_missing_wrist_cameras_are_black_and_masked():
    high = np.full((3, 8, 10), 200, np.uint8)
    left = np.full((3, 8, 10), 50, np.uint8)
    out = run_inputs(observation(np.zeros(14), cam_high=high, cam_left_wrist=left))
    assert out["image_mask"]["left_wrist_0_rgb"]
    assert not out["image_mask"]["right_wrist_0_rgb"]
    right = out["image"]["right_wrist_0_rgb"]
    assert right.shape == (8, 10, 3)
    assert right.dtype == np.uint8
    assert not right.any()


def test_float_and_hwc_images_become_uint8_hwc():
    chw = np.zeros((3, 2, 4), np.float32)
    chw[0] = 1.0
    chw[1] = 0.2
    out = run_inputs(observation(np.zeros(14), cam_high=chw))["image"]["base_0_rgb"]
    assert out.dtype == np.uint8
    assert out.shape == (2, 4, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 51, 0])
    hwc = np.random.default_rng(2).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(run_inputs(observation(np.zeros(14), cam_high=hwc))["image"]["base_0_rgb"], hwc)


def test_inputs_do_not_mutate_the_observation():
    state = np.linspace(0.0, 1.0, 14)
    actions = np.ones((2, 14))
    data = {**observation(state), "actions": actions}
    run_inputs(data)
    np.testing.assert_array_equal(data["state"], np.linspace(0.0, 1.0, 14))
    np.testing.assert_array_equal(data["actions"], np.ones((2, 14)))


def test_prompt_passes_through_and_default_is_injected():
    given = run_inputs({**observation(np.zeros(14)), "prompt": b"fold the towel"})
    assert given["prompt"] == "fold the towel"
    assert (
        run_inputs({**observation(np.zeros(14)), "prompt": np.asarray("fold the towel")})["prompt"] == "fold the towel"
    )
    with pytest.raises(InputError, match="prompt"):
        run_inputs({**observation(np.zeros(14)), "prompt": 3})
    embodiment = AlohaEmbodiment(default_prompt="Transfer cube")
    inputs = compose(embodiment.transforms("pi0").inputs)
    assert inputs(observation(np.zeros(14)))["prompt"] == "Transfer cube"
    assert inputs({**observation(np.zeros(14)), "prompt": "uncap the pen"})["prompt"] == "uncap the pen"


def test_unknown_camera_is_an_input_error_naming_it():
    data = observation(np.zeros(14), cam_high=np.zeros((3, 4, 4), np.uint8), cam_top=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(InputError, match="cam_top"):
        run_inputs(data)


def test_missing_base_camera_is_an_input_error_naming_it():
    data = observation(np.zeros(14), cam_left_wrist=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(InputError, match="images/cam_high"):
        run_inputs(data)


@pytest.mark.parametrize(
    ("state", "actions"),
    [(np.zeros(7), None), (np.zeros(14), np.zeros((4, 7))), (np.zeros((2, 14)), None)],
)
def test_wrong_dims_are_input_errors_naming_the_key(state, actions):
    data = observation(state)
    key = "state"
    if actions is not None:
        data["actions"] = actions
        key = "actions"
    with pytest.raises(InputError, match=key):
        run_inputs(data)


def test_nan_in_state_is_an_input_error():
    state = np.zeros(14)
    state[3] = np.nan
    with pytest.raises(InputError, match=r"'state'.*finite"):
        run_inputs(observation(state))


def test_too_narrow_model_output_is_an_input_error():
    with pytest.raises(InputError, match="actions"):
        run_outputs(np.zeros((4, 8), np.float32))


def test_unknown_model_family_is_an_input_error():
    with pytest.raises(InputError, match="pi1"):
        AlohaEmbodiment().transforms("pi1")


def test_registration_through_the_plugin_manager():
    manager = PluginManager(entry_points=False, plugins=[("aloha", openpi_embodiment_aloha.plugin)])
    embodiment = manager.registry("embodiment").get("aloha")
    assert isinstance(embodiment, AlohaEmbodiment)
    assert embodiment.action_dim == 14
    assert embodiment.adapt_to_pi
    assert openpi_embodiment_aloha.AlohaEmbodiment is AlohaEmbodiment


def test_entry_point_is_declared():
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="openpi")}
    assert entry_points.get("aloha") == "openpi_embodiment_aloha.plugin"


def test_delta_action_mask_covers_joints_not_grippers():
    mask = AlohaEmbodiment.delta_action_mask
    assert len(mask) == 14
    assert [i for i, on in enumerate(mask) if not on] == [6, 13]


@pytest.mark.parametrize("family", FAMILIES)
def test_example_is_valid_deterministic_and_transformable(family):
    embodiment = AlohaEmbodiment()
    example = embodiment.example(3)
    embodiment.validate(example)
    np.testing.assert_array_equal(example["state"], embodiment.example(3)["state"])
    assert not np.array_equal(example["state"], embodiment.example(4)["state"])
    out = compose(embodiment.transforms(family).inputs)(example)
    assert out["state"].shape == (14,)
    assert out["image"]["base_0_rgb"].shape == (224, 224, 3)
    assert isinstance(out["prompt"], str)


def test_repack_maps_a_sim_lerobot_sample():
    rng = np.random.default_rng(5)
    sample = {
        "observation.images.top": rng.uniform(0.0, 1.0, (3, 8, 10)).astype(np.float32),
        "observation.state": rng.uniform(-1.0, 1.0, 14).astype(np.float32),
        "action": rng.uniform(-1.0, 1.0, (50, 14)).astype(np.float32),
        "timestamp": np.float32(0.5),
        "frame_index": np.int64(3),
    }
    embodiment = AlohaEmbodiment()
    repacked = compose(embodiment.repack_transforms().inputs)(sample)
    assert set(repacked) == {"images", "state", "actions"}
    assert set(repacked["images"]) == {"cam_high"}
    np.testing.assert_array_equal(repacked["images"]["cam_high"], sample["observation.images.top"])
    np.testing.assert_array_equal(repacked["state"], sample["observation.state"])
    np.testing.assert_array_equal(repacked["actions"], sample["action"])
    out = compose(embodiment.transforms("pi0").inputs)(repacked)
    assert out["actions"].shape == (50, 14)
    assert not out["image_mask"]["left_wrist_0_rgb"]


def test_repack_maps_a_real_robot_lerobot_sample():
    rng = np.random.default_rng(6)
    sample = {
        f"observation.images.{camera}": rng.uniform(0.0, 1.0, (3, 8, 10))
        for camera in ("cam_high", "cam_left_wrist", "cam_right_wrist")
    }
    sample |= {"observation.state": np.zeros(14), "action": np.zeros((50, 14))}
    embodiment = AlohaEmbodiment(lerobot_repack=LEROBOT_REAL_REPACK, default_prompt="uncap the pen")
    repacked = compose(embodiment.repack_transforms().inputs)(sample)
    assert set(repacked["images"]) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}
    np.testing.assert_array_equal(repacked["images"]["cam_left_wrist"], sample["observation.images.cam_left_wrist"])
    out = compose(embodiment.transforms("pi05").inputs)(repacked)
    assert all(out["image_mask"].values())
    assert out["prompt"] == "uncap the pen"
