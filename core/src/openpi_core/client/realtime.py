"""Executes action chunks in a robot's control loop while the next chunk is computed.

A π-model answers an observation with a chunk of ``H`` actions, one per control tick,
and computing it takes time: ``d`` ticks of round trip. :class:`RealTimeExecutor` sits
in the control loop; each :meth:`~RealTimeExecutor.step` is one tick and returns the
action to execute at it. It keeps a queue of the actions ahead and asks the policy for
the next chunk when fewer than ``H - replan_steps`` remain, in one of three modes:

``sync``
    The robot holds its last action while the chunk is computed, then executes the
    new chunk from its row 0 (openpi's :class:`ActionChunkBroker`, plus the wait).
``async``
    The robot keeps executing the current chunk and switches to the new one when it
    arrives (naive asynchronous execution: the two chunks may disagree where they meet).
``rtc``
    As ``async``, and the request carries the actions the robot will still execute
    (the *leftover*) and the expected delay, so the server inpaints the new chunk to
    continue them: real-time chunking (Black, Galliker and Levine, arXiv 2506.07339;
    the keys are in :mod:`openpi_core.wire`).

Bookkeeping. Ticks are counted by :meth:`~RealTimeExecutor.step` calls. A request sent
at tick ``t`` carries the observation of tick ``t``, so row ``i`` of its answer is the
action for tick ``t + i``. An answer first seen at tick ``t + k`` replaces the queue by
its rows ``k, k + 1, …`` (``async``, ``rtc``); an answer with ``k >= H`` is stale and
dropped. So no tick executes two actions and none is skipped, however late an answer
comes. The leftover sent with a request is the queue at that tick, its first row being
the action for tick ``t`` itself; the delay sent is the largest ``k`` of the last
``delay_window`` answers, at most the leftover's length. When the queue runs dry the
robot holds its last action (counted in :attr:`~RealTimeExecutor.stats`). Only when
there is nothing to hold (the first tick, or after :meth:`~RealTimeExecutor.reset`)
does a step wait for its chunk; that wait's round trip, in ticks, is the first delay
measured.

Requests run in a background thread (one at a time) against any policy whose
``infer(observation)`` returns ``{"actions": [H, action dim], …}``: a local
:class:`~openpi_core.policy.Policy` or a :class:`~openpi_core.client.WebsocketClientPolicy`.
With ``simulated_latency_s`` there is no thread: the policy is called at once and its
answer is delivered ``ceil(latency * control_hz)`` ticks later, so a simulator (whose
time advances one tick per step) and tests replay exact timings.

Failures. A request that raises (a lost connection, a refused observation) is counted
and logged, and the next tick asks again while the queue lasts. When the queue is empty
(always so in ``sync`` while waiting) the step raises the error instead, without using
up the tick; the next :meth:`~RealTimeExecutor.step` asks again (a
:class:`~openpi_core.client.WebsocketClientPolicy` reconnects).
"""

import collections
import concurrent.futures
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from openpi_core import wire
from openpi_core.errors import InputError

logger = logging.getLogger(__name__)

MODES = ("sync", "async", "rtc")
"""How the executor overlaps execution and inference (module docstring)."""

_TICK_EPSILON = 1e-9  # so that 0.3 s at 10 Hz is 3 ticks, not 4


@attrs.frozen
class StepRecord:
    """Where the action of one tick came from.

    Attributes:
        tick: the tick (0 for the first step after a reset).
        chunk: the number of the chunk it is a row of (0, 1, … after a reset).
        index: its row in that chunk.
        held: True when the tick repeated the previous tick's action (``sync`` waiting
            for its chunk, or an empty queue); ``chunk`` and ``index`` then name the
            action repeated.
    """

    tick: int
    chunk: int
    index: int
    held: bool


@attrs.define
class ExecutorStats:
    """What happened since the executor was made (:meth:`RealTimeExecutor.reset` keeps it).

    Attributes:
        requests: chunks asked for.
        chunks: answers spliced into the queue.
        stale: answers that came ``H`` or more ticks late and were dropped.
        errors: requests that raised.
        held_ticks: ticks that repeated the previous action.
        delays: ticks from each answered request to its answer's first use; for a
            waiting step, its round trip in ticks.
    """

    requests: int = 0
    chunks: int = 0
    stale: int = 0
    errors: int = 0
    held_ticks: int = 0
    delays: list[int] = attrs.field(factory=list)


