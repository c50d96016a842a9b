"""The backend-neutral model input (:class:`Observation`) and output (:class:`Actions`).

Both hold numpy arrays with a leading batch axis ``B``. Backends convert them to
their own arrays at the model boundary. The nested-dict form used by transforms
(``{"image": {...}, "image_mask": {...}, "state": ..., "tokenized_prompt": ...}``)
converts to and from these classes with ``from_dict`` / ``to_dict``.
"""

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from openpi_core.errors import InputError

IMAGE_RESOLUTION = (224, 224)
"""Height and width every camera image has when it reaches the model."""

PI0_IMAGE_KEYS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
"""Camera names of π0 and π0.5, in the order their tokens enter the prefix."""

PI0_FAST_IMAGE_KEYS = ("base_0_rgb", "base_1_rgb", "wrist_0_rgb")
"""Camera names of π0-FAST, in prefix order."""


def image_to_float(image: np.ndarray) -> np.ndarray:
    """uint8 ``[0, 255]`` images become float32 ``[-1, 1]``; float images pass as float32."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0 * 2.0 - 1.0
    return image.astype(np.float32, copy=False)


def _optional(dtype: Any) -> Any:
    return attrs.field(default=None, converter=attrs.converters.optional(lambda a: np.asarray(a, dtype=dtype)))


def _fail(field: str, expected: str, actual: Any) -> InputError:
    return InputError(f"Observation.{field} should be {expected}, got {actual}")


@attrs.frozen
class Observation:
    """Everything a π-family model reads for a batch of ``B`` examples.

    Attributes:
        images: camera name -> float32 ``[B, H, W, 3]`` in ``[-1, 1]``.
        image_masks: camera name -> bool ``[B]``; False marks a missing camera.
        state: float32 ``[B, S]`` robot state (padded to the model's action dim).
        tokenized_prompt: int32 ``[B, L]`` prompt token ids, or None.
        tokenized_prompt_mask: bool ``[B, L]``, True on real tokens, or None.
        token_ar_mask: int32 ``[B, L]`` π0-FAST autoregressive flags, or None.
        token_loss_mask: bool ``[B, L]`` π0-FAST loss mask, or None.
    """

    images: dict[str, np.ndarray] = attrs.field(converter=lambda d: {k: image_to_float(v) for k, v in d.items()})
    image_masks: dict[str, np.ndarray] = attrs.field(
        converter=lambda d: {k: np.asarray(v, dtype=bool) for k, v in d.items()}
    )
    state: np.ndarray = attrs.field(converter=lambda a: np.asarray(a, dtype=np.float32))
    tokenized_prompt: np.ndarray | None = _optional(np.int32)
    tokenized_prompt_mask: np.ndarray | None = _optional(bool)
    token_ar_mask: np.ndarray | None = _optional(np.int32)
    token_loss_mask: np.ndarray | None = _optional(bool)

    def __attrs_post_init__(self) -> None:
        if self.state.ndim != 2:
            raise _fail("state", "[B, S]", list(self.state.shape))
        batch = self.state.shape[0]
        if set(self.images) != set(self.image_masks):
            raise _fail("image_masks", f"keys {sorted(self.images)} (the image keys)", sorted(self.image_masks))
        if not self.images:
            raise _fail("images", "at least one camera", "none")
        for name, image in self.images.items():
            if image.ndim != 4 or image.shape[0] != batch or image.shape[-1] != 3:
                raise _fail(f"images[{name!r}]", f"[{batch}, H, W, 3]", list(image.shape))
            mask = self.image_masks[name]
            if mask.shape != (batch,):
                raise _fail(f"image_masks[{name!r}]", f"[{batch}]", list(mask.shape))
        if (self.tokenized_prompt is None) != (self.tokenized_prompt_mask is None):
            raise _fail("tokenized_prompt_mask", "given exactly when tokenized_prompt is", "only one of them")
        if self.tokenized_prompt is not None:
            if self.tokenized_prompt.ndim != 2 or self.tokenized_prompt.shape[0] != batch:
                raise _fail("tokenized_prompt", f"[{batch}, L]", list(self.tokenized_prompt.shape))
            for field in ("tokenized_prompt_mask", "token_ar_mask", "token_loss_mask"):
                value = getattr(self, field)
                if value is not None and value.shape != self.tokenized_prompt.shape:
                    raise _fail(field, f"{list(self.tokenized_prompt.shape)} like tokenized_prompt", list(value.shape))

    @property
    def batch_size(self) -> int:
        return int(self.state.shape[0])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Observation":
        """Build from the nested transform dict (``image``, ``image_mask``, ``state``, …).

        Raises:
            InputError: a required key is missing or an array has the wrong shape.
        """
        missing = [key for key in ("image", "image_mask", "state") if key not in data]
        if missing:
            raise InputError(f"observation dict is missing {missing}; got keys {sorted(data)}")
        return cls(
            images=dict(data["image"]),
            image_masks=dict(data["image_mask"]),
            state=data["state"],
            tokenized_prompt=data.get("tokenized_prompt"),
            tokenized_prompt_mask=data.get("tokenized_prompt_mask"),
            token_ar_mask=data.get("token_ar_mask"),
            token_loss_mask=data.get("token_loss_mask"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The nested transform dict; optional fields that are None are left out."""
        data: dict[str, Any] = {"image": dict(self.images), "image_mask": dict(self.image_masks), "state": self.state}
        for field in ("tokenized_prompt", "tokenized_prompt_mask", "token_ar_mask", "token_loss_mask"):
            value = getattr(self, field)
            if value is not None:
                data[field] = value
        return data


@attrs.frozen
class Actions:
    """A batch of action chunks: float32 ``[B, H, A]`` (batch, horizon, action dim)."""

    values: np.ndarray = attrs.field(converter=lambda a: np.asarray(a, dtype=np.float32))

    def __attrs_post_init__(self) -> None:
        if self.values.ndim != 3:
            raise InputError(f"Actions.values should be [B, H, A], got {list(self.values.shape)}")
        if not np.all(np.isfinite(self.values)):
            raise InputError("Actions.values should be finite, got NaN or inf")

    @property
    def horizon(self) -> int:
        return int(self.values.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.values.shape[2])
