"""Where this project's transforms deliberately differ from openpi's: one test per row of
docs/differences.md (the table names each test), and the conversions that match openpi."""

import numpy as np
import pytest

from openpi_core.errors import InputError
from openpi_core.transforms import DeltaActions, Normalize, NormStats, PadStatesAndActions, Unnormalize
from openpi_embodiment_aloha.aloha import AlohaInputs, AlohaOutputs
from openpi_embodiment_droid.droid import DroidEmbodiment, DroidInputs
from openpi_embodiment_libero.libero import LiberoEmbodiment
from openpi_embodiment_ur5.ur5 import UR5Embodiment

EMBODIMENTS = {"droid": DroidEmbodiment(), "libero": LiberoEmbodiment(), "ur5": UR5Embodiment()}


def aloha_observation(image: np.ndarray) -> dict:
    state = np.linspace(-0.5, 0.5, 14)
    state[[6, 13]] = 0.5
    return {"images": {"cam_high": image}, "state": state}


# -- the same as openpi -----------------------------------------------------------------


@pytest.mark.parametrize("robot", ["aloha", *EMBODIMENTS])
def test_float_camera_images_become_uint8_exactly_as_openpi_converts_them(robot):
    # LeRobot stores images as float32 CHW in [0, 1]; openpi: (255 * img).astype(np.uint8), then HWC.
    image = np.random.default_rng(1).random((3, 24, 32)).astype(np.float32)
    expected = np.moveaxis((255 * image).astype(np.uint8), 0, -1)
    if robot == "aloha":
        base = AlohaInputs()(aloha_observation(image))["image"]["base_0_rgb"]
    else:
        embodiment = EMBODIMENTS[robot]
        observation = embodiment.example(0)
        base_key = next(key for key, spec in embodiment.observation_schema.items() if spec.dtype_kind == "uf")
        observation[base_key] = image
        inputs = embodiment.transforms("pi0").inputs
        data = observation
        for transform in inputs:
            data = transform(data)
        base = data["image"]["base_0_rgb"]
    np.testing.assert_array_equal(base, expected)


# -- one test per row of docs/differences.md ------------------------------------------


def test_state_wider_than_the_model_is_refused():
    # openpi's pad_to_dim passes a wider state through unchanged.
    with pytest.raises(InputError, match=r"state should be \[..., D\] with D <= 32, got \[40\]"):
        PadStatesAndActions(32)({"state": np.zeros(40, np.float32)})
    with pytest.raises(InputError, match="actions"):
        PadStatesAndActions(32)({"state": np.zeros(8, np.float32), "actions": np.zeros((10, 33), np.float32)})


def test_normalize_leaves_dims_beyond_the_stats_untouched():
    # openpi slices the stats to the data's width and fails to broadcast when they are narrower.
    stats = {"actions": NormStats(mean=[1.0, 2.0], std=[2.0, 4.0])}
    actions = np.array([[3.0, 6.0, 7.0, -8.0]], np.float32)
    out = Normalize(stats)({"actions": actions})["actions"]
    np.testing.assert_allclose(out[0, :2], [2.0 / (2.0 + 1e-6), 4.0 / (4.0 + 1e-6)], rtol=1e-6)
    np.testing.assert_array_equal(out[0, 2:], [7.0, -8.0])


def test_normalize_refuses_values_far_outside_the_stats():
    # openpi normalizes any value; a state sent in the wrong units reaches the model.
    stats = {"state": NormStats(mean=[0.0, 0.0], std=[0.1, 0.0])}
    with pytest.raises(InputError, match=r"data\['state'\] dim 0 is 5000.*check its units"):
        Normalize(stats)({"state": np.array([5000.0, 0.0])})
    # A dim that was constant in the training data is not held to the limit.
    Normalize(stats)({"state": np.array([0.5, 0.01])})


