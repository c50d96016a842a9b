"""Real-time chunking requests through a Policy: the leftover's way into model space, batching, refusals.

A fake model records what reaches ``sample_actions``; the expected model-space prefix is
computed by hand from the ALOHA conventions (joint signs, gripper maps), delta actions
and z-score norm stats.
"""

import types

import numpy as np
import pytest

from openpi_core.client import WebsocketClientPolicy
from openpi_core.errors import InputError
from openpi_core.policy import GuidedObservation, Policy
from openpi_core.serving import BackgroundServer, ServerConfig
from openpi_core.transforms import AbsoluteActions, DeltaActions, Normalize, NormStats, Unnormalize
from openpi_core.transforms.common import PadStatesAndActions

aloha = pytest.importorskip("openpi_embodiment_aloha.aloha")

HORIZON, MODEL_DIM, ROBOT_DIM = 6, 32, 14
EPS = 1e-6
MASK = aloha.AlohaEmbodiment.delta_action_mask  # joints are deltas, grippers are not
STATE_STATS = NormStats(mean=np.zeros(ROBOT_DIM), std=np.ones(ROBOT_DIM))
ACTION_STATS = NormStats(mean=np.linspace(-0.3, 0.3, ROBOT_DIM), std=np.linspace(0.5, 1.8, ROBOT_DIM))
STATS = {"state": STATE_STATS, "actions": ACTION_STATS}


class GuidedModel:
    """Answers the prefix it got (or zeros), and records every call's keyword arguments."""

    def __init__(self) -> None:
        self.config = types.SimpleNamespace(action_horizon=HORIZON, action_dim=MODEL_DIM)
        self.calls: list[dict] = []

    def sample_actions(
        self, observation, noise=None, num_steps=10, seed=0, *, prefix_actions=None, inference_delay=None,
        execution_horizon=None,
    ):  # fmt: skip
        self.calls.append(
            {
                "observation": observation,
                "noise": noise,
                "prefix_actions": prefix_actions,
                "inference_delay": inference_delay,
                "execution_horizon": execution_horizon,
            }
        )
        if prefix_actions is None:
            return np.zeros((observation.batch_size, HORIZON, MODEL_DIM), np.float32)
        return prefix_actions.copy()


class PlainModel:
    """A model whose sampling takes no prefix (as π0-FAST's)."""

    def __init__(self) -> None:
        self.config = types.SimpleNamespace(action_horizon=HORIZON, action_dim=MODEL_DIM)

    def sample_actions(self, observation, noise=None, num_steps=10, seed=0):
        return np.zeros((observation.batch_size, HORIZON, MODEL_DIM), np.float32)


def make_policy(model) -> Policy:
    """The path create_policy builds for a delta-action ALOHA preset, without images resizing or a prompt."""
    embodiment = aloha.AlohaEmbodiment()
    return Policy(
        model,
        embodiment=embodiment,
        input_transforms=[*embodiment.transforms("pi0").inputs, DeltaActions(MASK), Normalize(STATS),
                          PadStatesAndActions(MODEL_DIM)],
        output_transforms=[Unnormalize(STATS), AbsoluteActions(MASK)],
        robot_output_transforms=embodiment.transforms("pi0").outputs,
    )  # fmt: skip


def observation(**rtc) -> dict:
    state = np.zeros(ROBOT_DIM)
    state[:3] = [0.1, 0.2, -0.4]
    state[[6, 13]] = [0.3, 0.7]
    obs = {"images": {"cam_high": np.zeros((224, 224, 3), np.uint8)}, "state": state}
    return {**obs, **{f"rtc/{key}": value for key, value in rtc.items()}}


def leftover(rows: int = 3) -> np.ndarray:
    """Robot-space actions [rows, 14]: joint j of row i is 0.1 * (i + 1) + 0.01 * j, grippers in [0, 1]."""
    actions = 0.1 * np.arange(1, rows + 1)[:, None] + 0.01 * np.arange(ROBOT_DIM)[None, :]
    actions[:, 6] = 0.5
    actions[:, 13] = 0.25 + 0.1 * np.arange(rows)
    return actions.astype(np.float32)


def test_the_leftover_reaches_the_model_in_model_space():
    model = GuidedModel()
    policy = make_policy(model)
    assert policy.real_time_chunking
    policy.infer(observation(prefix_actions=leftover(), inference_delay=2))
    (call,) = model.calls
    prefix = call["prefix_actions"]
    assert prefix.shape == (1, HORIZON, MODEL_DIM) and prefix.dtype == np.float32
    assert call["inference_delay"].tolist() == [2] and call["execution_horizon"] == HORIZON - 3
    assert not np.any(prefix[0, 3:]) and not np.any(prefix[0, :, ROBOT_DIM:])  # zero past the leftover and width

    def z(value, dim):
        return (value - ACTION_STATS.mean[dim]) / (ACTION_STATS.std[dim] + EPS)

    rows = leftover()
    for i in range(3):
        # dim 0: sign +1, a delta from the state's 0.1
        assert prefix[0, i, 0] == pytest.approx(z(rows[i, 0] - 0.1, 0), abs=1e-5)
        # dim 1: sign -1 on both the action and the state (0.2): -a - (-0.2)
        assert prefix[0, i, 1] == pytest.approx(z(-rows[i, 1] + 0.2, 1), abs=1e-5)
        # dim 2: sign -1, state -0.4
        assert prefix[0, i, 2] == pytest.approx(z(-rows[i, 2] - 0.4, 2), abs=1e-5)
        # grippers: standard ALOHA joint range [-0.6213, 1.4910] -> π angle, minus the π zero 0.5476; no delta
        for dim in (6, 13):
            angle = -0.6213 + rows[i, dim] * (1.4910 + 0.6213) - 0.5476
            assert prefix[0, i, dim] == pytest.approx(z(angle, dim), abs=1e-5)