@attrs.frozen
class _Answer:
    result: dict | None
    error: BaseException | None
    arrival_tick: int | None  # known in advance for a simulated latency, or measured by a wait


class _Request:
    """One request in flight: sent at ``tick``, answered in a thread or after a simulated latency."""

    def __init__(
        self, tick: int, sent: float, future: concurrent.futures.Future | None, answer: _Answer | None
    ) -> None:
        self.tick = tick
        self.sent = sent
        self._future = future
        self._answer = answer

    def poll(self, tick: int) -> _Answer | None:
        """The answer if it is there by ``tick``, else None."""
        if self._answer is not None:
            return self._answer if tick >= self._answer.arrival_tick else None
        if not self._future.done():
            return None
        return _from_future(self._future, arrival_tick=None)

    def wait(self, control_hz: float, clock: Callable[[], float]) -> _Answer:
        """Block until the answer is there; its arrival tick is the round trip in ticks."""
        if self._answer is not None:
            return self._answer
        concurrent.futures.wait([self._future])
        ticks = math.ceil((clock() - self.sent) * control_hz - _TICK_EPSILON)
        return _from_future(self._future, arrival_tick=self.tick + max(ticks, 0))


def _from_future(future: concurrent.futures.Future, arrival_tick: int | None) -> _Answer:
    error = future.exception()
    return _Answer(None if error is not None else future.result(), error, arrival_tick)


