"""Closed-loop evaluation of a policy in the ALOHA simulator.

:func:`evaluate` runs ``episodes`` episodes of one :class:`~openpi_embodiment_aloha.sim.env.AlohaSimEnv`;
episode ``i`` starts from ``seed + i``. Each step the policy sees the simulator's observation plus the task's
prompt (what the ALOHA embodiment's input transform reads)::

    {"state": float32 [14], "images": {"cam_high": uint8 [H, W, 3]}, "prompt": str}

A policy is any ``policy_fn(observation) -> actions [H, 14]`` (an action chunk);
:func:`chunk_fn` makes one from an in-process :class:`openpi_core.policy.Policy` or an
:class:`openpi_core.client.WebsocketClientPolicy`. Like openpi's ALOHA-sim example,
the first ``replan_steps`` actions of each chunk are executed before the policy is
asked again (:class:`openpi_core.client.ActionChunkBroker`).

An episode succeeds when it *ends* at :data:`~openpi_embodiment_aloha.sim.env.MAX_REWARD`
(:func:`episode_success`): in transfer-cube the top reward also fires for a moment when
the open left gripper first touches the cube still held by the right one.
"""

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import numpy as np
from gym_aloha import constants as gym_constants

from openpi_core.client import ActionChunkBroker
from openpi_core.data.writer import write_video
from openpi_core.errors import InputError
from openpi_embodiment_aloha.aloha import ACTION_DIM
from openpi_embodiment_aloha.sim.env import MAX_REWARD, AlohaSimEnv

FPS = round(1.0 / gym_constants.DT)
"""Control steps per second: gym-aloha steps 0.02 s per action, 50 Hz."""

PolicyFn = Callable[[dict[str, Any]], np.ndarray]
"""Observation (with ``prompt``) -> action chunk ``[H, 14]``."""


def episode_success(rewards: Sequence[float]) -> bool:
    """Whether an episode with these per-step rewards succeeded: its last reward is :data:`MAX_REWARD`.

    ``[0, 1, 2, 3, 4, 4, 3]`` touched the top reward but lost it (a failure);
    ``[0, 1, 2, 3, 4, 4]`` ends there (a success); no rewards at all is a failure.
    """
    return len(rewards) > 0 and rewards[-1] == MAX_REWARD


def chunk_fn(policy: Any) -> PolicyFn:
    """``policy_fn`` of anything whose ``infer(observation)`` returns ``{"actions": [H, 14], ...}``."""
    return lambda observation: policy.infer(observation)["actions"]


class Controller(Protocol):
    """Drives the simulator one step at a time, as :class:`~openpi_embodiment_aloha.sim.expert.ScriptedExpert` does."""

    def reset(self) -> None:
        """Start an episode; called after the simulator's reset, before the first :meth:`act`."""

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        """The action ``[14]`` for this observation."""


@attrs.frozen
class Rollout:
    """One episode: ``observations`` and ``actions`` step by step, and the reward after each action.

    ``observations[t]`` is what action ``actions[t]`` answered; the observation after
    the last action is not kept. All three have one entry per step.
    """

    observations: list[dict[str, Any]]
    actions: list[np.ndarray]
    rewards: list[float]


def rollout(
    env: AlohaSimEnv, controller: Controller, seed: int, on_step: Callable[[], object] | None = None
) -> Rollout:
    """Run one episode of ``env.max_steps`` steps from ``seed``, ``controller`` acting on each
    observation (with ``prompt`` added); ``on_step`` is called after each step."""
    observation = env.reset(seed)
    controller.reset()
    observations, actions, rewards = [], [], []
    for _ in range(env.max_steps):
        observation = {**observation, "prompt": env.prompt}
        action = np.asarray(controller.act(observation), dtype=np.float32)
        observations.append(observation)
        actions.append(action)
        observation, reward = env.step(action)
        rewards.append(reward)
        if on_step is not None:
            on_step()
    return Rollout(observations, actions, rewards)


@attrs.frozen
class EpisodeResult:
    """One evaluated episode: its seed, length, rewards, success, policy calls and video (or None)."""

    seed: int
    steps: int
    max_reward: float
    final_reward: float
    success: bool
    inferences: int
    video: str | None = None


