"""Wrong inputs fail early with InputError naming the field, the expected and the actual value."""

import attrs
import numpy as np
import pytest

from openpi_core.errors import InputError
from openpi_core.models.api import draw_noise, draw_time
from openpi_core.observation import Observation


def _with_images(observation: Observation, images: dict, masks: dict | None = None) -> Observation:
    masks = masks if masks is not None else {key: np.ones(observation.batch_size, bool) for key in images}
    return attrs.evolve(observation, images=images, image_masks=masks)


def test_missing_camera(case):
    observation = case.ref.observation()
    images = dict(observation.images)
    del images["left_wrist_0_rgb"]
    with pytest.raises(InputError, match=r"missing \['left_wrist_0_rgb'\]"):
        case.model.sample_actions(_with_images(observation, images))


def test_renamed_camera_is_missing(case):
    observation = case.ref.observation()
    images = dict(observation.images)
    images["wrist_0_rgb"] = images.pop("right_wrist_0_rgb")
    with pytest.raises(
        InputError, match=r"missing \['right_wrist_0_rgb'\], got \['base_0_rgb', 'left_wrist_0_rgb', 'wrist_0_rgb'\]"
    ):
        case.model.embed_prefix(_with_images(observation, images))


def test_cameras_the_model_does_not_read_are_ignored(case):
    observation = case.ref.observation()
    extra = {**observation.images, "cam_low": observation.images["base_0_rgb"][:, :8]}
    embedded = case.model.embed_prefix(observation)
    masks = {**observation.image_masks, "cam_low": np.ones(observation.batch_size, bool)}
    with_extra = case.model.embed_prefix(_with_images(observation, extra, masks))
    for a, b in zip(embedded, with_extra, strict=True):
        np.testing.assert_array_equal(a, b)


def test_wrong_image_resolution(case):
    observation = case.ref.observation()
    images = {key: value[:, :112, :112] for key, value in observation.images.items()}
    with pytest.raises(InputError, match=r"images\['base_0_rgb'\] should have shape \[2, 224, 224, 3\]"):
        case.model.sample_actions(_with_images(observation, images))


def test_wrong_noise_shape(case):
    with pytest.raises(InputError, match=r"noise should have shape \[2, 10, 32\]"):
        case.model.sample_actions(case.ref.observation(), noise=np.zeros((2, 10, 7), np.float32))


def test_wrong_time_shape(case):
    io = case.ref.io
    with pytest.raises(InputError, match=r"time should have shape \[2\]"):
        case.model.compute_loss(case.ref.observation(), io["loss/actions"], io["loss/noise"], np.ones(3, np.float32))


def test_wrong_actions_shape(case):
    with pytest.raises(InputError, match="actions should have shape"):
        case.model.compute_loss(case.ref.observation(), np.zeros((2, 5, 32), np.float32))


def test_token_outside_vocabulary(case):
    observation = case.ref.observation()
    tokens = observation.tokenized_prompt.copy()
    tokens[0, 0] = case.ref.config.vocab_size
    with pytest.raises(InputError, match=r"tokenized_prompt ids should lie in \[0, 1024\)"):
        case.model.embed_prefix(attrs.evolve(observation, tokenized_prompt=tokens))


def test_pi0_state_must_have_the_action_dim(case):
    observation = attrs.evolve(case.ref.observation(), state=np.zeros((2, 7), np.float32))
    if case.ref.config.pi05:
        case.model.embed_prefix(observation)  # π0.5 reads its state from the prompt
    else:
        with pytest.raises(InputError, match=r"state should be \[B, 32\]"):
            case.model.sample_actions(observation)


def test_seed_draws_the_core_noise_and_time(case):
    observation, actions = case.ref.observation(), case.ref.io["loss/actions"]
    noise = draw_noise(5, actions.shape)
    np.testing.assert_array_equal(
        case.model.sample_actions(observation, num_steps=1, seed=5),
        case.model.sample_actions(observation, noise=noise, num_steps=1),
    )
    np.testing.assert_array_equal(
        case.model.compute_loss(observation, actions, seed=5),
        case.model.compute_loss(observation, actions, noise, draw_time(5, 2)),
    )


@pytest.mark.parametrize("num_steps", [0, -1, 2.5])
def test_num_steps_must_be_a_positive_integer(case, num_steps):
    with pytest.raises(InputError, match="num_steps should be a positive integer"):
        case.model.sample_actions(case.ref.observation(), num_steps=num_steps)


def test_not_an_observation(case):
    with pytest.raises(InputError, match="expected an openpi_core Observation, got dict"):
        case.model.embed_prefix(case.ref.observation().to_dict())
