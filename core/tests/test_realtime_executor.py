"""The real-time executor's bookkeeping, tick by tick, against a fake policy.

Row ``i`` of the fake policy's ``n``-th answer is the action ``[n, i]``, so the executed
sequence reads as (request, row) pairs. Every expected sequence below is worked out by
hand from the module docstring's rules, with ``H = 6`` rows per chunk and
``replan_steps = 2`` (a request when 4 actions are left), at 10 ticks per second so
that 0.1 s of latency is one tick.
"""

import concurrent.futures
import threading

import numpy as np
import pytest

from openpi_core import wire
from openpi_core.client import ActionChunkBroker, RealTimeExecutor
from openpi_core.errors import InputError

H, HZ, REPLAN = 6, 10.0, 2
OBSERVATION = {"state": np.zeros(3)}
HELD = "held"


class Chunks:
    """Answers request ``n`` with ``[[n, 0], [n, 1], …]``; raises for the request numbers in ``fail``."""

    def __init__(self, fail=(), horizon: int = H) -> None:
        self.fail = set(fail)
        self.horizon = horizon
        self.observations: list[dict] = []
        self.resets = 0

    def infer(self, observation: dict) -> dict:
        number = len(self.observations)
        self.observations.append(observation)
        if number in self.fail:
            raise ConnectionError(f"request {number} lost")
        return {"actions": np.array([[number, row] for row in range(self.horizon)], np.float32)}

    def reset(self) -> None:
        self.resets += 1


def run(executor: RealTimeExecutor, ticks: int) -> list:
    """The executed (request, row) pairs, with HELD appended to ticks that repeated the previous action."""
    executed = []
    for _ in range(ticks):
        action = executor.step({**OBSERVATION, "tick": executor.last_step.tick + 1 if executor.last_step else 0})
        pair = (int(action[0]), int(action[1]))
        executed.append((*pair, HELD) if executor.last_step.held else pair)
    return executed


def simulated(policy, mode: str, latency_s, **options) -> RealTimeExecutor:
    return RealTimeExecutor(
        policy, control_hz=HZ, mode=mode, replan_steps=REPLAN, simulated_latency_s=latency_s, **options
    )


def test_sync_without_latency_is_the_action_chunk_broker():
    broker = ActionChunkBroker(Chunks(), REPLAN)
    expected = [tuple(int(x) for x in broker.infer(OBSERVATION)["actions"]) for _ in range(9)]
    assert expected == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1), (4, 0)]
    for mode in ("sync", "async"):
        assert run(simulated(Chunks(), mode, 0.0), 9) == expected


def test_sync_holds_the_last_action_while_waiting_then_starts_at_row_0():
    executor = simulated(Chunks(), "sync", 0.2)
    assert run(executor, 9) == [
        (0, 0), (0, 1),                    # the first chunk was waited for before tick 0
        (0, 1, HELD), (0, 1, HELD),        # request 1 sent at tick 2, used at tick 4
        (1, 0), (1, 1),
        (1, 1, HELD), (1, 1, HELD),
        (2, 0),
    ]  # fmt: skip
    assert executor.stats.delays == [2, 2, 2] and executor.stats.held_ticks == 4


def test_async_switches_to_the_new_chunk_at_the_row_of_the_tick():
    policy = Chunks()
    executor = simulated(policy, "async", 0.2)
    assert run(executor, 9) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 2), (2, 3), (3, 2)]
    assert [obs["tick"] for obs in policy.observations] == [0, 2, 4, 6, 8]
    assert not any(key.startswith("rtc/") for obs in policy.observations for key in obs)
    assert executor.stats.held_ticks == 0


