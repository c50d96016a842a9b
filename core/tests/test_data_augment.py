"""openpi's training augmentation in numpy: shapes, dtypes, determinism, what each camera gets."""

import numpy as np
import pytest

from openpi_core.data import augment_batch, augment_images
from openpi_core.data.augment import _adjust_contrast, _hsv_to_rgb, _rgb_to_hsv, crop_resize_rotate
from openpi_core.errors import InputError


def images(dtype=np.uint8, batch=4, size=(20, 24)):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (batch, *size, 3), dtype=np.uint8)
    cameras = {"base_0_rgb": pixels, "left_wrist_0_rgb": pixels.copy()}
    if dtype == np.uint8:
        return cameras
    return {name: (image / 255.0 * 2 - 1).astype(dtype) for name, image in cameras.items()}


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_shapes_and_dtypes_are_kept(dtype):
    source = images(dtype)
    out = augment_images(source, np.random.default_rng(1))
    for name, image in source.items():
        assert out[name].shape == image.shape and out[name].dtype == image.dtype
    if dtype == np.float32:
        assert all(out[name].min() >= -1.0 - 1e-5 and out[name].max() <= 1.0 + 1e-5 for name in out)


def test_same_seed_same_result_other_seed_differs():
    batch = {"image": images(), "state": np.zeros((4, 2))}
    first, again, other = augment_batch(batch, 3), augment_batch(batch, 3), augment_batch(batch, 4)
    for name in batch["image"]:
        np.testing.assert_array_equal(first["image"][name], again["image"][name])
        assert not np.array_equal(first["image"][name], other["image"][name])
    assert first["state"] is batch["state"]


def test_wrist_cameras_get_colour_only():
    """Colour jitter is a function of each pixel's colour alone; the crop and rotation move pixels."""
    halves = np.zeros((8, 20, 24, 3), np.uint8)
    halves[:, :, :12] = [90, 140, 200]
    halves[:, :, 12:] = [200, 60, 30]
    out = augment_images({"base_0_rgb": halves, "left_wrist_0_rgb": halves}, np.random.default_rng(0))
    for image in out["left_wrist_0_rgb"]:
        assert len(np.unique(image[:, :12].reshape(-1, 3), axis=0)) == 1
        assert len(np.unique(image[:, 12:].reshape(-1, 3), axis=0)) == 1
    for image in out["base_0_rgb"]:  # the edge moved and was interpolated
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 2
    # About half of the images are jittered (probability 0.5).
    changed = [not np.array_equal(image[0, 0], [90, 140, 200]) for image in out["left_wrist_0_rgb"]]
    assert 0 < sum(changed) < 8


def test_crop_resize_rotate_keeps_the_centre_of_a_smooth_image():
    y, x = np.mgrid[0:40, 0:40].astype(np.float32)
    image = np.stack([y / 39, x / 39, np.full_like(y, 0.5)], axis=-1)[None]
    out = crop_resize_rotate(image, np.random.default_rng(0))
    # A 95% crop moves the centre by at most 1 pixel, a 5° rotation barely moves it.
    assert np.abs(out[0, 18:22, 18:22] - image[0, 18:22, 18:22]).max() < 0.06


def test_colour_helpers_match_augmax():
    rgb = np.random.default_rng(0).uniform(size=(100, 3)).astype(np.float32)
    np.testing.assert_allclose(_hsv_to_rgb(*_rgb_to_hsv(rgb)), rgb, atol=1e-6)
    values = np.linspace(0, 1, 11, dtype=np.float32)
    np.testing.assert_allclose(_adjust_contrast(values, np.float32(0.0)), values, atol=1e-6)
    stronger = _adjust_contrast(values, np.float32(0.4))
    assert stronger[0] == 0 and stronger[-1] == pytest.approx(1) and stronger[7] > values[7]


def test_bad_input_names_the_camera():
    with pytest.raises(InputError, match=r"image 'top' should be \[B, H, W, 3\], got \[4, 4, 3\]"):
        augment_images({"top": np.zeros((4, 4, 3), np.uint8)}, np.random.default_rng(0))
    with pytest.raises(InputError, match="needs batch\\['image'\\]"):
        augment_batch({"state": np.zeros(2)}, 0)
