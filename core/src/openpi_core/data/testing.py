"""Small synthetic LeRobot datasets for tests, with actions a model can learn from the state.

Each episode's state follows smooth sinusoids in ``[-1, 1]``; the action at every
frame is a fixed affine function of the state at that frame::

    action_t = A @ state_t + b,   (A, b) = synthetic_action_map(state_dim, action_dim)

``A`` and ``b`` come from a fixed seed, so they are the same for every dataset of the
same dims whatever its ``seed``. Cameras show smooth colour gradients whose colour
follows the state (channel ``c`` brightens with ``state[c % state_dim]``), so video
compression changes them little.

The ALOHA simulation layout (``observation.images.top``, ``observation.state`` [14],
``action`` [14]) is the default.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from openpi_core.data.lerobot import V30
from openpi_core.data.writer import DEFAULT_VIDEO, LeRobotWriter, VideoSettings
from openpi_core.errors import InputError

ACTION_MAP_SEED = 20_240_917
"""Seed of :func:`synthetic_action_map`; fixed, so the map is a property of the dims only."""


def synthetic_action_map(state_dim: int, action_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A [action_dim, state_dim], b [action_dim])``, float64, of ``action = A @ state + b``."""
    rng = np.random.default_rng((ACTION_MAP_SEED, state_dim, action_dim))
    matrix = rng.normal(0.0, 1.0 / np.sqrt(state_dim), (action_dim, state_dim))
    bias = rng.uniform(-0.5, 0.5, action_dim)
    return matrix, bias


def synthetic_episode(
    episode_index: int,
    *,
    frames: int,
    cameras: Sequence[str],
    image_size: tuple[int, int],
    state_dim: int,
    action_dim: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """One episode: ``"state"`` float32 ``[T, S]``, ``"action"`` float32 ``[T, A]`` and, per
    camera name, HWC uint8 ``[T, H, W, 3]`` under ``"images/<name>"``."""
    rng = np.random.default_rng((seed, episode_index))
    frequency = rng.uniform(0.05, 0.3, state_dim)  # cycles per frame
    phase = rng.uniform(0.0, 2 * np.pi, state_dim)
    steps = np.arange(frames)[:, None]
    state = np.sin(2 * np.pi * frequency * steps + phase)
    matrix, bias = synthetic_action_map(state_dim, action_dim)
    action = state @ matrix.T + bias
    episode = {"state": state.astype(np.float32), "action": action.astype(np.float32)}
    height, width = image_size
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    cols = np.linspace(0.0, 1.0, width)[None, :, None]
    channels = np.arange(3)
    for number, camera in enumerate(cameras):
        gradient = 40.0 * np.broadcast_to(rows if number % 2 else cols, (height, width, 1))
        colour = 100.0 + 60.0 * state[:, channels % state_dim]  # [T, 3]
        image = colour[:, None, None, :] + gradient[None]
        episode[f"images/{camera}"] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return episode


def make_synthetic_dataset(
    root: str | Path,
    *,
    episodes: int = 3,
    frames_per_episode: int | Sequence[int] = 20,
    cameras: Sequence[str] = ("top",),
    image_size: tuple[int, int] = (32, 32),
    state_dim: int = 14,
    action_dim: int = 14,
    fps: int = 50,
    version: str = V30,
    seed: int = 0,
    task: str | Sequence[str] = "do the synthetic task",
    state_key: str = "observation.state",
    action_key: str = "action",
    camera_prefix: str = "observation.images.",
    video: VideoSettings = DEFAULT_VIDEO,
    episodes_per_file: int = 1000,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic LeRobot dataset (see the module docstring) at ``root`` and return it.

    Keys: ``camera_prefix + name`` for each camera (``"observation.images.top"``),
    ``state_key`` ``[state_dim]``, ``action_key`` ``[action_dim]``. ``task`` is one text
    for every episode, or a sequence cycled over the episodes. ``frames_per_episode``
    is one length for every episode or a sequence of lengths, one per episode.
    """
    lengths = [frames_per_episode] * episodes if isinstance(frames_per_episode, int) else list(frames_per_episode)
    if episodes < 1 or len(lengths) != episodes or min(lengths) < 1:
        raise InputError(f"need {episodes} >= 1 episode lengths of at least one frame, got {frames_per_episode}")
    features: dict[str, dict[str, Any]] = {
        f"{camera_prefix}{camera}": {"dtype": "video", "shape": [*image_size, 3]} for camera in cameras
    }
    features[state_key] = {"dtype": "float32", "shape": [state_dim]}
    features[action_key] = {"dtype": "float32", "shape": [action_dim]}
    tasks = [task] if isinstance(task, str) else list(task)
    with LeRobotWriter(
        root,
        fps=fps,
        features=features,
        version=version,
        video=video,
        episodes_per_file=episodes_per_file,
        overwrite=overwrite,
        robot_type="synthetic",
    ) as writer:
        for index in range(episodes):
            episode = synthetic_episode(
                index,
                frames=lengths[index],
                cameras=cameras,
                image_size=image_size,
                state_dim=state_dim,
                action_dim=action_dim,
                seed=seed,
            )
            frames = {f"{camera_prefix}{camera}": episode[f"images/{camera}"] for camera in cameras}
            frames[state_key] = episode["state"]
            frames[action_key] = episode["action"]
            writer.add_episode(frames, task=tasks[index % len(tasks)])
    return Path(root)
