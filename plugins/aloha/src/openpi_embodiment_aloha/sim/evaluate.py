"""Closed-loop evaluation of a policy in the ALOHA simulator.

:func:`evaluate` runs ``episodes`` episodes of one :class:`~openpi_embodiment_aloha.sim.env.AlohaSimEnv`;
episode ``i`` starts from ``seed + i``. Each step the policy sees the simulator's observation plus the task's
prompt (what the ALOHA embodiment's input transform reads)::

    {"state": float32 [14], "images": {"cam_high": uint8 [H, W, 3]}, "prompt": str}

A policy is any ``policy_fn(observation) -> actions [H, 14]`` (an action chunk);
:func:`chunk_fn` makes one from an in-process :class:`openpi_core.policy.Policy` or an
:class:`openpi_core.client.WebsocketClientPolicy`. Like openpi's ALOHA-sim example,
a new chunk is asked for ``replan_steps`` actions after the current one began.

Inference latency is simulated in simulation time: the environment keeps stepping at
:data:`FPS` while a chunk is computed, so ``latency_ms`` is ``latency_ms / 20`` control
steps (rounded up). The robot side is :class:`openpi_core.client.RealTimeExecutor` with
a simulated latency, in one of its modes (``execution``): ``sync`` holds the last
action while it waits, ``async`` executes the current chunk meanwhile and switches to
the new one where it arrives, ``rtc`` also sends the current chunk's leftover and the
delay so the server continues it (real-time chunking). Each episode waits for its first
chunk before its first step. With no latency every mode executes what openpi's
:class:`~openpi_core.client.ActionChunkBroker` executes.

Smoothness is the paper's discontinuity measure: the step-to-step change of the action
(the largest of its 14 dimensions, radians for the joints) at chunk boundaries, where
the executed action comes from a new chunk, against the change between consecutive rows
of one chunk.

An episode succeeds when it *ends* at :data:`~openpi_embodiment_aloha.sim.env.MAX_REWARD`
(:func:`episode_success`): in transfer-cube the top reward also fires for a moment when
the open left gripper first touches the cube still held by the right one.
"""

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import numpy as np
from gym_aloha import constants as gym_constants

from openpi_core.client import RealTimeExecutor, StepRecord
from openpi_core.client.realtime import MODES
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
    """One evaluated episode.

    Attributes:
        seed, steps, max_reward, final_reward, success: the episode and its rewards.
        inferences: policy calls.
        duration_s: simulated seconds, from the request of the first chunk to the last step.
        success_time_s: simulated seconds until the top reward it ended with was reached
            for good; None when it failed.
        held_steps: steps that repeated the previous action while a chunk was computed.
        boundary_change_mean, boundary_change_max: the action's step-to-step change where
            a new chunk takes over (None without such a step).
        within_change_mean, within_change_max: the same between consecutive rows of one chunk.
        video: the episode's MP4, or None.
    """

    seed: int
    steps: int
    max_reward: float
    final_reward: float
    success: bool
    inferences: int
    duration_s: float
    success_time_s: float | None
    held_steps: int
    boundary_change_mean: float | None
    boundary_change_max: float | None
    within_change_mean: float | None
    within_change_max: float | None
    video: str | None = None


def action_changes(actions: Sequence[np.ndarray], steps: Sequence[StepRecord]) -> tuple[list[float], list[float]]:
    """The step-to-step action changes ``max |a_t - a_{t-1}|`` of an episode: at chunk boundaries and within chunks.

    A change is at a boundary when action ``t`` is from another chunk than action
    ``t - 1``, within a chunk when it is the next row of the same chunk; a held step
    (an action repeated while waiting) counts as neither.
    """
    boundary, within = [], []
    for t in range(1, len(actions)):
        change = float(np.max(np.abs(np.asarray(actions[t]) - np.asarray(actions[t - 1]))))
        if steps[t].chunk != steps[t - 1].chunk:
            boundary.append(change)
        elif not steps[t].held and steps[t].index == steps[t - 1].index + 1:
            within.append(change)
    return boundary, within


def success_step(rewards: Sequence[float]) -> int | None:
    """The step from which an episode held :data:`MAX_REWARD` to its end (its success), or None on failure."""
    if not episode_success(rewards):
        return None
    step = len(rewards)
    while step > 0 and rewards[step - 1] == MAX_REWARD:
        step -= 1
    return step


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _max(values: Sequence[float]) -> float | None:
    return float(np.max(values)) if len(values) else None


