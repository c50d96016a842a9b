"""openpi's training-time image augmentation, in numpy.

openpi (``preprocess_observation`` with ``train=True``) augments each image of a batch
independently with augmax 0.4.1:

* cameras whose name does not contain ``"wrist"``: a random crop to 95% of the height
  and width, resized back, and a rotation by an angle uniform in [-5°, 5°], all in one
  bilinear resampling (pixels that come from outside the image are black);
* every camera: augmax's ``ColorJitter(brightness=0.3, contrast=0.4, saturation=0.5)``,
  applied with probability 0.5. It works on the HSV value and hue: brightness and
  contrast amounts uniform in [-0.3, 0.3] and [-0.4, 0.4], and a hue shift uniform in
  [-0.1, 0.1] (augmax's default ``hue``, which openpi does not override). augmax
  computes the saturation change but discards it, so saturation is unchanged here too.

The random numbers come from numpy, so the augmentations follow openpi's
distributions, not its exact draws. Each call is deterministic given its generator.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

from openpi_core.errors import InputError

CROP_FRACTION = 0.95
MAX_ROTATION_DEGREES = 5.0
BRIGHTNESS = 0.3
CONTRAST = 0.4
HUE = 0.1
JITTER_PROBABILITY = 0.5


def _rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """augmax's conversion: hue in turns, saturation and value in [0, 1]; ``[..., 3]`` -> 3 x ``[...]``."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(-1)
    spread = value - rgb.min(-1)
    safe = np.where(spread == 0, 1, spread)
    # The first channel holding the maximum decides, as argmax does in augmax.
    is_red = red == value
    is_green = ~is_red & (green == value)
    hue = np.where(is_red, (green - blue) / safe, np.where(is_green, 2 + (blue - red) / safe, 4 + (red - green) / safe))
    hue = np.where(spread == 0, 0, hue / 6)
    saturation = np.where(value == 0, 0, spread / np.where(value == 0, 1, value))
    return hue, saturation, value


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    chroma = value * saturation
    channels = []
    for offset in (5, 3, 1):  # red, green, blue
        k = np.mod(offset + hue * 6, 6)
        channels.append(value - chroma * np.clip(np.minimum(k, 4 - k), 0, 1))
    return np.stack(channels, axis=-1)


def _adjust_brightness(value: np.ndarray, amount: np.ndarray) -> np.ndarray:
    return np.where(amount < 0, value * (1 + amount), value * (1 - amount) + amount)


def _adjust_contrast(value: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """augmax's invertible contrast curve: slope ``tan((amount + 1) π/4)`` through 0.5, bent to stay in [0, 1]."""
    slant = np.tan((amount + 1) * (np.pi / 4))
    with np.errstate(divide="ignore", invalid="ignore"):
        low = (slant - slant**2) / (2 * (1 - slant**2))  # NaN at amount 0, where the curve is the identity
    high = 1 - low
    middle = slant * (value - 0.5) + 0.5
    return np.where(value < low, value / slant, np.where(value > high, value / slant + 1 - 1 / slant, middle))


def color_jitter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Jitter float32 images ``[B, H, W, 3]`` in [0, 1], one draw per image (see the module docstring)."""
    batch = images.shape[0]
    brightness = rng.uniform(-BRIGHTNESS, BRIGHTNESS, batch).astype(np.float32)
    contrast = rng.uniform(-CONTRAST, CONTRAST, batch).astype(np.float32)
    hue_shift = rng.uniform(-HUE, HUE, batch).astype(np.float32)
    chosen = np.flatnonzero(rng.uniform(size=batch) < JITTER_PROBABILITY)
    out = images.copy()
    if chosen.size == 0:
        return out
    shape = (chosen.size, 1, 1)
    hue, saturation, value = _rgb_to_hsv(images[chosen])
    value = _adjust_brightness(value, brightness[chosen].reshape(shape))
    value = _adjust_contrast(value, contrast[chosen].reshape(shape))
    out[chosen] = _hsv_to_rgb(hue + hue_shift[chosen].reshape(shape), saturation, value)
    return out


def crop_resize_rotate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random 95% crop, resize back and rotation of float32 images ``[B, H, W, C]``, one bilinear pass."""
    batch, height, width, _ = images.shape
    crop_height, crop_width = int(height * CROP_FRACTION), int(width * CROP_FRACTION)
    shift_y = rng.uniform(-(height - crop_height) / 2, (height - crop_height) / 2, batch)
    shift_x = rng.uniform(-(width - crop_width) / 2, (width - crop_width) / 2, batch)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, batch))
    # Output pixel (relative to the centre) -> rotate -> scale to the crop -> shift -> input pixel.
    rows = (np.arange(height) - (height / 2 - 0.5)).astype(np.float32)[None, :, None]
    cols = (np.arange(width) - (width / 2 - 0.5)).astype(np.float32)[None, None, :]
    cos = np.cos(angle).astype(np.float32)[:, None, None]
    sin = np.sin(angle).astype(np.float32)[:, None, None]
    offset_y = (shift_y + (height / 2 - 0.5)).astype(np.float32)[:, None, None]
    offset_x = (shift_x + (width / 2 - 0.5)).astype(np.float32)[:, None, None]
    source_y = np.float32(crop_height / height) * (cos * rows + sin * cols) + offset_y
    source_x = np.float32(crop_width / width) * (cos * cols - sin * rows) + offset_x
    return _bilinear(images, source_y, source_x)


