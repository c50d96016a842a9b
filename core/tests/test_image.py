import numpy as np
import pytest

from openpi_core.errors import InputError
from openpi_core.transforms.image import resize_with_pad, to_uint8_hwc


def test_wide_image_is_padded_top_and_bottom():
    image = np.arange(1, 25, dtype=np.uint8).reshape(2, 4, 3)

    out = resize_with_pad(image, 4, 4)

    assert out.shape == (4, 4, 3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], 0)
    np.testing.assert_array_equal(out[1:3], image)
    np.testing.assert_array_equal(out[3], 0)


def test_tall_float_image_is_padded_left_and_right_with_minus_one():
    image = np.linspace(-0.9, 0.9, 24, dtype=np.float32).reshape(4, 2, 3)

    out = resize_with_pad(image, 4, 4)

    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], -1.0)
    np.testing.assert_array_equal(out[:, 1:3], image)
    np.testing.assert_array_equal(out[:, 3], -1.0)


def test_odd_padding_puts_the_extra_row_at_the_bottom():
    image = np.full((2, 6, 1), 9, dtype=np.uint8)

    out = resize_with_pad(image, 5, 6)[..., 0]

    assert out[:, 0].tolist() == [0, 9, 9, 0, 0]


def test_downscale_by_two_averages_under_a_widened_triangle():
    # Output pixel 0 is centred at input 1.0 with half-width 2: input centres 0.5, 1.5, 2.5
    # get weights 3/4, 3/4, 1/4, i.e. 3/7, 3/7, 1/7 once normalised (mirrored for pixel 1).
    row = np.array([0, 70, 140, 210], dtype=np.uint8)
    image = np.repeat(np.tile(row, (4, 1))[..., None], 3, axis=-1)

    out = resize_with_pad(image, 2, 2)

    np.testing.assert_array_equal(out[..., 0], [[50, 160], [50, 160]])


def test_float_downscale_is_not_rounded():
    row = np.array([-0.7, 0.0, 0.7, 1.0], dtype=np.float32)
    image = np.tile(row, (4, 1))[..., None]

    out = resize_with_pad(image, 2, 2)[..., 0]

    np.testing.assert_allclose(out, [[-0.2, 51 / 70], [-0.2, 51 / 70]], atol=1e-6)


def test_upscale_interpolates_between_pixel_centres():
    image = np.array([[[0.0], [1.0]]], dtype=np.float32)  # [1, 2, 1]

    out = resize_with_pad(image, 2, 4)[..., 0]

    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0], [0.0, 0.25, 0.75, 1.0]], atol=1e-7)


def test_uint8_rounds_half_up_like_pil():
    # Each output is 3/4 * 0 + 1/4 * 2 = 0.5 after the width pass; PIL rounds that to 1.
    image = np.array([[[0], [2]]], dtype=np.uint8)

    out = resize_with_pad(image, 2, 4)[..., 0]

    assert out.tolist() == [[0, 1, 2, 2], [0, 1, 2, 2]]


def test_batched_images_match_one_at_a_time():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 3, 6, 10, 3), dtype=np.uint8)

    out = resize_with_pad(images, 8, 8)

    assert out.shape == (2, 3, 8, 8, 3)
    np.testing.assert_array_equal(out[1, 2], resize_with_pad(images[1, 2], 8, 8))


def test_target_size_returns_input_unchanged():
    image = np.ones((4, 4, 3), dtype=np.uint8)

    assert resize_with_pad(image, 4, 4) is image


def test_float_results_are_clipped_to_minus_one_one():
    image = np.full((2, 2, 1), 1.0, dtype=np.float32)

    out = resize_with_pad(image, 3, 3)

    assert out.max() == 1.0


@pytest.mark.parametrize(
    ("image", "match"),
    [(np.zeros((4, 4), np.uint8), "shape"), (np.zeros((4, 4, 3), np.int32), "dtype")],
)
def test_resize_rejects_bad_images(image, match):
    with pytest.raises(InputError, match=match):
        resize_with_pad(image, 2, 2)


def test_to_uint8_hwc_moves_channels_last():
    image = np.arange(24, dtype=np.uint8).reshape(3, 2, 4)

    out = to_uint8_hwc(image)

    assert out.shape == (2, 4, 3)
    assert out[1, 2].tolist() == [6, 14, 22]


def test_to_uint8_hwc_scales_unit_floats():
    image = np.array([[[0.0, 0.2, 1.0]]], dtype=np.float32)

    assert to_uint8_hwc(image).tolist() == [[[0, 51, 255]]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["chw", "hwc"])
def test_to_uint8_hwc_truncates_unit_floats_exactly_like_openpi(dtype, layout):
    # openpi's policies convert float images with ``(255 * img).astype(np.uint8)``.
    image = np.random.default_rng(0).random((3, 40, 50)).astype(dtype)
    if layout == "hwc":
        image = np.moveaxis(image, 0, -1)
    expected = (255 * image).astype(np.uint8)
    if layout == "chw":
        expected = np.moveaxis(expected, 0, -1)

    np.testing.assert_array_equal(to_uint8_hwc(image), expected)
    # Rounding instead would move about half of the pixels by one grey level.
    assert np.mean(np.round(255 * image) != (255 * image).astype(np.uint8)) > 0.4


def test_to_uint8_hwc_maps_signed_floats():
    image = np.array([[[-1.0, 0.6, 1.0]]], dtype=np.float32)

    assert to_uint8_hwc(image).tolist() == [[[0, 204, 255]]]


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 4), np.uint8), "shape"),
        (np.full((2, 2, 3), 255.0, np.float32), "range"),
        (np.zeros((2, 2, 3), np.int16), "dtype"),
    ],
)
def test_to_uint8_hwc_rejects_bad_images(image, match):
    with pytest.raises(InputError, match=match):
        to_uint8_hwc(image)


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 4, 3), (4, 0, 3), (4, 4, 0), (2, 0, 5, 3)])
def test_an_empty_image_is_an_input_error_not_a_division_by_zero(shape):
    with pytest.raises(InputError, match=r"H, W, C >= 1, got \[" + ", ".join(map(str, shape))):
        resize_with_pad(np.zeros(shape, np.uint8), 224, 224)