def test_rtc_under_jitter_sends_the_leftover_and_never_repeats_or_skips_a_tick():
    latencies = [0.1, 0.3, 0.1, 0.5, 0.7, 0.0]  # ticks: 1, 3, 1, 5, 7 (7 >= H: stale), 0
    policy = Chunks()
    executor = simulated(policy, "rtc", lambda number: latencies[number])
    assert run(executor, 21) == [
        (0, 0), (0, 1), (0, 2),            # request 1 sent at tick 2 ...
        (0, 3), (0, 4),
        (1, 3),                            # ... used at tick 5 from row 3; request 2 sent at tick 5
        (2, 1),                            # used at tick 6 from row 1
        (2, 2), (2, 3), (2, 4), (2, 5),    # request 3 sent at tick 7, 5 ticks late:
        (2, 5, HELD),                      # the queue ran dry at tick 11
        (3, 5),                            # tick 12: its last row; request 4 sent
        *[(3, 5, HELD)] * 6,               # ticks 13-18; request 4 is 7 ticks late: dropped at tick 19
        (5, 0), (5, 1),                    # request 5 at tick 19, with no leftover, answered at once
    ]  # fmt: skip
    ticks = [obs["tick"] for obs in policy.observations]
    assert ticks == [0, 2, 5, 7, 12, 19]
    chunk = [np.array([[n, i] for i in range(H)], np.float32) for n in range(4)]
    expected_leftovers = {1: chunk[0][2:], 2: chunk[1][3:], 3: chunk[2][2:], 4: chunk[3][5:]}
    expected_delays = {1: 1, 2: 3, 3: 3, 4: 1}  # the largest delay seen so far, at most the leftover's rows
    for number, obs in enumerate(policy.observations):
        if number in expected_leftovers:
            np.testing.assert_array_equal(obs[wire.RTC_PREFIX_ACTIONS], expected_leftovers[number])
            assert obs[wire.RTC_INFERENCE_DELAY] == expected_delays[number]
        else:
            assert wire.RTC_PREFIX_ACTIONS not in obs and wire.RTC_INFERENCE_DELAY not in obs
    stats = executor.stats
    assert stats.delays == [1, 3, 1, 5, 7, 0] and stats.stale == 1 and stats.held_ticks == 7
    assert stats.requests == 6 and stats.chunks == 5 and executor.delay == 7


def test_a_failed_request_is_asked_again_while_the_queue_lasts():
    policy = Chunks(fail={1})
    executor = simulated(policy, "rtc", 0.1)
    assert run(executor, 6) == [(0, 0), (0, 1), (0, 2), (0, 3), (2, 1), (2, 2)]
    assert [obs["tick"] for obs in policy.observations] == [0, 2, 3, 5]
    assert executor.stats.errors == 1


def test_a_failure_with_nothing_left_raises_without_using_up_the_tick():
    policy = Chunks(fail={0, 2})
    executor = simulated(policy, "sync", 0.0)
    with pytest.raises(ConnectionError, match="request 0 lost"):
        executor.step(OBSERVATION)
    assert run(executor, 2) == [(1, 0), (1, 1)]
    with pytest.raises(ConnectionError, match="request 2 lost"):
        executor.step(OBSERVATION)
    assert executor.last_step.tick == 1
    assert run(executor, 2) == [(3, 0), (3, 1)]
    assert executor.last_step.tick == 3 and executor.stats.errors == 2


def test_reset_drops_the_queue_and_resets_the_policy_but_keeps_the_delays():
    policy = Chunks()
    executor = simulated(policy, "rtc", 0.1)
    run(executor, 3)
    executor.reset()
    assert policy.resets == 1 and executor.last_step is None
    assert run(executor, 2) == [(2, 0), (2, 1)]  # request 1 (sent at tick 2) was dropped with the queue
    assert executor.delay == 1


def test_chunks_must_have_replan_steps_rows():
    executor = simulated(Chunks(horizon=1), "async", 0.0)
    with pytest.raises(InputError, match=r"\[H >= replan_steps=2, action dim\]"):
        executor.step(OBSERVATION)
    with pytest.raises(InputError, match="mode should be one of"):
        simulated(Chunks(), "fast", 0.0)


class Gated(Chunks):
    """Chunks whose ``n``-th answer waits for ``gates[n]``."""

    def __init__(self) -> None:
        super().__init__()
        self.gates = [threading.Event() for _ in range(4)]

    def infer(self, observation: dict) -> dict:
        assert self.gates[len(self.observations)].wait(10)
        return super().infer(observation)


def test_in_real_time_a_background_thread_answers_and_a_waiting_step_is_timed():
    policy = Gated()
    policy.gates[0].set()
    times = iter([0.0, 0.25])  # the first request's round trip: 0.25 s, 3 ticks at 10 Hz

    def clock():
        return next(times, 1.0)

    with RealTimeExecutor(policy, control_hz=HZ, mode="rtc", replan_steps=REPLAN, clock=clock) as executor:
        assert run(executor, 4) == [(0, 0), (0, 1), (0, 2), (0, 3)]  # request 1 in flight since tick 2
        policy.gates[1].set()
        concurrent.futures.wait([executor._pending._future], timeout=10)
        assert run(executor, 2) == [(1, 2), (1, 3)]  # first seen at tick 4: 2 ticks after it was sent
        np.testing.assert_array_equal(policy.observations[1][wire.RTC_PREFIX_ACTIONS][:, 1], [2, 3, 4, 5])
        assert policy.observations[1][wire.RTC_INFERENCE_DELAY] == 3
        assert executor.stats.delays == [3, 2]
        policy.gates[2].set()  # request 2, sent at tick 4, may finish
