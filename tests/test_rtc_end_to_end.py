"""Real-time chunking from robot to model and back: the demo policy in each backend,
served over the websocket, driven by the robot-side executor in ``rtc`` mode."""

import numpy as np
import pytest

from openpi_cli.demo import aloha_sim_observation
from openpi_core import wire
from openpi_core.client import RealTimeExecutor
from openpi_core.launch import demo_policy, serve_locally
from openpi_core.plugins import PluginManager, use_plugin_manager

aloha_plugin = pytest.importorskip("openpi_embodiment_aloha.plugin")


class Recording:
    """The websocket client, keeping each request and its answer."""

    def __init__(self, client) -> None:
        self.client = client
        self.exchanges: list[tuple[dict, np.ndarray]] = []

    def infer(self, observation: dict) -> dict:
        result = self.client.infer(observation)
        self.exchanges.append((observation, result["actions"]))
        return result


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_served_chunk_continues_the_leftover_the_robot_sent(backend):
    backend_plugin = pytest.importorskip(f"openpi_backend_{backend}.plugin")
    manager = PluginManager(entry_points=False, plugins=[(backend, backend_plugin), ("aloha", aloha_plugin)])
    with use_plugin_manager(manager):
        policy = demo_policy(backend, num_steps=5)
    assert policy.metadata["real_time_chunking"] is True
    observation = aloha_sim_observation(np.random.default_rng(0))
    with serve_locally(policy) as client:
        recording = Recording(client)
        # horizon 10, a request every 4 ticks, answers 3 ticks (60 ms at 50 Hz) after their request
        executor = RealTimeExecutor(recording, control_hz=50, mode="rtc", replan_steps=4, simulated_latency_s=0.06)
        for _ in range(12):
            executor.step(observation)
    assert executor.stats.errors == 0 and executor.stats.held_ticks == 0
    guided = [(obs, answer) for obs, answer in recording.exchanges if wire.RTC_PREFIX_ACTIONS in obs]
    assert len(guided) >= 2
    for obs, answer in guided:
        prefix, delay = obs[wire.RTC_PREFIX_ACTIONS], obs[wire.RTC_INFERENCE_DELAY]
        assert prefix.shape == (6, 14) and delay == 3
        # random weights: a plain chunk lands far from the leftover, a guided one next to it
        plain = policy.infer(observation)["actions"]
        held = np.abs(answer[:delay] - prefix[:delay]).max()
        assert held < 0.25 * np.abs(plain[:delay] - prefix[:delay]).max()
