"""The ALOHA bimanual robot (two 6-DoF Trossen ViperX arms, each with a parallel gripper).

What the robot sends for one observation (the keys of ``examples/aloha_sim`` and of the
ALOHA runtime)::

    {
        "images": {
            "cam_high": [3, H, W] uint8,          # required, the top-down scene camera
            "cam_low": [3, H, W] uint8,           # optional, accepted but not fed to the model
            "cam_left_wrist": [3, H, W] uint8,    # optional
            "cam_right_wrist": [3, H, W] uint8,   # optional
        },
        "state": [14] float,     # [left joints (6), left gripper, right joints (6), right gripper]
        "actions": [H, 14] float,  # training only, same layout as ``state``
        "prompt": str,           # optional
    }

Images may also come as ``[H, W, 3]``, and as floats in ``[0, 1]`` (LeRobot stores them so) or ``[-1, 1]``.

The π base models were pretrained on data recorded by Physical Intelligence's own ALOHA
runtime, whose joint sign conventions and gripper units differ from the standard ALOHA
stack. With ``adapt_to_pi`` (the default) the transforms translate between the two:

* joints 1, 2, 8 and 9 (shoulder and elbow of each arm) change sign both ways;
* the state's gripper (standard ALOHA: a normalized *linear* finger position) is turned
  into the normalized *angle* of the gripper motor that the π runtime recorded;
* action grippers go through a linear map between the π runtime's angular range and the
  standard ALOHA's normalized joint range, applied inversely on the way in (training
  targets) and forward on the way out (robot commands), so the two are exact inverses.
"""

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from openpi_core.errors import InputError
from openpi_core.robot_inputs import camera_image, check_model_family, prompt_text
from openpi_core.schema import ArraySpec, flatten_dict, validate
from openpi_core.specs import AbstractEmbodiment
from openpi_core.transforms import Group
from openpi_core.transforms.common import InjectDefaultPrompt, RepackTransform, make_bool_mask

"""Model families whose image slots and masks these transforms know."""

CAMERAS = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
"""Every camera name the robot may send; any other name is an error."""

STATE_DIM = 14
ACTION_DIM = 14
GRIPPER_DIMS = (6, 13)
"""Indices of the left and right gripper in ``state`` and ``actions``."""

JOINT_SIGNS = np.array([1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, 1, 1], dtype=np.float64)
"""Per-dimension sign between standard ALOHA and π runtime joints (its own inverse)."""

# Standard ALOHA normalizes the follower gripper's linear finger position (metres) to
# [0, 1] between these two values (PUPPET_GRIPPER_POSITION_CLOSE / _OPEN in the ALOHA code).
GRIPPER_POSITION_CLOSED = 0.01844
GRIPPER_POSITION_OPEN = 0.05800
# Geometry of the Interbotix gripper's crank (metres); position = f(motor angle).
GRIPPER_ARM_LENGTH = 0.036
GRIPPER_HORN_RADIUS = 0.022
# The π runtime normalized the gripper motor angle over encoder counts 2405..3110 of 4096,
# zero at 2048, which is this interval in radians.
PI_GRIPPER_ANGLE_MIN = 0.5476
PI_GRIPPER_ANGLE_MAX = 1.6296
# Standard ALOHA's normalized gripper *joint* command spans these motor angles
# (PUPPET_GRIPPER_JOINT_CLOSE / _OPEN in the ALOHA code).
ALOHA_GRIPPER_JOINT_CLOSED = -0.6213
ALOHA_GRIPPER_JOINT_OPEN = 1.4910

OBSERVATION_SCHEMA: Mapping[str, ArraySpec] = {
    "images/cam_high": ArraySpec((None, None, None), "uf", description="top camera, [3, H, W] or [H, W, 3]"),
    "images/cam_low": ArraySpec(
        (None, None, None), "uf", required=False, description="low camera; accepted, not used by the model"
    ),
    "images/cam_left_wrist": ArraySpec((None, None, None), "uf", required=False, description="left wrist camera"),
    "images/cam_right_wrist": ArraySpec((None, None, None), "uf", required=False, description="right wrist camera"),
    "state": ArraySpec((STATE_DIM,), "fiu", description="[left joints 6, left gripper, right joints 6, right gripper]"),
    "actions": ArraySpec((None, ACTION_DIM), "fiu", required=False, description="training targets, [H, 14]"),
}

