"""A Universal Robots UR5(e) arm with a gripper, as in openpi's ``examples/ur5``.

What the client sends for one observation::

    {
        "base_rgb": [H, W, 3] uint8,   # third-person camera
        "wrist_rgb": [H, W, 3] uint8,  # wrist camera
        "joints": [6] float,           # arm joint angles (rad)
        "gripper": [1] float (a scalar is accepted),
        "actions": [H, 7] float,       # training only: 6 joint targets + gripper
        "prompt": str,                 # optional
    }

Images may also come as ``[3, H, W]``, and as floats in ``[0, 1]`` or ``[-1, 1]``.
The model state is ``[joints (6), gripper (1)]``; the robot gets back the first 7
action dimensions.

The base camera is ``base_0_rgb``, the wrist camera ``left_wrist_0_rgb``; the arm has
no right wrist, so ``right_wrist_0_rgb`` is black, masked out for π0 and π0.5 and left
unmasked for π0-FAST, which was trained that way.
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

BASE_IMAGE = "base_rgb"
WRIST_IMAGE = "wrist_rgb"

JOINT_DIM = 6
STATE_DIM = 7
ACTION_DIM = 7

OBSERVATION_SCHEMA: Mapping[str, ArraySpec] = {
    BASE_IMAGE: ArraySpec((None, None, None), "uf", description="third-person camera, [H, W, 3] or [3, H, W]"),
    WRIST_IMAGE: ArraySpec((None, None, None), "uf", description="wrist camera, [H, W, 3] or [3, H, W]"),
    "joints": ArraySpec((JOINT_DIM,), "fiu", description="arm joint angles (rad)"),
    "gripper": ArraySpec((1,), "fiu", description="gripper position"),
    "actions": ArraySpec((None, ACTION_DIM), "fiu", required=False, description="training targets, [H, 7]"),
}

LEROBOT_REPACK = {
    "base_rgb": "image",
    "wrist_rgb": "wrist_image",
    "joints": "joints",
    "gripper": "gripper",
    # openpi's UR5 example leaves this line out, which would drop the training targets.
    "actions": "actions",
    "prompt": "prompt",
}
"""LeRobot keys of a UR5 dataset laid out as in openpi's UR5 example."""


@attrs.frozen
class UR5Inputs:
    """UR5 observation (see the module docstring) -> model-ready dict.

    Returns ``image`` and ``image_mask`` keyed ``base_0_rgb``, ``left_wrist_0_rgb`` and
    ``right_wrist_0_rgb`` (``[H, W, 3]`` uint8), ``state`` float32 ``[7]``, ``actions``
    float32 ``[H, 7]`` when the input has them, and ``prompt`` when given.
    """

    model_family: str = attrs.field(validator=lambda _, __, family: check_model_family("ur5", family))

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        gripper = data.get("gripper")
        if gripper is not None and np.ndim(gripper) == 0:
            # Clients often send the gripper as a bare float; it is one state dimension.
            data = {**data, "gripper": np.reshape(gripper, (1,))}
        validate(data, OBSERVATION_SCHEMA, what="ur5 observation")

        base = camera_image("ur5", data[BASE_IMAGE], BASE_IMAGE)
        wrist = camera_image("ur5", data[WRIST_IMAGE], WRIST_IMAGE)
        state = np.concatenate([np.asarray(data["joints"]), np.asarray(data["gripper"])])
        result: dict[str, Any] = {
            "image": {"base_0_rgb": base, "left_wrist_0_rgb": wrist, "right_wrist_0_rgb": np.zeros_like(base)},
            "image_mask": {
                "base_0_rgb": np.True_,
                "left_wrist_0_rgb": np.True_,
                "right_wrist_0_rgb": np.bool_(self.model_family == "pi0_fast"),
            },
            "state": state.astype(np.float32),
        }
        return copy_training_fields("ur5", data, result)


@attrs.frozen
class UR5Embodiment(AbstractEmbodiment):
    """A UR5(e) arm: 6 joints + gripper state and actions, base and wrist cameras.

    Args:
        default_prompt: prompt used when an observation carries none.
    """

    name = "ur5"
    description = "UR5(e) arm: 6 joints + gripper, base and wrist cameras, absolute joint actions"
    action_dim = ACTION_DIM
    observation_schema = OBSERVATION_SCHEMA
    delta_action_mask = make_bool_mask(6, -1)
    """openpi's UR5 example trains on joint deltas from the current state (first six
    dimensions) and keeps the gripper absolute."""

    default_prompt: str | None = None

    def transforms(self, model_family: str) -> Group:
        return Group(
            inputs=[InjectDefaultPrompt(self.default_prompt), UR5Inputs(model_family=model_family)],
            outputs=[CropActions("ur5", ACTION_DIM)],
        )

    def repack_transforms(self) -> Group:
        return Group(inputs=[RepackTransform(LEROBOT_REPACK)])

    def example(self, seed: int = 0) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        return {
            BASE_IMAGE: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            WRIST_IMAGE: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "joints": rng.uniform(-np.pi, np.pi, JOINT_DIM),
            "gripper": rng.uniform(0.0, 1.0, 1),
            "prompt": self.default_prompt or "do something",
        }
