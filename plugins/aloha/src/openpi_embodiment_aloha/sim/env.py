"""gym-aloha's simulated ALOHA tasks, headless, with observations in the ALOHA embodiment's format.

:class:`AlohaSimEnv` builds gym-aloha's own physics (its XML assets), its task classes
(reset, action mapping, reward) and its ``dm_control`` stepping (``control_timestep``
0.02 s, 10 physics substeps of 2 ms), so rewards are gym-aloha's to the bit. Only the
observation differs: gym-aloha renders three 480x640 cameras each step and keeps one;
here ``render`` picks what is drawn:

* ``"faithful"``: the ``top`` camera at 480x640 through dm_control, exactly the image
  gym-aloha returns (openpi's path: the policy's transforms then resize it with padding
  to 224x224, another 8 ms).
* ``"fast"``: the same camera rendered directly at the size that resize-with-pad would
  give (168x224 for ``image_size`` 224, keeping 3:4) through ``mujoco.Renderer``, with
  shadows and multisampling off, then padded with black bars exactly where
  :func:`openpi_core.transforms.image.resize_with_pad` pads, so the image is already
  ``image_size`` square. It differs from the faithful image after resize-with-pad by about
  2 grey levels on average (shadows and antialiased edges).
* ``"none"``: no image (``images`` is empty); for the scripted expert's success rate.

Measured per ``env.step`` (physics, reward and observation) with
``benchmarks/aloha_expert.py`` on 2 shared x86 cores rendering in software through EGL:
``"none"`` 0.2-0.4 ms, ``"fast"`` 6.5-9 ms, ``"faithful"`` 90-105 ms; gym-aloha's own
``AlohaEnv.step`` (three cameras) took about 250 ms on the same machine.

An observation is what the ALOHA embodiment's input transform reads, so
``policy.infer(obs)`` takes it as it is (add ``"prompt": env.prompt`` for the task's text)::

    {"state": float32 [14], "images": {"cam_high": uint8 [H, W, 3]}}

``state`` is gym-aloha's ``agent_pos``: per arm 6 joint angles (rad) and the gripper's
finger position normalized to 0 (closed) .. 1 (open). An action is float ``[14]`` in
gym-aloha's action space: per arm 6 absolute joint targets (rad) and a normalized
gripper target (0 closed, 1 open).

Rendering needs an OpenGL backend chosen before MuJoCo is first imported: the package
defaults ``MUJOCO_GL`` to ``egl`` on Linux without a display (see
:mod:`openpi_embodiment_aloha.sim`).
"""

import collections
import copy
from typing import Any

import mujoco
import numpy as np
from dm_control import mujoco as dm_mujoco
from dm_control.rl import control
from gym_aloha import constants as gym_constants
from gym_aloha import utils as gym_utils
from gym_aloha.tasks import sim as gym_sim

from openpi_core.errors import InputError

TASKS = ("transfer-cube", "insertion")
PROMPTS = {"transfer-cube": "Transfer cube", "insertion": "Insert the peg into the socket."}
"""Task text: openpi's ``pi0_aloha_sim`` default prompt, and LeRobot's ``aloha_sim_insertion_human`` task."""
MAX_REWARD = 4
EPISODE_STEPS = {"transfer-cube": 300, "insertion": 300}
"""gym-aloha's episode length (``max_episode_steps`` of both registered environments)."""
RENDER_MODES = ("fast", "faithful", "none")
ACTION_DIM = 14
FAITHFUL_HEIGHT, FAITHFUL_WIDTH = 480, 640
"""gym-aloha's camera resolution."""


class _HeadlessTransferCube(gym_sim.TransferCubeTask):
    """gym-aloha's transfer-cube task without its three-camera rendering in each observation."""

    def get_observation(self, physics: Any) -> collections.OrderedDict:
        return collections.OrderedDict()


class _HeadlessInsertion(gym_sim.InsertionTask):
    """gym-aloha's insertion task without its three-camera rendering in each observation."""

    def get_observation(self, physics: Any) -> collections.OrderedDict:
        return collections.OrderedDict()


_TASK_SETUP = {
    "transfer-cube": ("bimanual_viperx_transfer_cube.xml", _HeadlessTransferCube),
    "insertion": ("bimanual_viperx_insertion.xml", _HeadlessInsertion),
}


def letterbox_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(h, w)`` that :func:`~openpi_core.transforms.image.resize_with_pad` scales a
    ``height x width`` image to inside a ``size x size`` square (same arithmetic)."""
    ratio = max(width / size, height / size)
    return max(1, int(height / ratio)), max(1, int(width / ratio))


def _initial_object_pose(task: str, seed: int) -> np.ndarray:
    """The free-joint ``qpos`` of the task's objects that gym-aloha samples for ``seed``."""
    if task == "transfer-cube":
        return gym_utils.sample_box_pose(seed)
    return np.concatenate(gym_utils.sample_insertion_pose(seed))


