import numpy as np
import pytest

from openpi_core.errors import InputError
from openpi_core.transforms import (
    AbsoluteActions,
    CropImages,
    DeltaActions,
    InjectDefaultPrompt,
    PadStatesAndActions,
    PromptFromLeRobotTask,
    RepackTransform,
    ResizeImages,
    SubsampleActions,
    compose,
    make_bool_mask,
    resize_with_pad,
)


def test_repack_builds_nested_structure_from_paths():
    transform = RepackTransform({"a": {"b": "b/c"}, "d": "e/f"})

    assert transform({"b": {"c": 1}, "e": {"f": 2}, "unused": 3}) == {"a": {"b": 1}, "d": 2}


def test_repack_keeps_flat_output_keys_and_reads_flat_input_keys():
    transform = RepackTransform({"observation/image": "image", "state": "observation/state"})

    out = transform({"image": 1, "observation/state": 2})

    assert out == {"observation/image": 1, "state": 2}


def test_repack_missing_key_names_it_and_lists_available():
    transform = RepackTransform({"images": {"top": "observation/images/top"}})

    with pytest.raises(InputError, match=r"'observation/images/top'.*\['observation/images/low'\]"):
        transform({"observation": {"images": {"low": 0}}})


def test_repack_rejects_non_string_leaves():
    with pytest.raises(InputError, match="key path string"):
        RepackTransform({"a": 3})


def test_inject_default_prompt():
    transform = InjectDefaultPrompt("pick up the cube")

    assert transform({"state": 1}) == {"state": 1, "prompt": "pick up the cube"}
    assert transform({"prompt": "mine"}) == {"prompt": "mine"}
    assert InjectDefaultPrompt(None)({"state": 1}) == {"state": 1}


def test_make_bool_mask():
    assert make_bool_mask(2, -2, 2) == (True, True, False, False, True, True)
    assert make_bool_mask(2, 0, 2) == (True, True, True, True)
    assert make_bool_mask(-1) == (False,)


def test_delta_actions_subtracts_state_on_masked_dims_only():
    actions = np.array([[3.0, 4.0, 5.0], [5.0, 6.0, 7.0]])
    data = {"state": np.array([1.0, 2.0, 3.0]), "actions": actions}

    out = DeltaActions(mask=[False, True])(data)

    np.testing.assert_array_equal(out["actions"], [[3.0, 2.0, 5.0], [5.0, 4.0, 7.0]])
    np.testing.assert_array_equal(out["state"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(actions, [[3.0, 4.0, 5.0], [5.0, 6.0, 7.0]])  # input untouched


def test_absolute_actions_adds_state_on_masked_dims_only():
    data = {"state": np.array([1, 2, 3]), "actions": np.array([[3, 4, 5], [5, 6, 7]])}

    out = AbsoluteActions(mask=[False, True])(data)

    np.testing.assert_array_equal(out["actions"], [[3, 6, 5], [5, 8, 7]])


def test_delta_actions_batched():
    data = {
        "state": np.array([[1.0, 1.0], [10.0, 20.0]]),  # [B=2, S=2]
        "actions": np.full((2, 3, 2), 30.0),  # [B=2, H=3, A=2]
    }

    out = DeltaActions(mask=make_bool_mask(2))(data)

    np.testing.assert_array_equal(out["actions"][0], np.full((3, 2), 29.0))
    np.testing.assert_array_equal(out["actions"][1], [[20.0, 10.0]] * 3)


def test_delta_then_absolute_round_trips():
    rng = np.random.default_rng(0)
    data = {"state": rng.normal(size=14), "actions": rng.normal(size=(50, 14))}
    mask = make_bool_mask(6, -1, 6, -1)

    out = AbsoluteActions(mask)(DeltaActions(mask)(data))

    np.testing.assert_allclose(out["actions"], data["actions"], atol=1e-12)


def test_delta_actions_identity_cases():
    data = {"state": np.zeros(3), "actions": np.ones((2, 3))}

    no_actions = {"state": np.zeros(3)}

    assert DeltaActions(mask=None)(data) is data
    assert AbsoluteActions(mask=None)(data) is data
    assert DeltaActions(mask=[True])(no_actions) is no_actions


def test_delta_actions_errors():
    with pytest.raises(InputError, match="'state'"):
        DeltaActions([True])({"actions": np.ones((2, 3))})
    with pytest.raises(InputError, match="mask covers 4 dims"):
        DeltaActions(make_bool_mask(4))({"state": np.zeros(3), "actions": np.ones((2, 3))})


def test_subsample_actions():
    actions = np.arange(10).reshape(5, 2)

    out = SubsampleActions(2)({"actions": actions})

    assert out["actions"].tolist() == [[0, 1], [4, 5], [8, 9]]


def test_pad_states_and_actions_zero_pads_last_dim():
    data = {"state": np.array([1.0, 2.0]), "actions": np.ones((2, 3))}

    out = PadStatesAndActions(4)(data)

    assert out["state"].tolist() == [1.0, 2.0, 0.0, 0.0]
    assert out["actions"].tolist() == [[1.0, 1.0, 1.0, 0.0]] * 2
    assert data["state"].shape == (2,)


def test_pad_states_and_actions_rejects_wider_data():
    with pytest.raises(InputError, match="D <= 2"):
        PadStatesAndActions(2)({"state": np.zeros(3)})


def test_prompt_from_lerobot_task():
    transform = PromptFromLeRobotTask({1: "fold the towel"})

    assert transform({"task_index": np.array(1)})["prompt"] == "fold the towel"
    with pytest.raises(InputError, match="task_index 2"):
        transform({"task_index": 2})
    with pytest.raises(InputError, match="needs 'task_index'"):
        transform({})


def test_resize_images_resizes_every_camera():
    data = {"image": {"top": np.zeros((2, 4, 3), np.uint8), "wrist": np.zeros((4, 4, 3), np.uint8)}, "state": 0}

    out = ResizeImages(8, 8)(data)

    assert {name: image.shape for name, image in out["image"].items()} == {"top": (8, 8, 3), "wrist": (8, 8, 3)}
    assert data["image"]["top"].shape == (2, 4, 3)


def test_resize_images_names_the_bad_camera():
    with pytest.raises(InputError, match="'wrist'"):
        ResizeImages(8, 8)({"image": {"wrist": np.zeros((4, 4), np.uint8)}})


def test_crop_images_cuts_the_fractional_window_from_every_camera():
    top = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    batched_wrist = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    data = {"image": {"top": top, "wrist": batched_wrist}, "state": 0}

    out = CropImages(top=0.25, left=0.5, height=0.5, width=0.5)(data)

    np.testing.assert_array_equal(out["image"]["top"], top[2:6, 4:8])
    np.testing.assert_array_equal(out["image"]["wrist"], batched_wrist[:, 1:3, 3:6])
    assert out["state"] == 0
    assert data["image"]["top"].shape == (8, 8, 3)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ((0.5, 0.0, 0.6, 1.0), "inside the image"),
        ((0.0, 0.0, 0.0, 1.0), "non-empty"),
        ((-0.1, 0.0, 0.5, 0.5), "fraction"),
    ],
)
def test_crop_images_rejects_a_window_outside_the_image(window, message):
    with pytest.raises(InputError, match=message):
        CropImages(*window)


