"""Replays an action chunk one step at a time, asking the policy again when it runs out.

A π-model answers each observation with a chunk of future actions ``[H, action_dim]``.
A robot controller wants one action per control tick. :class:`ActionChunkBroker`
sits between them, as openpi's ``ActionChunkBroker``: the first ``infer`` queries the
wrapped policy; that call and the next ``action_horizon - 1`` ones return step 0,
1, … of the answer; the call after that queries again with its observation.

Per step, every array with at least two dimensions (a leading horizon axis ``[H, …]``)
is replaced by its row for that step, inside nested dicts too; everything else
(``server_timing``, a ``[D]`` state vector, strings) comes back unchanged. openpi
slices every array, which would turn a one-dimensional state into a scalar.
"""

from typing import Any, Protocol

import numpy as np

from openpi_core.errors import InputError


class InferencePolicy(Protocol):
    """What the broker wraps: a :class:`~openpi_core.client.WebsocketClientPolicy` or any alike."""

    def infer(self, obs: dict) -> dict: ...

    def reset(self) -> None: ...


class ActionChunkBroker:
    """Wraps ``policy`` so that each ``infer`` returns one step of its latest chunk.

    Args:
        policy: answers an observation with a dict holding ``[H, …]`` arrays.
        action_horizon: how many steps of each chunk to execute (at most ``H``).
    """

    def __init__(self, policy: InferencePolicy, action_horizon: int) -> None:
        if action_horizon < 1:
            raise InputError(f"action_horizon should be at least 1, got {action_horizon}")
        self._policy = policy
        self._action_horizon = action_horizon
        self._chunk: dict | None = None
        self._step = 0

    def infer(self, obs: dict) -> dict:
        """The next step of the current chunk; queries ``policy`` with ``obs`` when none is left.

        Raises:
            InputError: the policy's answer has a per-step array shorter than ``action_horizon``.
        """
        if self._chunk is None:
            chunk = self._policy.infer(obs)
            _check_horizon(chunk, self._action_horizon, "answer")
            self._chunk, self._step = chunk, 0
        step = _select_step(self._chunk, self._step)
        self._step += 1
        if self._step >= self._action_horizon:
            self._chunk = None
        return step

    def reset(self) -> None:
        """Drop the current chunk and reset the wrapped policy."""
        self._policy.reset()
        self._chunk = None
        self._step = 0


def _select_step(tree: Any, step: int) -> Any:
    if isinstance(tree, dict):
        return {key: _select_step(value, step) for key, value in tree.items()}
    if isinstance(tree, np.ndarray) and tree.ndim >= 2:
        return tree[step]
    return tree


def _check_horizon(tree: Any, horizon: int, path: str) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            _check_horizon(value, horizon, f"{path}[{key!r}]")
    elif isinstance(tree, np.ndarray) and tree.ndim >= 2 and tree.shape[0] < horizon:
        raise InputError(f"{path} should have at least action_horizon={horizon} steps, got shape {list(tree.shape)}")