def test_unnormalize_leaves_dims_beyond_the_stats_exactly_unchanged():
    # openpi's z-score inverse pads std with 1 and mean with 0, so those dims get multiplied by 1 + 1e-6.
    stats = {"actions": NormStats(mean=[1.0], std=[2.0])}
    actions = np.array([[0.5, 1000.0, -3.0]], np.float64)
    out = Unnormalize(stats)({"actions": actions})["actions"]
    assert out[0, 0] == pytest.approx(0.5 * (2.0 + 1e-6) + 1.0)
    np.testing.assert_array_equal(out[0, 1:], [1000.0, -3.0])
    assert out[0, 1] != 1000.0 * (1.0 + 1e-6)


def test_outputs_are_float32_where_openpi_widens_to_float64():
    state = np.linspace(-0.5, 0.5, 14).astype(np.float32)
    aloha_in = AlohaInputs()({"images": {"cam_high": np.zeros((3, 8, 8), np.uint8)}, "state": state})
    assert aloha_in["state"].dtype == np.float32  # openpi: int64 sign mask * float32 state -> float64
    assert AlohaOutputs()({"actions": np.zeros((4, 32), np.float32)})["actions"].dtype == np.float32
    droid = EMBODIMENTS["droid"]
    robot_actions = {"actions": np.zeros((4, 32), np.float64)}
    for transform in droid.transforms("pi0").outputs:
        robot_actions = transform(robot_actions)
    assert robot_actions["actions"].dtype == np.float32  # openpi returns Unnormalize's float64
    stats = {"state": NormStats(mean=np.zeros(14), std=np.ones(14))}
    assert Normalize(stats)({"state": state})["state"].dtype == np.float32  # openpi: float64 stats -> float64
    assert Normalize(stats)({"state": np.arange(14)})["state"].dtype == np.float32
    assert Unnormalize(stats)({"state": state})["state"].dtype == np.float32


def test_camera_layout_and_float_range_are_checked_not_assumed():
    rng = np.random.default_rng(2)
    chw = rng.integers(0, 256, (3, 24, 32), dtype=np.uint8)
    hwc = np.ascontiguousarray(np.moveaxis(chw, 0, -1))
    # openpi's ALOHA transform always reads CHW, so an HWC image comes out scrambled; both work here.
    from_chw = AlohaInputs()(aloha_observation(chw))["image"]["base_0_rgb"]
    from_hwc = AlohaInputs()(aloha_observation(hwc))["image"]["base_0_rgb"]
    np.testing.assert_array_equal(from_chw, hwc)
    np.testing.assert_array_equal(from_hwc, hwc)
    # Floats in [-1, 1] are mapped to [0, 1] first (openpi would cast negative values to uint8).
    signed = np.array([[[-1.0, 0.0, 1.0]]], np.float32)
    assert AlohaInputs()(aloha_observation(signed))["image"]["base_0_rgb"].tolist() == [[[0, 127, 255]]]
    # Floats beyond [-1, 1] (0..255 floats, say) are refused; openpi's cast would wrap them around.
    with pytest.raises(InputError, match=r"images/cam_high.*\[0, 1\] or \[-1, 1\]"):
        AlohaInputs()(aloha_observation(np.full((3, 8, 8), 200.0, np.float32)))


def test_observations_are_checked_against_the_embodiment_schema():
    # openpi's DROID transform concatenates whatever comes: 6 joints would make a 7-dim state.
    observation = EMBODIMENTS["droid"].example(0)
    observation["observation/joint_position"] = np.zeros(6)
    with pytest.raises(InputError, match=r"observation/joint_position.*should have shape \[7\]"):
        DroidInputs(model_family="pi0")(observation)
    observation = EMBODIMENTS["droid"].example(0)
    observation["observation/joint_position"] = np.full(7, np.nan)
    with pytest.raises(InputError, match="should be finite"):
        DroidInputs(model_family="pi0")(observation)


def test_transforms_leave_their_input_arrays_unchanged():
    # openpi's DeltaActions subtracts the state from the caller's actions array in place.
    state = np.array([1.0, 2.0, 3.0], np.float32)
    actions = np.ones((2, 3), np.float32)
    out = DeltaActions((True, True, False))({"state": state, "actions": actions})
    np.testing.assert_array_equal(out["actions"], [[0.0, -1.0, 1.0], [0.0, -1.0, 1.0]])
    np.testing.assert_array_equal(actions, np.ones((2, 3)))
