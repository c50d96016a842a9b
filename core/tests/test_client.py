"""The robot side: the websocket client against a real server, the chunk broker, the image helpers."""

import socket
import threading
import time

import numpy as np
import pytest

from openpi_core import wire
from openpi_core.client import ActionChunkBroker, ServerError, ServerUnavailableError, WebsocketClientPolicy
from openpi_core.client.image_tools import convert_to_uint8, resize_with_pad
from openpi_core.errors import InputError, OpenpiError
from openpi_core.serving import BackgroundServer, ServerConfig
from openpi_core.transforms import image as core_image

TIMEOUT_S = 10.0


class DoublingPolicy:
    """actions = [2 * state, 3 * state]; refuses a missing state."""

    metadata = {"name": "doubling", "action_horizon": 2}

    def prepare(self, observation: dict) -> np.ndarray:
        if "state" not in observation:
            raise InputError("state: missing")
        return np.asarray(observation["state"], np.float32)

    def batch_key(self, prepared: np.ndarray) -> tuple:
        return prepared.shape

    def run(self, prepared: list[np.ndarray]) -> list[dict]:
        return [{"actions": np.stack([2 * state, 3 * state])} for state in prepared]


def serve(**config) -> BackgroundServer:
    return BackgroundServer(DoublingPolicy(), ServerConfig(**{"port": 0, "api_key": None, **config}))


def client(port: int, **kwargs) -> WebsocketClientPolicy:
    return WebsocketClientPolicy("127.0.0.1", port, **{"wait_timeout_s": TIMEOUT_S, "retry_interval_s": 0.05, **kwargs})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_infer_returns_the_policy_answer_and_metadata():
    with serve(metadata={"robot": "test"}) as background, client(background.server.port) as policy:
        assert policy.get_server_metadata() == {"name": "doubling", "action_horizon": 2, "robot": "test"}
        answer = policy.infer({"state": np.array([1.0, 2.0], np.float32), "prompt": "go"})
        policy.reset()
        again = policy.infer({"state": np.array([1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(answer["actions"], [[2.0, 4.0], [3.0, 6.0]])
    assert "infer_ms" in answer["server_timing"] and "prev_total_ms" in again["server_timing"]


def test_a_refused_request_raises_the_server_text_and_the_next_call_reconnects():
    with serve() as background, client(background.server.port) as policy:
        with pytest.raises(ServerError) as refused:
            policy.infer({"prompt": "no state"})
        assert str(refused.value) == "InputError: state: missing"
        assert refused.value.code == wire.CLOSE_POLICY_VIOLATION and isinstance(refused.value, OpenpiError)
        np.testing.assert_array_equal(policy.infer({"state": np.ones(1)})["actions"], [[2.0], [3.0]])


def test_a_too_big_observation_raises_with_code_1009():
    with (
        serve(max_message_bytes=1024) as background,
        client(background.server.port) as policy,
        pytest.raises(ServerError) as refused,
    ):
        policy.infer({"state": np.zeros(1024, np.float32)})
    assert refused.value.code == wire.CLOSE_TOO_BIG and "exceeds limit of 1024 bytes" in str(refused.value)


def test_the_client_waits_for_a_server_that_starts_late():
    port = free_port()
    connected: list[WebsocketClientPolicy] = []
    thread = threading.Thread(target=lambda: connected.append(client(port)))
    thread.start()
    time.sleep(0.3)
    with serve(port=port):
        thread.join(TIMEOUT_S)
        with connected[0] as policy:
            np.testing.assert_array_equal(policy.infer({"state": np.ones(1)})["actions"], [[2.0], [3.0]])


def test_the_client_gives_up_after_its_wait_timeout():
    start = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="no server admitted us"):
        client(free_port(), wait_timeout_s=0.3)
    assert time.monotonic() - start < 2.0


def test_api_key_wrong_is_refused_at_once_and_right_is_accepted(monkeypatch):
    with serve(api_key="s3cret") as background:
        port = background.server.port
        start = time.monotonic()
        for wrong in (None, "guess"):
            with pytest.raises(ServerError) as refused:
                client(port, api_key=wrong)
            assert refused.value.code == 401 and "Api-Key" in str(refused.value)
        assert time.monotonic() - start < 2.0  # refused, not retried
        with client(port, api_key="s3cret") as policy:
            policy.infer({"state": np.ones(1)})
        monkeypatch.setenv(wire.API_KEY_ENV, "s3cret")
        with client(port) as policy:
            policy.infer({"state": np.ones(1)})


class ChunkPolicy:
    """Answers query n with actions[h] = 10 n + h, a [D] state vector and nested per-step data."""

    def __init__(self, steps: int = 5) -> None:
        self.steps = steps
        self.queries: list[dict] = []
        self.resets = 0

    def infer(self, obs: dict) -> dict:
        self.queries.append(obs)
        base = 10.0 * len(self.queries) + np.arange(self.steps, dtype=np.float32)
        return {
            "actions": np.repeat(base[:, None], 3, axis=1),
            "state": np.arange(self.steps, dtype=np.float32),
            "extra": {"per_step": base[:, None]},
            "server_timing": {"infer_ms": 1.0},
        }

    def reset(self) -> None:
        self.resets += 1


def test_the_broker_replays_a_chunk_step_by_step_and_then_queries_again():
    inner = ChunkPolicy(steps=5)
    broker = ActionChunkBroker(inner, action_horizon=3)
    steps = [broker.infer({"tick": tick}) for tick in range(7)]
    assert [obs["tick"] for obs in inner.queries] == [0, 3, 6]
    assert [step["actions"][0] for step in steps] == [10.0, 11.0, 12.0, 20.0, 21.0, 22.0, 30.0]
    assert steps[1]["actions"].shape == (3,) and steps[1]["extra"]["per_step"].shape == (1,)
    np.testing.assert_array_equal(steps[1]["state"], np.arange(5))  # not per step: unchanged
    assert steps[1]["server_timing"] == {"infer_ms": 1.0}
    broker.reset()
    assert inner.resets == 1 and broker.infer({"tick": 7})["actions"][0] == 40.0


def test_the_broker_refuses_a_chunk_shorter_than_its_horizon():
    with pytest.raises(InputError, match="action_horizon=6"):
        ActionChunkBroker(ChunkPolicy(steps=5), action_horizon=6).infer({})


def test_the_broker_over_a_websocket_client():
    with serve() as background, client(background.server.port) as policy:
        broker = ActionChunkBroker(policy, action_horizon=2)
        actions = [broker.infer({"state": np.full(1, float(t))})["actions"] for t in range(4)]
    np.testing.assert_array_equal(actions, [[0.0], [0.0], [4.0], [6.0]])


def test_image_tools():
    assert resize_with_pad is core_image.resize_with_pad
    frame = np.random.default_rng(0).random((48, 64, 3))
    np.testing.assert_array_equal(convert_to_uint8(frame), (255 * frame).astype(np.uint8))
    small = resize_with_pad(convert_to_uint8(frame), 24, 24)
    assert small.dtype == np.uint8 and small.shape == (24, 24, 3)
    pixels = np.zeros((2, 2, 3), np.uint8)
    assert convert_to_uint8(pixels) is pixels
    for bad in (np.full((2, 2, 3), -0.5), np.full((2, 2, 3), np.nan)):
        with pytest.raises(InputError, match=r"\[0, 1\]"):
            convert_to_uint8(bad)
