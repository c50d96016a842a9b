"""Real-time chunking's shared numbers against values derived by hand from the paper."""

import math

import numpy as np
import pytest

from openpi_core.errors import InputError
from openpi_core.models.rtc import guidance, guidance_weights, prefix_weights, sampler_times


def exp_decay(c: float) -> float:
    """The paper's decay of the soft mask: c (e^c - 1) / (e - 1)."""
    return c * (math.exp(c) - 1.0) / (math.e - 1.0)


def test_prefix_weights_hold_the_delay_then_decay_to_zero_at_h_minus_s():
    # H = 10, d = 2, s = 4: full weight on steps 0-1, decay over 2-5 with
    # c_i = (H - s - i) / (H - s - d + 1) = (6 - i) / 5, nothing from step 6 on.
    want = [1.0, 1.0, exp_decay(0.8), exp_decay(0.6), exp_decay(0.4), exp_decay(0.2), 0.0, 0.0, 0.0, 0.0]
    weights = prefix_weights(10, 2, 4)
    assert weights.dtype == np.float32 and weights.shape == (10,)
    np.testing.assert_allclose(weights, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("horizon", "delay", "execution", "want"),
    [
        (5, 0, 1, [exp_decay(0.8), exp_decay(0.6), exp_decay(0.4), exp_decay(0.2), 0.0]),  # no delay: decay from 0
        (8, 5, 4, [1.0] * 4 + [0.0] * 4),  # delay past H - s is lowered to H - s: a hard mask
        (6, 2, 6, [0.0] * 6),  # s = H: the previous chunk reaches no step of the new one
        (4, 4, 0, [1.0] * 4),  # everything is already committed
        (4, 1, 2, [1.0, exp_decay(0.5), 0.0, 0.0]),  # c_1 = (2 - 1) / (2 - 1 + 1)
    ],
)
def test_prefix_weights_edge_cases(horizon, delay, execution, want):
    np.testing.assert_allclose(prefix_weights(horizon, delay, execution), want, rtol=1e-6, atol=0)


def test_prefix_weights_per_example_delays():
    weights = prefix_weights(12, np.array([0, 3, 7]), 5)
    assert weights.shape == (3, 12)
    for row, delay in zip(weights, (0, 3, 7), strict=True):
        np.testing.assert_array_equal(row, prefix_weights(12, delay, 5))
    assert np.all(np.diff(weights, axis=-1) <= 0) and weights.min() >= 0 and weights.max() == 1


def paper_weight(tau: float, beta: float) -> float:
    """min(β, (1 - τ) / (τ r²)), r² = (1 - τ)² / (τ² + (1 - τ)²), infinite at τ = 0."""
    if tau == 0:
        return beta
    r2 = (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2)
    return min(beta, (1 - tau) / (tau * r2))


def test_sampler_times_run_from_one_down_to_one_over_n():
    times = sampler_times(10)
    assert times.dtype == np.float32 and times[0] == 1.0
    np.testing.assert_allclose(times, 1 - np.arange(10) / 10, atol=1e-6, rtol=0)
    assert sampler_times(1).tolist() == [1.0]


def test_guidance_weights_are_the_papers_schedule_in_our_time():
    weights = guidance_weights(10, 5.0)
    # Our step k runs at t = 1 - k/10, the paper's τ = k/10.
    want = [paper_weight(k / 10, 5.0) for k in range(10)]
    np.testing.assert_allclose(weights, want, rtol=1e-5, atol=0)
    # By hand: τ = 0.5 gives (1/2) / ((1/2)(1/2)) = 2; τ = 0.3 gives (0.09 + 0.49) / 0.21.
    np.testing.assert_allclose(weights[[0, 3, 5, 7]], [5.0, 0.58 / 0.21, 2.0, 0.58 / 0.21], rtol=1e-5)
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(guidance_weights(4, 0.0), np.zeros(4, np.float32))
    np.testing.assert_allclose(guidance_weights(3, 100.0), [100.0, paper_weight(1 / 3, 100), paper_weight(2 / 3, 100)])


def test_guidance_checks_and_packs_the_arguments():
    shape = (2, 6, 3)
    prefix = np.ones(shape)
    assert guidance(None, 3, 2, 5.0, shape=shape, num_steps=4) is None
    packed = guidance(prefix, 2, 3, 5.0, shape=shape, num_steps=4)
    assert packed.prefix_actions.dtype == np.float32 and packed.prefix_actions.shape == shape
    np.testing.assert_array_equal(packed.prefix_weights, np.stack([prefix_weights(6, 2, 3)] * 2))
    np.testing.assert_array_equal(packed.step_weights, guidance_weights(4, 5.0))
    per_example = guidance(prefix, np.array([0, 2]), 3, 5.0, shape=shape, num_steps=4)
    np.testing.assert_array_equal(per_example.prefix_weights, prefix_weights(6, np.array([0, 2]), 3))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prefix_actions": np.ones((2, 5, 3))}, r"prefix_actions should have shape \[2, 6, 3\]"),
        ({"prefix_actions": np.full((2, 6, 3), np.nan)}, "NaN"),
        ({"inference_delay": None}, "inference_delay is required"),
        ({"execution_horizon": None}, "execution_horizon is required"),
        ({"inference_delay": 7}, r"inference_delay should lie in \[0, 6\]"),
        ({"inference_delay": np.array([1, -1])}, r"inference_delay should lie in \[0, 6\]"),
        ({"inference_delay": 1.5}, "inference_delay should be an integer"),
        ({"inference_delay": np.array([1, 2, 3])}, r"inference_delay should be one integer or have shape \[2\]"),
        ({"execution_horizon": np.array([1, 2])}, "execution_horizon should be one integer"),
        ({"execution_horizon": -1}, r"execution_horizon should lie in \[0, 6\]"),
        ({"max_guidance_weight": -1.0}, "max_guidance_weight"),
        ({"max_guidance_weight": float("inf")}, "max_guidance_weight"),
    ],
)
def test_guidance_rejects_bad_arguments(changes, message):
    arguments = {"prefix_actions": np.ones((2, 6, 3)), "inference_delay": 2, "execution_horizon": 3}
    arguments["max_guidance_weight"] = 5.0
    arguments.update(changes)
    with pytest.raises(InputError, match=message):
        guidance(**arguments, shape=(2, 6, 3), num_steps=4)