MODEL_IMAGES = {
    "base_0_rgb": "cam_high",
    "left_wrist_0_rgb": "cam_left_wrist",
    "right_wrist_0_rgb": "cam_right_wrist",
}
"""Model image slot -> ALOHA camera; the same for every model family."""

LEROBOT_SIM_REPACK = {
    "images": {"cam_high": "observation.images.top"},
    "state": "observation.state",
    "actions": "action",
}
"""LeRobot keys of the simulated ALOHA datasets (``lerobot/aloha_sim_*``), one camera."""

LEROBOT_REAL_REPACK = {
    "images": {
        "cam_high": "observation.images.cam_high",
        "cam_left_wrist": "observation.images.cam_left_wrist",
        "cam_right_wrist": "observation.images.cam_right_wrist",
    },
    "state": "observation.state",
    "actions": "action",
}
"""LeRobot keys of real-robot ALOHA datasets (e.g. ``physical-intelligence/aloha_pen_uncap_diverse``)."""


def gripper_position_to_pi_angle(value: np.ndarray) -> np.ndarray:
    """Standard ALOHA normalized linear gripper position -> π runtime normalized gripper angle.

    0 (closed) maps to about -1.08 and 1 (open) to ``(pi/2 - 0.5476) / 1.082``: the π
    runtime's normalization range is narrower than the gripper's mechanical range.
    """
    position = GRIPPER_POSITION_CLOSED + value * (GRIPPER_POSITION_OPEN - GRIPPER_POSITION_CLOSED)
    # Law of cosines on the crank: inverts Interbotix's motor angle -> finger position map.
    sine = (GRIPPER_HORN_RADIUS**2 + position**2 - GRIPPER_ARM_LENGTH**2) / (2 * GRIPPER_HORN_RADIUS * position)
    angle = np.arcsin(np.clip(sine, -1.0, 1.0))
    return (angle - PI_GRIPPER_ANGLE_MIN) / (PI_GRIPPER_ANGLE_MAX - PI_GRIPPER_ANGLE_MIN)


def gripper_pi_to_aloha_joint(value: np.ndarray) -> np.ndarray:
    """π model gripper action -> standard ALOHA normalized gripper joint command.

    The model's gripper actions are angles offset by the π runtime's zero; they are not
    rescaled, only shifted and normalized over the standard ALOHA joint range.
    """
    angle = value + PI_GRIPPER_ANGLE_MIN
    return (angle - ALOHA_GRIPPER_JOINT_CLOSED) / (ALOHA_GRIPPER_JOINT_OPEN - ALOHA_GRIPPER_JOINT_CLOSED)


