"""Image resizing and conversion in plain numpy.

:func:`resize_with_pad` follows openpi's ``resize_with_pad`` (itself a copy of
``tf.image.resize_with_pad``): scale to fit inside the target keeping the aspect
ratio, then pad evenly with black. openpi resizes uint8 images with PIL's bilinear
filter and float images with ``jax.image.resize``; both are a triangle filter whose
support widens by the scale factor when shrinking (antialiasing). We compute that
filter in numpy without PIL: uint8 images reproduce PIL's fixed-point arithmetic
(two passes, each rounded to integers), float images are filtered in float64.
"""

import numpy as np

from openpi_core.errors import InputError

# PIL's fixed-point unit for 8-bit resampling: 22 fractional bits (Resample.c: 32 - 8 - 2).
_PIL_ONE = float(1 << 22)


def resize_with_pad(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``[..., H, W, C]`` images to ``[..., height, width, C]`` without distortion.

    The image is scaled by the largest factor that fits it inside the target, then
    centred; when the padding is odd the extra row or column goes at the bottom or
    right. Padding is 0 for uint8 images and -1 for float images, which must be in
    [-1, 1] (the result is clipped to that range). Images already of the target size
    are returned unchanged (the same object).

    Raises:
        InputError: fewer than 3 dimensions, an empty height, width or channel axis, or a
            dtype other than uint8 or float.
    """
    images = np.asarray(images)
    if images.ndim < 3 or 0 in images.shape[-3:]:
        raise InputError(f"images should have shape [..., H, W, C] with H, W, C >= 1, got {list(images.shape)}")
    is_uint8 = images.dtype == np.uint8
    if not is_uint8 and images.dtype.kind != "f":
        raise InputError(f"images should have dtype uint8 or float, got {images.dtype}")
    cur_height, cur_width = images.shape[-3:-1]
    if (cur_height, cur_width) == (height, width):
        return images

    ratio = max(cur_width / width, cur_height / height)
    # A very thin image would otherwise round down to zero rows or columns.
    resized_height = max(1, int(cur_height / ratio))
    resized_width = max(1, int(cur_width / ratio))

    batch_shape, channels = images.shape[:-3], images.shape[-1]
    flat = images.reshape(-1, cur_height, cur_width, channels).astype(np.float64)
    resized = _resize_bilinear(flat, resized_height, resized_width, pil_uint8=is_uint8)
    if is_uint8:
        fill = 0.0
    else:
        resized = np.clip(resized, -1.0, 1.0)
        fill = -1.0

    top, extra_rows = divmod(height - resized_height, 2)
    left, extra_cols = divmod(width - resized_width, 2)
    padded = np.pad(
        resized,
        ((0, 0), (top, top + extra_rows), (left, left + extra_cols), (0, 0)),
        constant_values=fill,
    )
    return padded.astype(images.dtype).reshape(*batch_shape, height, width, channels)


def to_uint8_hwc(image: np.ndarray) -> np.ndarray:
    """Convert one image, ``[H, W, C]`` or ``[C, H, W]`` with C in (1, 3), to uint8 ``[H, W, C]``.

    An image is taken as channels-first when its first axis has 1 or 3 entries and
    its last does not. Float images in [0, 1] become ``(255 * image).astype(np.uint8)``,
    truncated toward zero exactly as openpi's policies convert them (the published
    checkpoints saw images converted that way; rounding would move about half the
    pixels by one grey level). Float images with any negative value are taken to be
    in [-1, 1], mapped to [0, 1] and converted the same way. uint8 images only change
    layout.

    Raises:
        InputError: not 3 dimensions, floats outside [-1, 1], or a dtype that is
            neither uint8 nor float.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"image should have shape [H, W, C] or [C, H, W], got {list(image.shape)}")
    if image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.moveaxis(image, 0, -1)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype.kind != "f":
        raise InputError(f"image should have dtype uint8 or float, got {image.dtype}")
    low, high = float(image.min(initial=0.0)), float(image.max(initial=0.0))
    # A little slack for values that left [-1, 1] through float rounding only.
    if low < -1.0 - 1e-3 or high > 1.0 + 1e-3:
        raise InputError(f"float image should have values in [0, 1] or [-1, 1], got range [{low}, {high}]")
    unit = (image + 1.0) / 2.0 if low < 0.0 else image
    # In the image's own float dtype, like openpi's ``255 * img``; the clip only absorbs the slack above.
    return np.clip(255 * unit, 0, 255).astype(np.uint8)


def _resize_bilinear(images: np.ndarray, height: int, width: int, *, pil_uint8: bool) -> np.ndarray:
    """Resize float64 ``[N, H, W, C]`` images to ``[N, height, width, C]``.

    Like PIL, the width is resized first, then the height. With ``pil_uint8`` each
    pass reproduces PIL's 8-bit arithmetic: weights quantised to 22 fractional bits
    and the result rounded half up to an integer after each pass. The products are
    integers below 2**53, so float64 computes them exactly.
    """
    out = _resize_axis(images, width, axis=2, pil_uint8=pil_uint8)
    return _resize_axis(out, height, axis=1, pil_uint8=pil_uint8)


def _resize_axis(values: np.ndarray, out_size: int, *, axis: int, pil_uint8: bool) -> np.ndarray:
    """Resample ``values`` along ``axis`` (1 or 2 of ``[N, H, W, C]``) to ``out_size`` entries."""
    in_size = values.shape[axis]
    if in_size == out_size:
        return values
    indices, weights = _filter_taps(in_size, out_size)
    if pil_uint8:
        weights = np.floor(weights * _PIL_ONE + 0.5)
    shape = [1] * values.ndim
    shape[axis] = out_size
    # One pass per tap: a few whole-array products are much faster than a gather with
    # an extra small axis to sum over.
    out = sum(np.take(values, indices[:, k], axis=axis) * weights[:, k].reshape(shape) for k in range(indices.shape[1]))
    if pil_uint8:
        out = np.clip(np.floor((out + _PIL_ONE / 2) / _PIL_ONE), 0, 255)
    return out


def _filter_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Input indices and weights ``[out_size, taps]`` of PIL's bilinear filter.

    Output pixel ``i`` is centred at ``(i + 0.5) * in_size / out_size`` in input
    coordinates and averages the input pixels under a triangle of half-width
    ``max(1, in_size / out_size)`` around it. Each row of weights is normalised, so
    weight cut off at the border is redistributed rather than lost; taps that fall
    outside the image get index 0 and weight 0.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    centers = (np.arange(out_size) + 0.5) * scale
    first = np.clip(np.floor(centers - support + 0.5).astype(np.int64), 0, in_size - 1)
    taps = int(np.ceil(2 * support)) + 1
    indices = first[:, None] + np.arange(taps)[None, :]
    weights = np.clip(1.0 - np.abs(indices + 0.5 - centers[:, None]) / support, 0.0, None)
    inside = indices < in_size
    weights = np.where(inside, weights, 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.where(inside, indices, 0), weights
