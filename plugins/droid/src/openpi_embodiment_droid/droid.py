"""The DROID platform: a 7-DoF Franka Panda arm with a Robotiq gripper.

What the robot sends for one observation (the keys of ``examples/droid/main.py``)::

    {
        "observation/exterior_image_1_left": [H, W, 3] uint8,  # the chosen third-person camera
        "observation/wrist_image_left": [H, W, 3] uint8,
        "observation/exterior_image_2_left": [H, W, 3] uint8,  # optional, not fed to the model
        "observation/joint_position": [7] float,
        "observation/gripper_position": [1] float (a scalar is accepted),
        "actions": [H, 8] float,   # training only: 7 joint velocities + gripper position
        "prompt": str,             # optional
    }

Images may also come as ``[3, H, W]``, and as floats in ``[0, 1]`` or ``[-1, 1]``.
The model state is ``[joint_position (7), gripper_position (1)]``; the robot gets back
the first 8 action dimensions (joint velocities and an absolute gripper position, which
the client binarizes).

The π0 and π0.5 models see the exterior camera as ``base_0_rgb``, the wrist camera as
``left_wrist_0_rgb`` and a masked-out black ``right_wrist_0_rgb``. π0-FAST DROID
checkpoints were trained with other slot names (``base_0_rgb``, ``base_1_rgb``,
``wrist_0_rgb``, the second base slot black) and with every mask True, padding
included; the transforms reproduce that so the checkpoints see what they were trained on.
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

BASE_IMAGE = "observation/exterior_image_1_left"
WRIST_IMAGE = "observation/wrist_image_left"
JOINT_POSITION = "observation/joint_position"
GRIPPER_POSITION = "observation/gripper_position"

JOINT_DIM = 7
STATE_DIM = 8
ACTION_DIM = 8

OBSERVATION_SCHEMA: Mapping[str, ArraySpec] = {
    BASE_IMAGE: ArraySpec((None, None, None), "uf", description="third-person camera, [H, W, 3] or [3, H, W]"),
    WRIST_IMAGE: ArraySpec((None, None, None), "uf", description="wrist camera, [H, W, 3] or [3, H, W]"),
    "observation/exterior_image_2_left": ArraySpec(
        (None, None, None), "uf", required=False, description="second third-person camera; not used by the model"
    ),
    JOINT_POSITION: ArraySpec((JOINT_DIM,), "fiu", description="arm joint angles (rad)"),
    GRIPPER_POSITION: ArraySpec((1,), "fiu", description="gripper opening in [0, 1]"),
    "actions": ArraySpec((None, ACTION_DIM), "fiu", required=False, description="training targets, [H, 8]"),
}

LEROBOT_REPACK = {
    "observation/exterior_image_1_left": "exterior_image_1_left",
    "observation/exterior_image_2_left": "exterior_image_2_left",
    "observation/wrist_image_left": "wrist_image_left",
    "observation/joint_position": "joint_position",
    "observation/gripper_position": "gripper_position",
    "actions": "actions",
    "prompt": "prompt",
}
"""LeRobot keys of DROID data converted with openpi's ``convert_droid_data_to_lerobot.py``."""


@attrs.frozen
class DroidInputs:
    """DROID observation (see the module docstring) -> model-ready dict.

    Returns ``image`` and ``image_mask`` (three ``[H, W, 3]`` uint8 slots whose names and
    masks depend on ``model_family``), ``state`` float32 ``[8]``, ``actions`` float32
    ``[H, 8]`` when the input has them, and ``prompt`` when given.
    """

    model_family: str = attrs.field(validator=lambda _, __, family: check_model_family("droid", family))

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        gripper = data.get(GRIPPER_POSITION)
        if gripper is not None and np.ndim(gripper) == 0:
            # Clients often send the gripper as a bare float; it is one state dimension.
            data = {**data, GRIPPER_POSITION: np.reshape(gripper, (1,))}
        validate(data, OBSERVATION_SCHEMA, what="droid observation")

        base = camera_image("droid", data[BASE_IMAGE], BASE_IMAGE)
        wrist = camera_image("droid", data[WRIST_IMAGE], WRIST_IMAGE)
        black = np.zeros_like(base)
        if self.model_family == "pi0_fast":
            images = {"base_0_rgb": base, "base_1_rgb": black, "wrist_0_rgb": wrist}
            masks = {"base_0_rgb": np.True_, "base_1_rgb": np.True_, "wrist_0_rgb": np.True_}
        else:
            images = {"base_0_rgb": base, "left_wrist_0_rgb": wrist, "right_wrist_0_rgb": black}
            masks = {"base_0_rgb": np.True_, "left_wrist_0_rgb": np.True_, "right_wrist_0_rgb": np.False_}

        state = np.concatenate([np.asarray(data[JOINT_POSITION]), np.asarray(data[GRIPPER_POSITION])])
        result: dict[str, Any] = {"image": images, "image_mask": masks, "state": state.astype(np.float32)}
        return copy_training_fields("droid", data, result)


@attrs.frozen
class DroidEmbodiment(AbstractEmbodiment):
    """The DROID Franka platform: 8-dim state and actions, one exterior and one wrist camera.

    Args:
        default_prompt: prompt used when an observation carries none.
    """

    name = "droid"
    description = "DROID Franka Panda: 7 joints + gripper, exterior and wrist cameras, joint-velocity actions"
    action_dim = ACTION_DIM
    observation_schema = OBSERVATION_SCHEMA
    delta_action_mask = make_bool_mask(7, -1)
    """For DROID data with absolute joint-*position* actions (openpi's RLDS joint-position
    configs): the joints become deltas from the current state, the gripper stays absolute.
    The default joint-velocity actions use no delta transform."""

    default_prompt: str | None = None

    def transforms(self, model_family: str) -> Group:
        return Group(
            inputs=[InjectDefaultPrompt(self.default_prompt), DroidInputs(model_family=model_family)],
            outputs=[CropActions("droid", ACTION_DIM)],
        )

    def repack_transforms(self) -> Group:
        return Group(inputs=[RepackTransform(LEROBOT_REPACK)])

    def example(self, seed: int = 0) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        return {
            BASE_IMAGE: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            WRIST_IMAGE: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            JOINT_POSITION: rng.uniform(-1.0, 1.0, JOINT_DIM),
            GRIPPER_POSITION: rng.uniform(0.0, 1.0, 1),
            "prompt": self.default_prompt or "do something",
        }
