"""Real-time chunking in JAX: plain sampling untouched, one compilation per shape."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from openpi_backend_jax import pi0
from openpi_core.errors import InputError


def shifted_chunk(actions: np.ndarray, execution_horizon: int) -> np.ndarray:
    """The previous chunk seen from the next one: its steps from ``s`` on, the last repeated."""
    tail = np.repeat(actions[:, -1:], execution_horizon, axis=1)
    return np.concatenate([actions[:, execution_horizon:], tail], axis=1)


def test_without_a_prefix_the_plain_sampler_runs_unchanged(model, reference):
    obs, noise = reference.observation(), reference.io["inputs/noise"]
    guided_traces = eqx.debug.get_num_traces(pi0.sample_actions_guided)
    plain = pi0.sample_actions(model.module, model.inputs(obs), jnp.asarray(noise), jnp.asarray(10, jnp.int32))
    np.testing.assert_array_equal(model.sample_actions(obs, noise=noise), np.asarray(plain))
    # Delay and horizon without a prefix are unused.
    again = model.sample_actions(obs, noise=noise, inference_delay=3, execution_horizon=4, max_guidance_weight=1.0)
    np.testing.assert_array_equal(again, np.asarray(plain))
    assert eqx.debug.get_num_traces(pi0.sample_actions_guided) == guided_traces


def test_guided_sampler_compiles_once_for_every_delay_and_prefix(model, reference):
    obs, noise = reference.observation(), reference.io["inputs/noise"]
    previous = shifted_chunk(reference.io["outputs/actions"], 3)
    model.sample_actions(obs, noise=noise, prefix_actions=previous, inference_delay=2, execution_horizon=3)
    traced = eqx.debug.get_num_traces(pi0.sample_actions_guided)
    rng = np.random.default_rng(0)
    for delay, execution, weight in ((np.array([0, 3]), 4, 5.0), (5, 0, 1.0), (np.array([1, 1]), 10, 0.0)):
        prefix = rng.normal(size=previous.shape).astype(np.float32)
        actions = model.sample_actions(
            obs,
            noise=noise,
            prefix_actions=prefix,
            inference_delay=delay,
            execution_horizon=execution,
            max_guidance_weight=weight,
        )
        assert actions.shape == previous.shape and np.all(np.isfinite(actions))
    assert eqx.debug.get_num_traces(pi0.sample_actions_guided) == traced


def test_guidance_pulls_the_delayed_steps_onto_the_prefix(model, reference):
    obs, noise = reference.observation(), reference.io["inputs/noise"]
    previous = shifted_chunk(model.sample_actions(obs, num_steps=10, seed=9), 3)
    delay = np.array([3, 1])
    plain = model.sample_actions(obs, noise=noise)
    guided = model.sample_actions(obs, noise=noise, prefix_actions=previous, inference_delay=delay, execution_horizon=3)
    for row, d in enumerate(delay):
        before = np.abs(plain[row, :d] - previous[row, :d]).max()
        after = np.abs(guided[row, :d] - previous[row, :d]).max()
        assert after < before / 5, (row, before, after)
    # Steps from H - s on carry no weight, but the whole chunk moves with its start.
    assert not np.allclose(guided[:, 7:], plain[:, 7:])


def test_guided_sampling_checks_its_arguments(model, reference):
    obs = reference.observation()
    with pytest.raises(InputError, match="execution_horizon is required"):
        model.sample_actions(obs, prefix_actions=np.zeros((2, 10, 32)), inference_delay=1)
    with pytest.raises(InputError, match=r"prefix_actions should have shape \[2, 10, 32\]"):
        model.sample_actions(obs, prefix_actions=np.zeros((2, 10, 8)), inference_delay=1, execution_horizon=2)
