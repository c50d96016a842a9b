"""The ALOHA simulator under simulated inference latency: sync, async and rtc execution, smoothness, durations.

A fake policy answers chunks of 20 rows that hold the robot at its start posture and
write (call, row) into the waist target: ``1e-3 * (100 * call + row)``. With 100 ms
of latency (5 control steps) and a request 10 steps after each chunk's row 0, the
executed rows of a 24-step episode are worked out by hand below.
"""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from openpi_cli.main import cli
from openpi_core import wire
from openpi_core.client import StepRecord
from openpi_core.errors import InputError
from openpi_core.plugins import PluginManager
from openpi_core.serving import BackgroundServer, ServerConfig
from openpi_embodiment_aloha import plugin

os.environ.setdefault("MUJOCO_GL", "egl")
sim_env = pytest.importorskip("openpi_embodiment_aloha.sim.env", reason="needs the sim extra")
sim_evaluate = pytest.importorskip("openpi_embodiment_aloha.sim.evaluate")

HORIZON, REPLAN, LATENCY_MS, STEPS = 20, 10, 100.0, 24


class Encoded:
    """Chunks of the rest posture with (call, row) in the waist; with ``inpaint`` it continues an rtc leftover."""

    def __init__(self, rest: np.ndarray, inpaint: bool = False) -> None:
        self.rest = rest
        self.inpaint = inpaint
        self.observations: list[dict] = []

    def __call__(self, observation: dict) -> np.ndarray:
        call = len(self.observations)
        self.observations.append(observation)
        chunk = np.tile(self.rest, (HORIZON, 1))
        chunk[:, 0] = 1e-3 * (100 * call + np.arange(HORIZON))
        if self.inpaint and wire.RTC_PREFIX_ACTIONS in observation:
            prefix = observation[wire.RTC_PREFIX_ACTIONS]
            chunk[: len(prefix)] = prefix
        return chunk


def episode(execution: str, inpaint: bool = False, latency_ms: float = LATENCY_MS):
    """One short episode; returns the results, the waist targets applied (as (call, row)) and the policy."""
    env = sim_env.AlohaSimEnv("transfer-cube", render="none")
    env.max_steps = STEPS
    rest = env.reset(0)["state"].astype(np.float32)
    policy = Encoded(rest, inpaint)
    applied = []
    step = env.step

    def recording_step(action):
        applied.append(divmod(round(float(action[0]) * 1e3), 100))
        return step(action)

    env.step = recording_step
    results = sim_evaluate.evaluate(
        policy, env, episodes=1, replan_steps=REPLAN, latency_ms=latency_ms, execution=execution
    )
    return results, applied, policy


def rows(call: int, first: int, last: int) -> list[tuple[int, int]]:
    return [(call, row) for row in range(first, last + 1)]


def test_sync_holds_while_the_chunk_is_computed():
    results, applied, _ = episode("sync")
    # rows 0-9 of call 0; call 1 asked at step 10, ready at step 15; row 9 held meanwhile
    assert applied == rows(0, 0, 9) + [(0, 9)] * 5 + rows(1, 0, 8)
    (result,) = results.episodes
    assert result.held_steps == 5 and result.inferences == 2
    assert result.duration_s == pytest.approx((5 + STEPS) / 50)  # with the wait for the first chunk
    assert result.boundary_change_max == pytest.approx(0.091, abs=1e-6)  # row 9 of call 0 -> row 0 of call 1
    assert result.within_change_mean == pytest.approx(1e-3, abs=1e-6)
    assert results.execution == "sync" and results.latency_ms == LATENCY_MS


def test_async_executes_the_queue_and_switches_at_the_row_of_the_step():
    results, applied, policy = episode("async")
    # call 1 asked at step 10 keeps executing call 0; at step 15 call 1 takes over at its row 5
    assert applied == rows(0, 0, 14) + rows(1, 5, 13)
    (result,) = results.episodes
    assert result.held_steps == 0 and result.inferences == 3  # call 2 asked at step 20
    assert result.boundary_change_max == pytest.approx(0.091, abs=1e-6)  # row 14 of call 0 -> row 5 of call 1
    assert not any(key.startswith("rtc/") for obs in policy.observations for key in obs)