class RealTimeExecutor:
    """One action per control tick from a policy's action chunks (module docstring).

    Args:
        policy: ``infer(observation) -> {"actions": [H, action dim], …}``; its
            ``reset()``, if any, is called by :meth:`reset`.
        control_hz: control ticks per second (ALOHA: 50).
        mode: ``sync``, ``async`` or ``rtc`` (:data:`MODES`).
        replan_steps: a new chunk is asked for when the queue holds ``H - replan_steps``
            actions, that is ``replan_steps`` ticks after the current chunk's row 0;
            every chunk must have at least this many rows.
        delay_window: how many recent answers the delay sent with ``rtc`` requests is
            the largest of.
        simulated_latency_s: None for real time (requests in a background thread), or
            the latency of every request in seconds, or a function of the request's
            number (0, 1, …) giving it; the answer is then used ``ceil(latency *
            control_hz)`` ticks after the request.
        clock: seconds, for timing a waiting step's round trip (``time.monotonic``).

    Raises:
        InputError: a mode not in :data:`MODES`, or counts below 1.
    """

    def __init__(
        self,
        policy: Any,
        *,
        control_hz: float,
        mode: str = "rtc",
        replan_steps: int,
        delay_window: int = 8,
        simulated_latency_s: float | Callable[[int], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"mode should be one of {list(MODES)}, got {mode!r}")
        if replan_steps < 1 or delay_window < 1 or not control_hz > 0:
            raise InputError(
                f"replan_steps and delay_window should be >= 1 and control_hz > 0, "
                f"got {replan_steps}, {delay_window} and {control_hz}"
            )
        self.policy = policy
        self.mode = mode
        self.control_hz = float(control_hz)
        self.replan_steps = replan_steps
        self.stats = ExecutorStats()
        self.last_step: StepRecord | None = None
        """Where the action of the latest step came from."""
        self._latency = simulated_latency_s
        self._clock = clock
        self._pool = None if simulated_latency_s is not None else concurrent.futures.ThreadPoolExecutor(1)
        self._recent_delays: collections.deque[int] = collections.deque(maxlen=delay_window)
        self._start_episode()

    def _start_episode(self) -> None:
        self._tick = 0
        self._queue: collections.deque[tuple[int, int, np.ndarray]] = collections.deque()
        self._last: tuple[int, int, np.ndarray] | None = None
        self._pending: _Request | None = None
        self._chunk_number = -1
        self._threshold = 0
        self.last_step = None

    @property
    def delay(self) -> int:
        """The delay in ticks the next ``rtc`` request will announce (before capping at the leftover)."""
        return max(self._recent_delays, default=0)

    def step(self, observation: dict) -> np.ndarray:
        """The action for this tick, given this tick's observation.

        Raises:
            Exception: what the policy raised, when the robot has no queued action left
                (the tick is not used up; call again to ask again).
            InputError: an answer without ``actions`` ``[H >= replan_steps, action dim]``.
        """
        if self._last is None and not self._queue:
            self._wait_for_chunk(observation)
        else:
            self._receive()
            if self._pending is None and len(self._queue) <= self._threshold:
                self._request(observation)
                self._receive()
        if self._queue:
            self._last = self._queue.popleft()
            held = False
        else:
            held = True
            self.stats.held_ticks += 1
        chunk, index, action = self._last
        self.last_step = StepRecord(self._tick, chunk, index, held)
        self._tick += 1
        return action

    def reset(self) -> None:
        """Start over: drop the queue and any request in flight, reset the policy. Delays measured are kept."""
        self._start_episode()
        reset = getattr(self.policy, "reset", None)
        if reset is not None:
            reset()

    def close(self) -> None:
        """Stop the background thread (a request in flight is abandoned)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "RealTimeExecutor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _wait_for_chunk(self, observation: dict) -> None:
        self._request(observation)
        request, self._pending = self._pending, None
        answer = request.wait(self.control_hz, self._clock)
        if answer.error is not None:
            self.stats.errors += 1
            raise answer.error
        self._record_delay(answer.arrival_tick - request.tick)
        self._splice(answer.result, drop=0)

    def _request(self, observation: dict) -> None:
        if self.mode == "sync":
            self._queue.clear()
        elif self.mode == "rtc" and self._queue:
            leftover = np.stack([action for _, _, action in self._queue]).astype(np.float32)
            observation = {
                **observation,
                wire.RTC_PREFIX_ACTIONS: leftover,
                wire.RTC_INFERENCE_DELAY: min(self.delay, len(leftover)),
            }
        number = self.stats.requests
        self.stats.requests += 1
        if self._pool is not None:
            future = self._pool.submit(self.policy.infer, observation)
            self._pending = _Request(self._tick, self._clock(), future, None)
            return
        latency = self._latency(number) if callable(self._latency) else self._latency
        ticks = max(math.ceil(latency * self.control_hz - _TICK_EPSILON), 0)
        try:
            answer = _Answer(self.policy.infer(observation), None, self._tick + ticks)
        except Exception as error:
            answer = _Answer(None, error, self._tick + ticks)
        self._pending = _Request(self._tick, self._clock(), None, answer)

    def _receive(self) -> None:
        if self._pending is None or (answer := self._pending.poll(self._tick)) is None:
            return
        sent, self._pending = self._pending.tick, None
        if answer.error is not None:
            self.stats.errors += 1
            if not self._queue:
                raise answer.error
            logger.warning("a chunk request failed (%d actions left, asking again): %s", len(self._queue), answer.error)
            return
        elapsed = self._tick - sent
        self._record_delay(elapsed)
        self._splice(answer.result, drop=0 if self.mode == "sync" else elapsed)

    def _record_delay(self, ticks: int) -> None:
        self._recent_delays.append(ticks)
        self.stats.delays.append(ticks)

    def _splice(self, result: Any, drop: int) -> None:
        actions = _chunk(result, self.replan_steps)
        if drop >= len(actions):
            self.stats.stale += 1
            logger.warning("dropped a chunk that came %d ticks late, past its %d rows", drop, len(actions))
            return
        self._chunk_number += 1
        self.stats.chunks += 1
        self._queue = collections.deque((self._chunk_number, i, actions[i]) for i in range(drop, len(actions)))
        self._threshold = len(actions) - self.replan_steps


def _chunk(result: Any, replan_steps: int) -> np.ndarray:
    actions = np.asarray(result.get("actions") if isinstance(result, dict) else None)
    if actions.ndim != 2 or len(actions) < replan_steps:
        raise InputError(
            f"the policy should answer {{'actions': [H >= replan_steps={replan_steps}, action dim]}}, "
            f"got {list(actions.shape) if actions.ndim else type(result).__name__}"
        )
    return actions