def test_the_output_path_inverts_the_way_in():
    """The model answers the prefix it got: the robot gets its own leftover back."""
    policy = make_policy(GuidedModel())
    answer = policy.infer(observation(prefix_actions=leftover(4), inference_delay=1))["actions"]
    np.testing.assert_allclose(answer[:4], leftover(4), atol=1e-5)


def test_without_rtc_keys_the_model_gets_no_prefix():
    model = GuidedModel()
    policy = make_policy(model)
    prepared = policy.prepare(observation())
    assert not isinstance(prepared, GuidedObservation)
    policy.run([prepared])
    assert model.calls[0]["prefix_actions"] is None and model.calls[0]["inference_delay"] is None


def test_execution_horizon_and_numpy_integers_pass_through():
    model = GuidedModel()
    policy = make_policy(model)
    policy.infer(observation(prefix_actions=leftover(4), inference_delay=np.int64(1), execution_horizon=np.array(3)))
    assert model.calls[0]["execution_horizon"] == 3 and model.calls[0]["inference_delay"].tolist() == [1]


def test_guided_and_plain_requests_are_batched_apart_and_delays_stack():
    model = GuidedModel()
    policy = make_policy(model)
    plain = policy.prepare(observation())
    first = policy.prepare(observation(prefix_actions=leftover(3), inference_delay=1))
    second = policy.prepare(observation(prefix_actions=leftover(3), inference_delay=3))
    other_horizon = policy.prepare(observation(prefix_actions=leftover(4), inference_delay=1))
    keys = [policy.batch_key(item) for item in (plain, first, second, other_horizon)]
    assert keys[1] == keys[2] and len({keys[0], keys[1], keys[3]}) == 3
    with pytest.raises(InputError, match="stacks items of one batch_key"):
        policy.run([plain, first])
    results = policy.run([first, second])
    call = model.calls[-1]
    assert call["prefix_actions"].shape == (2, HORIZON, MODEL_DIM) and call["inference_delay"].tolist() == [1, 3]
    assert type(call["observation"]) is not GuidedObservation and call["observation"].batch_size == 2
    for result in results:
        np.testing.assert_allclose(result["actions"][:3], leftover(3), atol=1e-5)


@pytest.mark.parametrize(
    ("rtc", "message"),
    [
        ({"prefix_actions": leftover()}, r"needs both .* 'rtc/inference_delay' is missing"),
        ({"inference_delay": 1}, "'rtc/prefix_actions' is missing"),
        ({"prefix_actions": leftover(), "delay": 1}, r"unknown real-time chunking keys \['rtc/delay'\]"),
        ({"prefix_actions": leftover()[:, :7], "inference_delay": 1}, r"shape \[h, 14\] .*got \[3, 7\]"),
        ({"prefix_actions": leftover(HORIZON + 1), "inference_delay": 1}, r"1 <= h <= 6 .*got \[7, 14\]"),
        ({"prefix_actions": leftover(0), "inference_delay": 0}, r"got \[0, 14\]"),
        ({"prefix_actions": leftover(), "inference_delay": 4}, "between 0 and the prefix length 3, got 4"),
        ({"prefix_actions": leftover(), "inference_delay": -1}, "between 0 and the prefix length 3, got -1"),
        ({"prefix_actions": leftover(), "inference_delay": 1.0}, "'rtc/inference_delay' should be an integer"),
        ({"prefix_actions": leftover(), "inference_delay": True}, "'rtc/inference_delay' should be an integer"),
        (
            {"prefix_actions": leftover(), "inference_delay": 1, "execution_horizon": 2},
            r"between 3 \(horizon 6 minus the prefix length 3\) and 5 .* got 2",
        ),
        (
            {"prefix_actions": leftover(), "inference_delay": 2, "execution_horizon": 5},
            "and 4 .* got 5",
        ),
        ({"prefix_actions": np.full((2, 14), np.nan), "inference_delay": 1}, "should hold finite numbers"),
    ],
)
def test_malformed_rtc_keys_are_input_errors(rtc, message):
    with pytest.raises(InputError, match=message):
        make_policy(GuidedModel()).prepare(observation(**rtc))


def test_a_model_that_cannot_guide_refuses_rtc_keys_and_serves_the_rest():
    policy = make_policy(PlainModel())
    assert not policy.real_time_chunking
    assert policy.infer(observation())["actions"].shape == (HORIZON, ROBOT_DIM)
    with pytest.raises(InputError, match="cannot guide its sampling with a prefix"):
        policy.prepare(observation(prefix_actions=leftover(), inference_delay=1))


def test_served_over_the_websocket_with_batching():
    model = GuidedModel()
    config = ServerConfig(port=0, api_key=None, max_batch=4)
    with (
        BackgroundServer(make_policy(model), config) as background,
        WebsocketClientPolicy(port=background.server.port, wait_timeout_s=10) as client,
    ):
        guided = client.infer(observation(prefix_actions=leftover(2), inference_delay=np.int32(1), execution_horizon=4))
        plain = client.infer(observation())
    np.testing.assert_allclose(guided["actions"][:2], leftover(2), atol=1e-5)
    assert plain["actions"].shape == (HORIZON, ROBOT_DIM)
    guided_calls = [call for call in model.calls if call["prefix_actions"] is not None]
    assert guided_calls[-1]["execution_horizon"] == 4 and guided_calls[-1]["inference_delay"].tolist() == [1]
    assert model.calls[-1]["prefix_actions"] is None