def gripper_aloha_joint_to_pi(value: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`gripper_pi_to_aloha_joint`, for training targets."""
    angle = ALOHA_GRIPPER_JOINT_CLOSED + value * (ALOHA_GRIPPER_JOINT_OPEN - ALOHA_GRIPPER_JOINT_CLOSED)
    return angle - PI_GRIPPER_ANGLE_MIN


@attrs.frozen
class AlohaInputs:
    """ALOHA observation (see the module docstring) -> model-ready dict.

    Returns ``image`` and ``image_mask`` keyed ``base_0_rgb`` (``cam_high``),
    ``left_wrist_0_rgb`` and ``right_wrist_0_rgb`` (``[H, W, 3]`` uint8; a missing wrist
    camera is black with mask False), ``state`` float32 ``[14]``, ``actions`` float32
    ``[H, 14]`` when the input has them, and ``prompt`` when given.
    """

    adapt_to_pi: bool = True

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(
            key
            for key in flatten_dict(data)
            if key.startswith("images/") and key.removeprefix("images/") not in CAMERAS
        )
        if unknown:
            raise InputError(f"aloha observation has unknown cameras {unknown}; expected a subset of {list(CAMERAS)}")
        validate(data, OBSERVATION_SCHEMA, what="aloha observation")

        cameras = {
            camera: camera_image("aloha", data["images"][camera], f"images/{camera}")
            for camera in MODEL_IMAGES.values()
            if camera in data["images"]
        }
        base = cameras["cam_high"]
        out_images = {slot: cameras.get(camera, np.zeros_like(base)) for slot, camera in MODEL_IMAGES.items()}
        out_masks = {slot: np.bool_(camera in cameras) for slot, camera in MODEL_IMAGES.items()}

        state = np.asarray(data["state"], dtype=np.float64)
        if self.adapt_to_pi:
            state = JOINT_SIGNS * state
            state[list(GRIPPER_DIMS)] = gripper_position_to_pi_angle(state[list(GRIPPER_DIMS)])
        result: dict[str, Any] = {
            "image": out_images,
            "image_mask": out_masks,
            "state": state.astype(np.float32),
        }

        if "actions" in data:
            actions = np.asarray(data["actions"], dtype=np.float64)
            if self.adapt_to_pi:
                actions = JOINT_SIGNS * actions
                actions[:, list(GRIPPER_DIMS)] = gripper_aloha_joint_to_pi(actions[:, list(GRIPPER_DIMS)])
            result["actions"] = actions.astype(np.float32)

        prompt = prompt_text("aloha", data)
        if prompt is not None:
            result["prompt"] = prompt
        return result


@attrs.frozen
class AlohaOutputs:
    """Model actions ``[H, A >= 14]`` -> ALOHA joint commands ``[H, 14]`` float32.

    Keeps the first 14 dimensions, then (with ``adapt_to_pi``) flips the joint signs back
    and maps the gripper actions to standard ALOHA's normalized gripper joint range.
    """

    adapt_to_pi: bool = True

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        actions = np.asarray(data["actions"])
        if actions.ndim < 1 or actions.shape[-1] < ACTION_DIM:
            raise InputError(
                f"aloha output transform needs actions [H, >={ACTION_DIM}], got shape {list(actions.shape)}"
            )
        actions = actions[..., :ACTION_DIM].astype(np.float64)
        if self.adapt_to_pi:
            actions = JOINT_SIGNS * actions
            actions[..., list(GRIPPER_DIMS)] = gripper_pi_to_aloha_joint(actions[..., list(GRIPPER_DIMS)])
        return {"actions": actions.astype(np.float32)}


@attrs.frozen
class AlohaEmbodiment(AbstractEmbodiment):
    """The ALOHA bimanual robot: 14-dim state and actions, up to four cameras.

    Args:
        adapt_to_pi: translate joint signs and gripper units between standard ALOHA and
            the π runtime the base models were trained on (see the module docstring).
            Turn it off only for data already recorded in the π runtime's convention.
        default_prompt: prompt used when an observation carries none (openpi's ALOHA
            presets use e.g. ``"Transfer cube"`` or ``"fold the towel"``).
        lerobot_repack: LeRobot key of each observation key, for
            :meth:`repack_transforms`; :data:`LEROBOT_SIM_REPACK` by default,
            :data:`LEROBOT_REAL_REPACK` for real-robot datasets.
    """

    name = "aloha"
    description = "ALOHA bimanual robot: 2 x (6 joints + gripper), top camera and two optional wrist cameras"
    action_dim = ACTION_DIM
    observation_schema = OBSERVATION_SCHEMA
    delta_action_mask = make_bool_mask(6, -1, 6, -1)
    """Which action dimensions openpi's ALOHA training configs turn into deltas from the
    current state (the joints, not the grippers), when they use delta actions at all
    (the real-robot presets do; ``pi0_aloha_sim`` does not)."""

    adapt_to_pi: bool = True
    default_prompt: str | None = None
    lerobot_repack: Mapping[str, Any] = LEROBOT_SIM_REPACK

    def transforms(self, model_family: str) -> Group:
        check_model_family("aloha", model_family)
        return Group(
            inputs=[InjectDefaultPrompt(self.default_prompt), AlohaInputs(adapt_to_pi=self.adapt_to_pi)],
            outputs=[AlohaOutputs(adapt_to_pi=self.adapt_to_pi)],
        )

    def repack_transforms(self) -> Group:
        return Group(inputs=[RepackTransform(self.lerobot_repack)])

    def example(self, seed: int = 0) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        state = rng.uniform(-1.0, 1.0, STATE_DIM)
        state[list(GRIPPER_DIMS)] = rng.uniform(0.0, 1.0, len(GRIPPER_DIMS))
        return {
            "images": {camera: rng.integers(0, 256, (3, 224, 224), dtype=np.uint8) for camera in CAMERAS},
            "state": state,
            "prompt": self.default_prompt or "do something",
        }
