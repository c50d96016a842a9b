"""The small sim π0 sees the same model input whatever frame size the client sends."""

import numpy as np
import pytest

from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.transforms import CropImages, resize_with_pad
from openpi_embodiment_aloha import plugin as aloha
from openpi_embodiment_aloha.presets import SIM_CROP, SIM_FRAME


@pytest.fixture(scope="module")
def policy():
    torch_backend = pytest.importorskip("openpi_backend_torch.plugin")
    from openpi_core.policy import create_policy

    manager = PluginManager(entry_points=False, plugins=[("aloha", aloha), ("torch", torch_backend)])
    with use_plugin_manager(manager):
        yield create_policy("pi0_aloha_sim_small", backend="torch")


def observation(top: np.ndarray) -> dict:
    state = np.linspace(-0.3, 0.3, 14)
    state[[6, 13]] = 0.5
    return {"images": {"cam_high": top}, "state": state, "prompt": "Transfer cube"}


def raw_frame(seed: int = 0) -> np.ndarray:
    """A 480x640 top view as gym-aloha renders it: a smooth scene with a bright cube, plus noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:480, 0:640]
    scene = np.stack([rows / 480 * 200, cols / 640 * 200, (rows + cols) / 1120 * 200], axis=-1)
    scene[220:250, 300:335] = [250, 30, 30]
    return np.clip(scene + rng.normal(0, 8, scene.shape), 0, 255).astype(np.uint8)


def model_image(policy, top: np.ndarray) -> np.ndarray:
    return policy.prepare(observation(top)).images["base_0_rgb"]


def test_a_raw_frame_and_its_shrink_give_the_same_model_input(policy):
    raw = raw_frame()
    shrunk = resize_with_pad(raw, *SIM_FRAME)
    from_raw, from_shrunk = model_image(policy, raw), model_image(policy, shrunk)
    assert from_raw.shape == (1, 112, 112, 3)
    # Exactly equal, not merely close: the crop resizes the raw frame with the same
    # resize_with_pad a client would use, then cuts the window from the 224x224 result.
    np.testing.assert_array_equal(from_raw, from_shrunk)
    # Channels-first frames, as openpi's ALOHA clients send them, give the same too.
    np.testing.assert_array_equal(model_image(policy, np.moveaxis(raw, -1, 0)), from_shrunk)


def test_the_fractions_alone_would_give_a_raw_frame_a_different_window():
    raw = raw_frame()
    shrunk = resize_with_pad(raw, *SIM_FRAME)
    plain = CropImages(SIM_CROP.top, SIM_CROP.left, SIM_CROP.height, SIM_CROP.width)
    from_raw = resize_with_pad(plain({"image": {"top": raw}})["image"]["top"], 112, 112)
    from_shrunk = plain({"image": {"top": shrunk}})["image"]["top"]
    # The 3:4 window, resized with padding, leaves black bars over a quarter of the model's image.
    assert np.mean(np.abs(from_raw.astype(int) - from_shrunk.astype(int)) > 10) > 0.2
    assert not from_raw[:14].any() and from_shrunk[:14].any()


def test_224_frames_are_cropped_exactly_as_the_checkpoint_was_trained(policy):
    # The bundled checkpoint was trained on 224x224 recordings cropped by the fractions alone.
    frame = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    plain = CropImages(0.25, 0.25, 0.5, 0.5)({"image": {"top": frame}})["image"]["top"]
    np.testing.assert_array_equal(SIM_CROP({"image": {"top": frame}})["image"]["top"], plain)
    expected = plain.astype(np.float32) / 255.0 * 2.0 - 1.0
    np.testing.assert_array_equal(model_image(policy, frame)[0], expected)