@attrs.frozen
class EvalResults:
    """What :func:`evaluate` measured.

    Attributes:
        task, prompt: the simulated task and the text the policy got.
        replan_steps: actions executed from each chunk.
        render: the render path (``"fast"``, ``"faithful"`` or ``"none"``).
        image_size: ``[H, W]`` of the camera image the policy saw (None without images).
        episodes: one :class:`EpisodeResult` each, in seed order.
        mean_latency_ms: mean wall time of one ``policy_fn`` call (a round trip for a
            remote policy).
        policy: what the caller said about the policy (a server address, a preset…).
    """

    task: str
    prompt: str
    replan_steps: int
    render: str
    image_size: tuple[int, int] | None
    episodes: tuple[EpisodeResult, ...]
    mean_latency_ms: float
    policy: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def success_rate(self) -> float:
        """Fraction of episodes that succeeded."""
        return sum(episode.success for episode in self.episodes) / len(self.episodes)

    def summary(self) -> str:
        """A table of the episodes, then the success rate, the mean latency and the render path."""
        lines = [f"{'episode':>7} {'seed':>6} {'steps':>6} {'max reward':>11} {'final reward':>13} {'success':>8}"]
        for index, episode in enumerate(self.episodes):
            lines.append(
                f"{index:>7} {episode.seed:>6} {episode.steps:>6} {episode.max_reward:>11g} "
                f"{episode.final_reward:>13g} {'yes' if episode.success else 'no':>8}"
            )
        successes = sum(episode.success for episode in self.episodes)
        size = "x".join(map(str, self.image_size)) if self.image_size else "none"
        lines.append(
            f"success rate: {successes}/{len(self.episodes)} ({self.success_rate:.0%}) on {self.task}; "
            f"mean inference latency {self.mean_latency_ms:.1f} ms; render {self.render}, images {size}"
        )
        return "\n".join(lines)

    def to_json(self) -> str:
        """The results as JSON text: every attribute plus ``success_rate``, episodes as objects."""
        data = attrs.asdict(self, recurse=True)
        data["success_rate"] = self.success_rate
        return json.dumps(data, indent=2)

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` (its folder is created); returns ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path


class _TimedChunks:
    """``policy_fn`` as the broker's policy: answers ``{"actions": [H, 14]}`` and times each call."""

    def __init__(self, policy_fn: PolicyFn, replan_steps: int, on_reset: Callable[[], None] | None) -> None:
        self._policy_fn = policy_fn
        self._replan_steps = replan_steps
        self._on_reset = on_reset
        self.latencies_ms: list[float] = []

    def infer(self, observation: dict) -> dict:
        start = time.perf_counter()
        actions = np.asarray(self._policy_fn(observation), dtype=np.float32)
        self.latencies_ms.append((time.perf_counter() - start) * 1000.0)
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or len(actions) < self._replan_steps:
            raise InputError(
                f"the policy should answer an action chunk [H >= replan_steps={self._replan_steps}, {ACTION_DIM}], "
                f"got shape {list(actions.shape)}"
            )
        return {"actions": actions}

    def reset(self) -> None:
        if self._on_reset is not None:
            self._on_reset()


class _ChunkController:
    """A :class:`Controller` that executes ``replan_steps`` actions of each chunk of ``policy_fn``."""

    def __init__(self, chunks: _TimedChunks, replan_steps: int) -> None:
        self._broker = ActionChunkBroker(chunks, replan_steps)

    def reset(self) -> None:
        self._broker.reset()

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        return self._broker.infer(observation)["actions"]


def evaluate(
    policy_fn: PolicyFn,
    env: AlohaSimEnv,
    episodes: int = 50,
    seed: int = 0,
    replan_steps: int = 10,
    video_dir: str | Path | None = None,
    progress: Callable[[EpisodeResult], None] | None = None,
    *,
    on_step: Callable[[], object] | None = None,
    on_reset: Callable[[], None] | None = None,
    policy_info: Mapping[str, Any] | None = None,
) -> EvalResults:
    """Run ``policy_fn`` closed loop for ``episodes`` episodes of ``env``'s task.

    Args:
        policy_fn: observation (see the module docstring) -> action chunk ``[H >= replan_steps, 14]``.
        env: the simulator; its task, render path and image size are the evaluation's.
        episodes: how many; episode ``i`` is reset with ``seed + i``.
        replan_steps: actions executed from each chunk before the policy is asked again.
        video_dir: when given, each episode's camera frames (what the policy saw) are
            written to ``<video_dir>/<task>_seed<seed>.mp4`` at :data:`FPS`.
        progress: called with each episode's result as it finishes.
        on_step: called after each simulator step (``env.max_steps`` times per episode).
        on_reset: called at the start of each episode, after the simulator's reset
            (a stateful policy's ``reset``).
        policy_info: stored in the results as ``policy`` (what was evaluated).

    Raises:
        InputError: bad counts, videos without images, or a chunk of the wrong shape
            (the message names the shape that came).
    """
    if episodes < 1 or replan_steps < 1:
        raise InputError(f"episodes and replan_steps should be >= 1, got {episodes} and {replan_steps}")
    if video_dir is not None and env.render == "none":
        raise InputError("videos need camera images; render 'none' draws none (use 'fast' or 'faithful')")
    chunks = _TimedChunks(policy_fn, replan_steps, on_reset)
    controller = _ChunkController(chunks, replan_steps)
    results = []
    image_shape = None
    for index in range(episodes):
        episode_seed = seed + index
        calls_before = len(chunks.latencies_ms)
        run = rollout(env, controller, episode_seed, on_step)
        frames = [observation["images"]["cam_high"] for observation in run.observations if observation["images"]]
        image_shape = tuple(frames[0].shape[:2]) if frames else None
        video = None
        if video_dir is not None:
            video = str(write_video(Path(video_dir) / f"{env.task}_seed{episode_seed}.mp4", frames, FPS))
        result = EpisodeResult(
            seed=episode_seed,
            steps=len(run.rewards),
            max_reward=max(run.rewards),
            final_reward=run.rewards[-1],
            success=episode_success(run.rewards),
            inferences=len(chunks.latencies_ms) - calls_before,
            video=video,
        )
        results.append(result)
        if progress is not None:
            progress(result)
    return EvalResults(
        task=env.task,
        prompt=env.prompt,
        replan_steps=replan_steps,
        render=env.render,
        image_size=image_shape,
        episodes=tuple(results),
        mean_latency_ms=float(np.mean(chunks.latencies_ms)),
        policy=dict(policy_info or {}),
    )