class _FastRenderer:
    """One camera at a letterboxed square size, shadows and multisampling off."""

    def __init__(self, physics: Any, camera: str, size: int):
        model = copy.copy(physics.model.ptr)
        model.vis.quality.offsamples = 0
        self._height, self._width = letterbox_size(FAITHFUL_HEIGHT, FAITHFUL_WIDTH, size)
        self._renderer = mujoco.Renderer(model, self._height, self._width)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._camera = camera
        self._size = size
        top = (size - self._height) // 2
        left = (size - self._width) // 2
        self._window = (slice(top, top + self._height), slice(left, left + self._width))

    def __call__(self, data: mujoco.MjData) -> np.ndarray:
        self._renderer.update_scene(data, camera=self._camera)
        image = np.zeros((self._size, self._size, 3), np.uint8)
        image[self._window] = self._renderer.render()
        return image


class AlohaSimEnv:
    """One gym-aloha task, reset by seed and stepped with 14-dim joint-position actions.

    Args:
        task: one of :data:`TASKS`.
        render: one of :data:`RENDER_MODES` (see the module docstring).
        image_size: side of the square ``"fast"`` image; ignored by the other modes.
        camera: the MuJoCo camera drawn into ``images/cam_high``.

    Attributes:
        task, prompt, render: as given, ``prompt`` from :data:`PROMPTS`.
        max_steps: gym-aloha's episode length for the task (:data:`EPISODE_STEPS`); the
            environment does not stop by itself, the caller counts steps.

    Raises:
        InputError: unknown task, render mode or camera, or an ``image_size`` below 1.
    """

    def __init__(
        self, task: str = "transfer-cube", *, render: str = "fast", image_size: int = 224, camera: str = "top"
    ):
        if task not in TASKS:
            raise InputError(f"unknown ALOHA sim task {task!r}; expected one of {list(TASKS)}")
        if render not in RENDER_MODES:
            raise InputError(f"unknown render mode {render!r}; expected one of {list(RENDER_MODES)}")
        if image_size < 1:
            raise InputError(f"image_size should be a positive number of pixels, got {image_size}")
        self.task = task
        self.prompt = PROMPTS[task]
        self.max_steps = EPISODE_STEPS[task]
        self.render = render

        xml_name, task_class = _TASK_SETUP[task]
        physics = dm_mujoco.Physics.from_xml_path(str(gym_constants.ASSETS_DIR / xml_name))
        cameras = [physics.model.id2name(i, "camera") for i in range(physics.model.ncam)]
        if camera not in cameras:
            raise InputError(f"unknown camera {camera!r}; expected one of {cameras}")
        self._camera = camera
        self._task = task_class()
        # The same construction as gym-aloha's AlohaEnv._make_env_task.
        self._env = control.Environment(
            physics,
            self._task,
            time_limit=float("inf"),
            control_timestep=gym_constants.DT,
            n_sub_steps=None,
            flat_observation=False,
        )
        self._fast = _FastRenderer(physics, camera, image_size) if render == "fast" else None

    @property
    def physics(self) -> Any:
        """The ``dm_control`` Physics (``.model.ptr`` and ``.data.ptr`` are the MjModel/MjData)."""
        return self._env.physics

    def reset(self, seed: int) -> dict[str, Any]:
        """Start an episode with gym-aloha's object placement for ``seed``; returns the observation."""
        # gym-aloha passes the objects' pose to its task through this module global.
        gym_sim.BOX_POSE[0] = _initial_object_pose(self.task, seed)
        self._task.random.seed(seed)
        self._env.reset()
        return self._observation()

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float]:
        """Apply one 14-dim action for one control step (0.02 s); returns ``(observation, reward)``.

        The reward is gym-aloha's, 0 .. :data:`MAX_REWARD`, for the state after the step.

        Raises:
            InputError: the action is not 14 finite numbers.
        """
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise InputError(f"ALOHA sim action should have shape [{ACTION_DIM}], got {list(action.shape)}")
        if not np.all(np.isfinite(action)):
            raise InputError(f"ALOHA sim action should be finite, got {action.tolist()}")
        timestep = self._env.step(action)
        return self._observation(), float(timestep.reward)

    def _observation(self) -> dict[str, Any]:
        physics = self._env.physics
        images = {}
        if self.render == "fast":
            images["cam_high"] = self._fast(physics.data.ptr)
        elif self.render == "faithful":
            images["cam_high"] = physics.render(height=FAITHFUL_HEIGHT, width=FAITHFUL_WIDTH, camera_id=self._camera)
        return {"state": self._task.get_qpos(physics).astype(np.float32), "images": images}
