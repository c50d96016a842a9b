"""Small checks every embodiment's input transforms share.

Each takes the robot's name so its error message says which robot complained.
"""

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from openpi_core.errors import InputError
from openpi_core.transforms.image import to_uint8_hwc

MODEL_FAMILIES = ("pi0", "pi05", "pi0_fast")
"""The model families the built-in embodiments have transforms for."""


def check_model_family(robot: str, model_family: str) -> None:
    """Raise :class:`InputError` unless ``model_family`` is one of :data:`MODEL_FAMILIES`."""
    if model_family not in MODEL_FAMILIES:
        raise InputError(f"{robot} has no transforms for model family {model_family!r}; supported: {MODEL_FAMILIES}")


def camera_image(robot: str, image: Any, key: str) -> np.ndarray:
    """A CHW or HWC, uint8 or float camera image as HWC uint8; errors name the key."""
    try:
        return to_uint8_hwc(image)
    except InputError as error:
        raise InputError(f"{robot} observation[{key!r}]: {error}") from error


def prompt_text(robot: str, data: Mapping[str, Any]) -> str | None:
    """The ``prompt`` of an observation as ``str`` (or None when absent)."""
    prompt = data.get("prompt")
    if isinstance(prompt, np.ndarray) and prompt.ndim == 0:
        # Datasets and the wire format may carry the text as a 0-d numpy string array.
        prompt = prompt.item()
    if isinstance(prompt, bytes):
        prompt = prompt.decode("utf-8")
    if prompt is not None and not isinstance(prompt, str):
        raise InputError(f"{robot} observation['prompt'] should be a string, got {type(prompt).__name__}")
    return prompt


def copy_training_fields(robot: str, data: Mapping[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Add the observation's ``actions`` (float32, training only) and ``prompt`` to the
    model-ready ``result``, when present; returns ``result``."""
    if "actions" in data:
        result["actions"] = np.asarray(data["actions"], dtype=np.float32)
    prompt = prompt_text(robot, data)
    if prompt is not None:
        result["prompt"] = prompt
    return result


@attrs.frozen
class CropActions:
    """Model actions ``[H, A >= action_dim]`` -> the robot's ``[H, action_dim]`` float32
    (its leading dimensions)."""

    robot: str
    action_dim: int

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        actions = np.asarray(data["actions"])
        if actions.ndim < 1 or actions.shape[-1] < self.action_dim:
            raise InputError(
                f"{self.robot} output transform needs actions [H, >={self.action_dim}], got shape {list(actions.shape)}"
            )
        return {"actions": actions[..., : self.action_dim].astype(np.float32)}
