"""Record the scripted expert's successful episodes as a LeRobot v3.0 dataset.

The dataset is what ``pi run train --embodiment aloha`` reads without conversion: its
features are named by the ALOHA embodiment's LeRobot repack (the keys of
``lerobot/aloha_sim_*``, as ``pi data convert`` names them)::

    observation.images.top   video [224, 224, 3]   the top camera, "fast" render by default
    observation.state        float32 [14]          the joint state the action answered
    action                   float32 [14]          the expert's joint-position command

at :data:`~openpi_embodiment_aloha.sim.evaluate.FPS` (50) frames per second, one frame
per control step, each episode's task being the prompt of the simulated task.
Episodes where the expert fails (:func:`~openpi_embodiment_aloha.sim.evaluate.episode_success`)
are left out and the next seed is drawn, so the dataset holds only demonstrations.
"""

import itertools
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np

from openpi_core.data.convert import lerobot_keys, lerobot_name
from openpi_core.data.lerobot import V30
from openpi_core.data.writer import LeRobotWriter
from openpi_core.errors import InputError, OpenpiError
from openpi_core.transforms.image import resize_with_pad
from openpi_embodiment_aloha.aloha import ACTION_DIM, STATE_DIM, AlohaEmbodiment
from openpi_embodiment_aloha.sim.env import AlohaSimEnv
from openpi_embodiment_aloha.sim.evaluate import FPS, episode_success, rollout
from openpi_embodiment_aloha.sim.expert import ScriptedExpert

IMAGE_SIZE = 224
"""Side of the recorded square camera image (the model's input size)."""


def dataset_keys() -> tuple[str, str, str]:
    """The recorded ``(camera, state, action)`` feature names, from the ALOHA embodiment's LeRobot repack."""
    names = lerobot_keys(AlohaEmbodiment())
    camera, state, action = (lerobot_name(key, names) for key in ("images/cam_high", "state", "actions"))
    return camera, state, action


@attrs.frozen
class Recording:
    """What :func:`record_dataset` wrote: the dataset, its episodes' seeds and the seeds left out."""

    root: Path
    seeds: tuple[int, ...]
    discarded_seeds: tuple[int, ...]
    frames: int


def record_dataset(
    task: str,
    episodes: int,
    out: str | Path,
    seed: int = 0,
    render: str = "fast",
    progress: Callable[[int, bool], None] | None = None,
    overwrite: bool = False,
) -> Recording:
    """Write ``episodes`` successful scripted-expert episodes of ``task`` to the dataset ``out``.

    Seeds ``seed, seed + 1, …`` are tried in order until ``episodes`` succeeded.

    Args:
        task: one of :data:`~openpi_embodiment_aloha.sim.env.TASKS`.
        render: ``"fast"`` or ``"faithful"`` (see :mod:`~openpi_embodiment_aloha.sim.env`);
            either way the recorded image is :data:`IMAGE_SIZE` square (a faithful
            480x640 frame is resized with padding, as the policy's transforms would).
        progress: called after each tried seed with ``(seed, kept)``.
        overwrite: replace ``out`` if it exists.

    Raises:
        InputError: ``episodes`` below 1, render ``"none"``, or ``out`` exists without ``overwrite``.
        OpenpiError: the expert failed on more seeds than ``episodes`` (the message
            lists them); ``out`` is then left incomplete.
    """
    if episodes < 1:
        raise InputError(f"episodes should be >= 1, got {episodes}")
    if render == "none":
        raise InputError("a dataset needs camera images; render 'none' draws none (use 'fast' or 'faithful')")
    if Path(out).exists() and not overwrite:
        raise InputError(f"{str(out)!r} already exists; pass overwrite=True to replace it")
    env = AlohaSimEnv(task, render=render, image_size=IMAGE_SIZE)
    expert = ScriptedExpert(env)
    camera, state, action = dataset_keys()
    features = {
        camera: {"dtype": "video", "shape": [IMAGE_SIZE, IMAGE_SIZE, 3]},
        state: {"dtype": "float32", "shape": [STATE_DIM]},
        action: {"dtype": "float32", "shape": [ACTION_DIM]},
    }
    writer = LeRobotWriter(out, fps=FPS, features=features, version=V30, robot_type="aloha", overwrite=overwrite)
    kept: list[int] = []
    discarded: list[int] = []
    try:
        for episode_seed in itertools.count(seed):
            run = rollout(env, expert, episode_seed)
            success = episode_success(run.rewards)
            if success:
                frames = {
                    camera: resize_with_pad(
                        np.stack([obs["images"]["cam_high"] for obs in run.observations]), IMAGE_SIZE, IMAGE_SIZE
                    ),
                    state: np.stack([obs["state"] for obs in run.observations]),
                    action: np.stack(run.actions),
                }
                writer.add_episode(frames, task=env.prompt)
                kept.append(episode_seed)
            else:
                discarded.append(episode_seed)
            if progress is not None:
                progress(episode_seed, success)
            if len(kept) == episodes:
                break
            if len(discarded) > episodes:
                raise OpenpiError(
                    f"the scripted expert failed {task} on {len(discarded)} seeds {discarded} "
                    f"while succeeding on {len(kept)}; giving up"
                )
    except BaseException:
        writer.abort()
        raise
    root = writer.close()
    return Recording(root, tuple(kept), tuple(discarded), writer.total_frames)
