"""All conventions of the echo robot in one file.

The robot sends ``{"camera": uint8 [H, W, 3], "joints": float [STATE_DIM], "prompt": str}``
and consumes ``ACTION_DIM`` action values per step. Nothing is flipped or rescaled,
which makes it the simplest possible template for a new robot.
"""

from typing import Any

import attrs
import numpy as np

from openpi_core.schema import ArraySpec
from openpi_core.specs import AbstractEmbodiment
from openpi_core.transforms import Group

STATE_DIM = 4
ACTION_DIM = 4
MODEL_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


@attrs.frozen
class EchoInputs:
    """Robot dict -> model-ready dict; the one camera becomes ``base_0_rgb``."""

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        EchoEmbodiment().validate(data)
        camera = np.asarray(data["camera"], dtype=np.uint8)
        images = {key: np.zeros_like(camera) for key in MODEL_CAMERAS}
        images["base_0_rgb"] = camera
        result: dict[str, Any] = {
            "image": images,
            "image_mask": {key: np.bool_(key == "base_0_rgb") for key in MODEL_CAMERAS},
            "state": np.asarray(data["joints"], dtype=np.float32),
        }
        for key in ("actions", "prompt"):
            if key in data:
                result[key] = data[key]
        return result


@attrs.frozen
class EchoOutputs:
    """Model actions ``[H, model_dim]`` -> robot actions ``[H, ACTION_DIM]``."""

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "actions": np.asarray(data["actions"])[..., :ACTION_DIM]}


class EchoEmbodiment(AbstractEmbodiment):
    name = "echo"
    description = "Template robot: one camera, 4 joints, actions passed through."
    action_dim = ACTION_DIM
    default_prompt = "echo"
    observation_schema = {
        "camera": ArraySpec((None, None, 3), "u", description="RGB, HWC uint8"),
        "joints": ArraySpec((STATE_DIM,), "f"),
    }

    def transforms(self, model_family: str) -> Group:
        return Group(inputs=[EchoInputs()], outputs=[EchoOutputs()])

    def repack_transforms(self) -> Group:
        return Group()

    def example(self, seed: int = 0) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        return {
            "camera": rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8),
            "joints": rng.standard_normal(STATE_DIM).astype(np.float32),
            "prompt": "echo the joints",
        }