def test_rtc_sends_the_leftover_and_a_continued_chunk_has_no_jump():
    results, applied, policy = episode("rtc", inpaint=True)
    # call 1 continues call 0's rows 10-19 (its rows 0-9), so step 15 runs call 0's row 15
    assert applied == rows(0, 0, 14) + rows(0, 15, 19) + rows(1, 10, 13)
    first, second, third = policy.observations
    assert wire.RTC_PREFIX_ACTIONS not in first
    np.testing.assert_allclose(second[wire.RTC_PREFIX_ACTIONS][:, 0], 1e-3 * np.arange(10, 20), atol=1e-7)
    assert second[wire.RTC_INFERENCE_DELAY] == 5  # the first chunk's wait: 100 ms
    assert third[wire.RTC_PREFIX_ACTIONS].shape == (10, 14) and third[wire.RTC_INFERENCE_DELAY] == 5
    (result,) = results.episodes
    assert result.boundary_change_max == pytest.approx(1e-3, abs=1e-6)
    assert results.boundary_change_max == pytest.approx(1e-3, abs=1e-6)


def test_without_latency_every_mode_runs_the_same_rows():
    executed = {mode: episode(mode, latency_ms=0.0)[1] for mode in ("sync", "async")}
    assert executed["sync"] == executed["async"] == rows(0, 0, 9) + rows(1, 0, 9) + rows(2, 0, 3)


def test_evaluate_refuses_a_negative_latency_and_unknown_modes():
    env = sim_env.AlohaSimEnv("transfer-cube", render="none")
    with pytest.raises(InputError, match="latency_ms should be >= 0 and execution one of"):
        sim_evaluate.evaluate(lambda obs: np.zeros((20, 14)), env, latency_ms=-1.0)
    with pytest.raises(InputError, match=r"got 0\.0 and 'fast'"):
        sim_evaluate.evaluate(lambda obs: np.zeros((20, 14)), env, execution="fast")


def test_action_changes_and_success_step_by_hand():
    actions = [np.array([0.0, 0.0]), np.array([0.1, 0.0]), np.array([0.1, 0.0]), np.array([0.4, -0.5])]
    steps = [
        StepRecord(0, 0, 3, False),
        StepRecord(1, 0, 4, False),
        StepRecord(2, 0, 4, True),
        StepRecord(3, 1, 2, False),
    ]
    boundary, within = sim_evaluate.action_changes(actions, steps)
    assert boundary == [pytest.approx(0.5)] and within == [pytest.approx(0.1)]  # the held step counts as neither
    assert sim_evaluate.success_step([0, 4, 2, 4, 4]) == 3
    assert sim_evaluate.success_step([0, 4, 3]) is None


class Recorder:
    """A served policy that answers ``[20, 14]`` chunks of the state and keeps the rtc keys it got."""

    metadata = {"name": "recorder", "action_horizon": HORIZON}

    def __init__(self) -> None:
        self.delays: list[int | None] = []

    def prepare(self, observation):
        self.delays.append(observation.get(wire.RTC_INFERENCE_DELAY))
        return np.asarray(observation["state"], np.float32)

    def batch_key(self, prepared):
        return prepared.shape

    def run(self, prepared):
        return [{"actions": np.tile(state, (HORIZON, 1))} for state in prepared]


def test_pi_run_eval_aloha_sim_with_latency_and_rtc_over_the_websocket():
    PluginManager(entry_points=False, plugins=[("aloha", plugin)]).add_commands(cli)
    recorder = Recorder()
    with BackgroundServer(recorder, ServerConfig(port=0, api_key=None)) as background:
        url = f"ws://127.0.0.1:{background.server.port}"
        args = ["run", "eval", "aloha-sim", "--server", url, "--episodes", "1", "--latency-ms", "200"]
        result = CliRunner().invoke(cli, [*args, "--execution", "rtc", "--render", "fast", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["execution"] == "rtc" and data["latency_ms"] == 200.0
    (episode_data,) = data["episodes"]
    steps = sim_env.EPISODE_STEPS["transfer-cube"]
    assert episode_data["duration_s"] == pytest.approx((10 + steps) / 50) and episode_data["held_steps"] == 0
    assert data["within_change_max"] is not None and data["boundary_change_max"] is not None
    assert recorder.delays[0] is None and set(recorder.delays[1:]) == {10}  # 200 ms: 10 control steps