def _bilinear(images: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sample ``images`` ``[B, H, W, C]`` at ``(y, x)`` ``[B, H', W']``; neighbours outside are 0."""
    batch, height, width, channels = images.shape
    flat = images.reshape(-1, channels)
    y0, x0 = np.floor(y), np.floor(x)
    fy, fx = y - y0, x - x0
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    base = (np.arange(batch) * height * width)[:, None, None]
    out = np.zeros((*y.shape, channels), dtype=images.dtype)
    for dy, weight_y in ((0, 1 - fy), (1, fy)):
        yy = y0 + dy
        inside_y = (yy >= 0) & (yy < height)
        row = base + np.clip(yy, 0, height - 1) * width
        for dx, weight_x in ((0, 1 - fx), (1, fx)):
            xx = x0 + dx
            weight = weight_y * weight_x * (inside_y & (xx >= 0) & (xx < width))
            out += flat[row + np.clip(xx, 0, width - 1)] * weight[..., None]
    return out


def augment_images(images: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Augment each camera's batch ``[B, H, W, 3]`` as openpi does in training.

    Cameras whose name contains ``"wrist"`` get colour jitter only. uint8 images are
    taken in [0, 255] and come back uint8 (rounded); float images are taken in
    [-1, 1] (the :class:`~openpi_core.observation.Observation` range) and come back
    float32. Shapes never change.

    Raises:
        InputError: an image that is not ``[B, H, W, 3]`` uint8 or float.
    """
    out = {}
    for name in sorted(images):  # a fixed order, so the draws do not depend on dict order
        image = np.asarray(images[name])
        if image.ndim != 4 or image.shape[-1] != 3:
            raise InputError(f"augment_images: image {name!r} should be [B, H, W, 3], got {list(image.shape)}")
        if image.dtype == np.uint8:
            unit = image.astype(np.float32) / 255.0
        elif image.dtype.kind == "f":
            unit = (image.astype(np.float32) + 1.0) / 2.0
        else:
            raise InputError(f"augment_images: image {name!r} should be uint8 or float, got {image.dtype}")
        if "wrist" not in name:
            unit = crop_resize_rotate(unit, rng)
        unit = color_jitter(unit, rng).astype(np.float32)
        if image.dtype == np.uint8:
            out[name] = np.clip(np.round(unit * 255.0), 0, 255).astype(np.uint8)
        else:
            out[name] = unit * 2.0 - 1.0
    return out


def augment_batch(batch: Mapping[str, Any], rng: np.random.Generator | int) -> dict[str, Any]:
    """``batch`` (the loader's layout, cameras under ``"image"``) with every camera augmented.

    ``rng`` is a generator or a seed; the same seed gives the same augmentation.

    Raises:
        InputError: ``batch`` has no ``"image"`` dict, or an image is malformed.
    """
    images = batch.get("image")
    if not isinstance(images, Mapping):
        raise InputError(f"augment_batch needs batch['image'] to be a dict of cameras; got keys {sorted(batch)}")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return {**batch, "image": augment_images(images, generator)}