@attrs.frozen
class EvalResults:
    """What :func:`evaluate` measured.

    Attributes:
        task, prompt: the simulated task and the text the policy got.
        replan_steps: steps from a chunk's row 0 to the next request.
        execution: ``sync``, ``async`` or ``rtc`` (module docstring).
        latency_ms: the simulated inference latency.
        render: the render path (``"fast"``, ``"faithful"`` or ``"none"``).
        image_size: ``[H, W]`` of the camera image the policy saw (None without images).
        episodes: one :class:`EpisodeResult` each, in seed order.
        mean_latency_ms: mean wall time of one ``policy_fn`` call (a round trip for a
            remote policy); not simulated.
        policy: what the caller said about the policy (a server address, a preset…).
        boundary_change_mean, boundary_change_max, within_change_mean, within_change_max:
            the step-to-step action changes of all episodes together (see :class:`EpisodeResult`).
        mean_success_time_s: the mean ``success_time_s`` of the successful episodes.
    """

    task: str
    prompt: str
    replan_steps: int
    execution: str
    latency_ms: float
    render: str
    image_size: tuple[int, int] | None
    episodes: tuple[EpisodeResult, ...]
    mean_latency_ms: float
    policy: Mapping[str, Any] = attrs.field(factory=dict)
    boundary_change_mean: float | None = None
    boundary_change_max: float | None = None
    within_change_mean: float | None = None
    within_change_max: float | None = None
    mean_success_time_s: float | None = None

    @property
    def success_rate(self) -> float:
        """Fraction of episodes that succeeded."""
        return sum(episode.success for episode in self.episodes) / len(self.episodes)

    def summary(self) -> str:
        """A table of the episodes, then the success rate, smoothness, latency and render path."""
        lines = [
            f"{'episode':>7} {'seed':>6} {'steps':>6} {'max reward':>11} {'final reward':>13} {'success':>8} "
            f"{'success at':>11} {'held':>5}"
        ]
        for index, episode in enumerate(self.episodes):
            at = "-" if episode.success_time_s is None else f"{episode.success_time_s:.2f} s"
            lines.append(
                f"{index:>7} {episode.seed:>6} {episode.steps:>6} {episode.max_reward:>11g} "
                f"{episode.final_reward:>13g} {'yes' if episode.success else 'no':>8} {at:>11} {episode.held_steps:>5}"
            )
        successes = sum(episode.success for episode in self.episodes)
        size = "x".join(map(str, self.image_size)) if self.image_size else "none"
        at = "" if self.mean_success_time_s is None else f", successes at {self.mean_success_time_s:.2f} s on average"
        lines.append(f"success rate: {successes}/{len(self.episodes)} ({self.success_rate:.0%}) on {self.task}{at}")
        lines.append(
            "action change per step (max over dims): at chunk boundaries "
            f"mean {_text(self.boundary_change_mean)} max {_text(self.boundary_change_max)}; within chunks "
            f"mean {_text(self.within_change_mean)} max {_text(self.within_change_max)}"
        )
        lines.append(
            f"execution {self.execution}, simulated latency {self.latency_ms:g} ms "
            f"({latency_steps(self.latency_ms)} steps), replan every {self.replan_steps}; "
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


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def latency_steps(latency_ms: float) -> int:
    """Control steps that ``latency_ms`` of inference lasts at :data:`FPS` (rounded up)."""
    return max(math.ceil(latency_ms * FPS / 1000.0 - 1e-9), 0)


class _TimedChunks:
    """``policy_fn`` as the executor's policy: answers ``{"actions": [H, 14]}`` and times each call."""

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


class _ExecutorController:
    """A :class:`Controller` that executes the chunks of ``chunks`` with a :class:`RealTimeExecutor`
    in simulation time, and keeps where each step's action came from."""

    def __init__(self, chunks: _TimedChunks, replan_steps: int, execution: str, latency_ms: float) -> None:
        self._executor = RealTimeExecutor(
            chunks, control_hz=FPS, mode=execution, replan_steps=replan_steps, simulated_latency_s=latency_ms / 1000.0
        )
        self.steps: list[StepRecord] = []

    def reset(self) -> None:
        self._executor.reset()
        self.steps = []

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        action = self._executor.step(observation)
        self.steps.append(self._executor.last_step)
        return action


def evaluate(
    policy_fn: PolicyFn,
    env: AlohaSimEnv,
    episodes: int = 50,
    seed: int = 0,
    replan_steps: int = 10,
    video_dir: str | Path | None = None,
    progress: Callable[[EpisodeResult], None] | None = None,
    *,
    latency_ms: float = 0.0,
    execution: str = "sync",
    on_step: Callable[[], object] | None = None,
    on_reset: Callable[[], None] | None = None,
    policy_info: Mapping[str, Any] | None = None,
) -> EvalResults:
    """Run ``policy_fn`` closed loop for ``episodes`` episodes of ``env``'s task.

    Args:
        policy_fn: observation (see the module docstring) -> action chunk ``[H >= replan_steps, 14]``.
        env: the simulator; its task, render path and image size are the evaluation's.
        episodes: how many; episode ``i`` is reset with ``seed + i``.
        replan_steps: steps from a chunk's row 0 until the policy is asked again.
        video_dir: when given, each episode's camera frames (what the policy saw) are
            written to ``<video_dir>/<task>_seed<seed>.mp4`` at :data:`FPS`.
        progress: called with each episode's result as it finishes.
        latency_ms: simulated inference latency, in simulation time (module docstring).
        execution: ``sync``, ``async`` or ``rtc`` (module docstring).
        on_step: called after each simulator step (``env.max_steps`` times per episode).
        on_reset: called at the start of each episode, after the simulator's reset
            (a stateful policy's ``reset``).
        policy_info: stored in the results as ``policy`` (what was evaluated).

    Raises:
        InputError: bad counts, a negative latency, an unknown execution mode, videos
            without images, or a chunk of the wrong shape (the message names the shape that came).
    """
    if episodes < 1 or replan_steps < 1:
        raise InputError(f"episodes and replan_steps should be >= 1, got {episodes} and {replan_steps}")
    if not latency_ms >= 0 or execution not in MODES:
        raise InputError(
            f"latency_ms should be >= 0 and execution one of {list(MODES)}, got {latency_ms} and {execution!r}"
        )
    if video_dir is not None and env.render == "none":
        raise InputError("videos need camera images; render 'none' draws none (use 'fast' or 'faithful')")
    chunks = _TimedChunks(policy_fn, replan_steps, on_reset)
    controller = _ExecutorController(chunks, replan_steps, execution, latency_ms)
    results = []
    boundary_all: list[float] = []
    within_all: list[float] = []
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
        boundary, within = action_changes(run.actions, controller.steps)
        boundary_all += boundary
        within_all += within
        done = success_step(run.rewards)
        start = latency_steps(latency_ms)  # the wait for the first chunk
        result = EpisodeResult(
            seed=episode_seed,
            steps=len(run.rewards),
            max_reward=max(run.rewards),
            final_reward=run.rewards[-1],
            success=episode_success(run.rewards),
            inferences=len(chunks.latencies_ms) - calls_before,
            duration_s=(start + len(run.rewards)) / FPS,
            success_time_s=None if done is None else (start + done) / FPS,
            held_steps=sum(step.held for step in controller.steps),
            boundary_change_mean=_mean(boundary),
            boundary_change_max=_max(boundary),
            within_change_mean=_mean(within),
            within_change_max=_max(within),
            video=video,
        )
        results.append(result)
        if progress is not None:
            progress(result)
    success_times = [result.success_time_s for result in results if result.success_time_s is not None]
    return EvalResults(
        task=env.task,
        prompt=env.prompt,
        replan_steps=replan_steps,
        execution=execution,
        latency_ms=float(latency_ms),
        render=env.render,
        image_size=image_shape,
        episodes=tuple(results),
        mean_latency_ms=float(np.mean(chunks.latencies_ms)),
        policy=dict(policy_info or {}),
        boundary_change_mean=_mean(boundary_all),
        boundary_change_max=_max(boundary_all),
        within_change_mean=_mean(within_all),
        within_change_max=_max(within_all),
        mean_success_time_s=_mean(success_times),
    )
