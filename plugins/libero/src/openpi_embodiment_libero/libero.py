"""The LIBERO simulated benchmark: a Franka Panda arm under end-effector control.

What the client sends for one observation (the keys of ``examples/libero/main.py``)::

    {
        "observation/image": [H, W, 3] uint8,        # agent-view camera
        "observation/wrist_image": [H, W, 3] uint8,  # eye-in-hand camera
        "observation/state": [8] float,  # eef position (3), eef axis-angle (3), gripper finger positions (2)
        "actions": [H, 7] float,         # training only: eef delta (6) + gripper
        "prompt": str,                   # optional, the task description
    }

Images may also come as ``[3, H, W]``, and as floats in ``[0, 1]`` or ``[-1, 1]``.
The state goes to the model unchanged; the robot gets back the first 7 action dimensions.

The agent view is ``base_0_rgb``, the wrist view ``left_wrist_0_rgb``; the unused
``right_wrist_0_rgb`` slot is black. π0 and π0.5 mask it out, π0-FAST was trained with
it unmasked, so its mask is True for π0-FAST.
"""

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from openpi_core.robot_inputs import CropActions, camera_image, check_model_family, copy_training_fields
from openpi_core.schema import ArraySpec, validate
from openpi_core.specs import AbstractEmbodiment
from openpi_core.transforms import Group
from openpi_core.transforms.common import InjectDefaultPrompt, RepackTransform, make_bool_mask

"""Model families whose image slots and masks these transforms know."""

BASE_IMAGE = "observation/image"
WRIST_IMAGE = "observation/wrist_image"
STATE = "observation/state"

STATE_DIM = 8
ACTION_DIM = 7

OBSERVATION_SCHEMA: Mapping[str, ArraySpec] = {
    BASE_IMAGE: ArraySpec((None, None, None), "uf", description="agent-view camera, [H, W, 3] or [3, H, W]"),
    WRIST_IMAGE: ArraySpec((None, None, None), "uf", description="wrist camera, [H, W, 3] or [3, H, W]"),
    STATE: ArraySpec((STATE_DIM,), "fiu", description="eef position 3, eef axis-angle 3, gripper fingers 2"),
    "actions": ArraySpec((None, ACTION_DIM), "fiu", required=False, description="training targets, [H, 7]"),
}

LEROBOT_REPACK = {
    "observation/image": "image",
    "observation/wrist_image": "wrist_image",
    "observation/state": "state",
    "actions": "actions",
    "prompt": "prompt",
}
"""LeRobot keys of the LIBERO datasets (``physical-intelligence/libero``)."""


@attrs.frozen
class LiberoInputs:
    """LIBERO observation (see the module docstring) -> model-ready dict.

    Returns ``image`` and ``image_mask`` keyed ``base_0_rgb``, ``left_wrist_0_rgb`` and
    ``right_wrist_0_rgb`` (``[H, W, 3]`` uint8), ``state`` float32 ``[8]``, ``actions``
    float32 ``[H, 7]`` when the input has them, and ``prompt`` when given.
    """

    model_family: str = attrs.field(validator=lambda _, __, family: check_model_family("libero", family))

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        validate(data, OBSERVATION_SCHEMA, what="libero observation")
        base = camera_image("libero", data[BASE_IMAGE], BASE_IMAGE)
        wrist = camera_image("libero", data[WRIST_IMAGE], WRIST_IMAGE)
        result: dict[str, Any] = {
            "image": {"base_0_rgb": base, "left_wrist_0_rgb": wrist, "right_wrist_0_rgb": np.zeros_like(base)},
            "image_mask": {
                "base_0_rgb": np.True_,
                "left_wrist_0_rgb": np.True_,
                "right_wrist_0_rgb": np.bool_(self.model_family == "pi0_fast"),
            },
            "state": np.asarray(data[STATE], dtype=np.float32),
        }
        return copy_training_fields("libero", data, result)


@attrs.frozen
class LiberoEmbodiment(AbstractEmbodiment):
    """The LIBERO benchmark's Franka arm: 8-dim state, 7-dim end-effector delta actions, two cameras.

    Args:
        default_prompt: prompt used when an observation carries none (LIBERO clients
            always send the task description).
    """

    name = "libero"
    description = "LIBERO simulated Franka: eef pose + gripper state, eef delta actions, agent-view and wrist cameras"
    action_dim = ACTION_DIM
    observation_schema = OBSERVATION_SCHEMA
    delta_action_mask = make_bool_mask(6, -1)
    """LIBERO actions are already deltas; some older openpi π0 LIBERO checkpoints were
    nevertheless trained with this extra delta transform (six eef dimensions relative to
    the state, gripper absolute). Use it only with such checkpoints."""

    default_prompt: str | None = None

    def transforms(self, model_family: str) -> Group:
        return Group(
            inputs=[InjectDefaultPrompt(self.default_prompt), LiberoInputs(model_family=model_family)],
            outputs=[CropActions("libero", ACTION_DIM)],
        )

    def repack_transforms(self) -> Group:
        return Group(inputs=[RepackTransform(LEROBOT_REPACK)])

    def example(self, seed: int = 0) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        return {
            BASE_IMAGE: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            WRIST_IMAGE: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            STATE: rng.uniform(-1.0, 1.0, STATE_DIM),
            "prompt": self.default_prompt or "do something",
        }