def test_crop_images_names_the_bad_camera():
    with pytest.raises(InputError, match="'wrist'"):
        CropImages(0.0, 0.0, 0.5, 0.5)({"image": {"wrist": np.zeros((4, 4), np.uint8)}})


def test_crop_images_with_a_frame_cuts_the_same_window_from_any_frame_size():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    shrunk = resize_with_pad(raw, 224, 224)
    crop = CropImages(0.25, 0.25, 0.5, 0.5, frame=(224, 224))

    from_raw = crop({"image": {"top": raw}})["image"]["top"]
    from_shrunk = crop({"image": {"top": shrunk}})["image"]["top"]

    np.testing.assert_array_equal(from_raw, from_shrunk)
    np.testing.assert_array_equal(from_raw, shrunk[56:168, 56:168])
    # Without the frame the same fractions of the raw frame are a 240x320 window, not a square.
    assert CropImages(0.25, 0.25, 0.5, 0.5)({"image": {"top": raw}})["image"]["top"].shape == (240, 320, 3)


def test_crop_images_with_a_frame_is_the_plain_crop_on_images_of_that_size():
    image = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    framed = CropImages(0.25, 0.25, 0.5, 0.5, frame=(224, 224))({"image": {"top": image}})["image"]["top"]
    plain = CropImages(0.25, 0.25, 0.5, 0.5)({"image": {"top": image}})["image"]["top"]
    np.testing.assert_array_equal(framed, plain)
    assert framed.shape == (2, 112, 112, 3)


@pytest.mark.parametrize("frame", [(224,), (0, 224), (224, -1)])
def test_crop_images_rejects_a_bad_frame(frame):
    with pytest.raises(InputError, match="frame"):
        CropImages(0.25, 0.25, 0.5, 0.5, frame=frame)


def test_compose_chains_common_transforms():
    transform = compose(
        [
            RepackTransform({"state": "obs/state", "actions": "act"}),
            InjectDefaultPrompt("go"),
            PadStatesAndActions(3),
        ]
    )

    out = transform({"obs": {"state": np.array([1.0])}, "act": np.array([[2.0]])})

    assert out["prompt"] == "go"
    assert out["state"].tolist() == [1.0, 0.0, 0.0]
    assert out["actions"].tolist() == [[2.0, 0.0, 0.0]]
