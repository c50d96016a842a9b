"""Image helpers for the robot side, as in openpi's ``image_tools``: send small uint8 frames.

Resize camera frames to the model's 224x224 with :func:`resize_with_pad` (the same
numpy implementation the server's transforms use, matching openpi's PIL version)
and send them as uint8 (:func:`convert_to_uint8`): four times smaller than float32
and well inside the server's message limit.
"""

import numpy as np

from openpi_core.errors import InputError
from openpi_core.transforms.image import resize_with_pad

# Float images a hair outside [0, 1] from rounding are still accepted (and clipped).
_SLACK = 1e-3


def convert_to_uint8(img: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8 (``255 * img``, truncated like openpi); other dtypes unchanged.

    Raises:
        InputError: a float image with values outside [0, 1] (for example in [-1, 1]) or NaN.
    """
    if not np.issubdtype(img.dtype, np.floating):
        return img
    if img.size and (not np.isfinite(img).all() or img.min() < -_SLACK or img.max() > 1.0 + _SLACK):
        raise InputError(f"float image should have values in [0, 1], got range [{np.min(img)}, {np.max(img)}]")
    return (255 * np.clip(img, 0.0, 1.0)).astype(np.uint8)


__all__ = ["convert_to_uint8", "resize_with_pad"]
