"""Guided real-time chunking in both backends against the paper's algorithm written out
in numpy, in the paper's own time convention, with the Jacobian taken by finite
differences of each backend's plain velocity."""

import numpy as np
import pytest

from openpi_conformance.fixtures import seeded_actions, seeded_observation, seeded_params, tiny_pi0_config
from openpi_core.models.api import draw_noise
from openpi_core.models.rtc import prefix_weights

EPSILON = 3e-2
"""Central-difference step. Actions are of order one; a smaller step lets the float32
rounding of the velocity dominate (measured on π0 in torch: 2.9e-3 off at 3e-3, 1.1e-3
at 1e-2, 8.5e-4 at 3e-2)."""

TOLERANCE = 5e-3
"""About 6x the difference measured at :data:`EPSILON`. Mistakes are ~200x larger:
dropping the Jacobian term of g moves the chunk by 0.99, swapping τ and 1 - τ by 1.28,
reversing the guidance-weight schedule by 1.0."""

STEPS = 3
"""At τ = 0, 1/3, 2/3 the one-jump estimate's factor (1 - τ) and the guidance weight
differ from what a swapped time convention would give."""


@pytest.fixture(autouse=True)
def single_intra_op_thread():
    """The tiny model gains nothing from torch's intra-op threads, and on a loaded
    two-core machine their spin-waiting makes each of the ~300 velocity calls 20x slower."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(backend: str, family: str):
    module = pytest.importorskip(f"openpi_backend_{backend}.backend")
    config = tiny_pi0_config(family)
    instance = module.JaxBackend() if backend == "jax" else module.TorchBackend()
    return instance.load_model(seeded_params(config), config), config


def guided_by_the_paper(model, observation, noise, prefix, weights, beta) -> np.ndarray:
    """Algorithm 1 of Black, Galliker, Levine (2025): τ from 0 (noise) to 1 (data),
    velocity v = -(our velocity at t = 1 - τ), A ← A + (1/n)(v + min(β, (1 - τ)/(τ r²)) g)
    with g = ((Y - Â¹) W)ᵀ ∂Â¹/∂A and Â¹ = A + (1 - τ) v."""
    batch = noise.shape[0]

    def v(actions: np.ndarray, tau: float) -> np.ndarray:
        time = np.full(batch, 1.0 - tau, np.float32)
        return -model.velocity(observation, actions.astype(np.float32), time).astype(np.float64)

    actions = noise.astype(np.float64)
    for step in range(STEPS):
        tau = step / STEPS
        velocity = v(actions, tau)
        clean = actions + (1 - tau) * velocity
        error = (prefix - clean) * weights[..., None]
        # g = error · ∂Â¹/∂A = error + (1 - τ) error · ∂v/∂A; examples are independent,
        # so one perturbation of entry (h, a) in every example gives one column each.
        g = error.copy()
        for h, a in np.ndindex(noise.shape[1:]):
            step_vector = np.zeros_like(actions)
            step_vector[:, h, a] = EPSILON
            column = (v(actions + step_vector, tau) - v(actions - step_vector, tau)) / (2 * EPSILON)
            g[:, h, a] += (1 - tau) * np.sum(error * column, axis=(1, 2))
        r2 = (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2)
        weight = beta if tau == 0 else min(beta, (1 - tau) / (tau * r2))
        actions = actions + (velocity + weight * g) / STEPS
    return actions


@pytest.mark.slow
@pytest.mark.parametrize("family", ["pi0", "pi05"])
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_guided_sampling_is_the_papers_algorithm(backend, family):
    model, config = _model(backend, family)
    observation = seeded_observation(config)
    noise = draw_noise(3, (2, config.action_horizon, config.action_dim))
    prefix = seeded_actions(config, seed=5)
    delay, execution = np.array([2, 1]), 2
    actions = model.sample_actions(
        observation,
        noise=noise,
        num_steps=STEPS,
        prefix_actions=prefix,
        inference_delay=delay,
        execution_horizon=execution,
        max_guidance_weight=5.0,
    )
    weights = prefix_weights(config.action_horizon, delay, execution).astype(np.float64)
    want = guided_by_the_paper(model, observation, noise, prefix, weights, beta=5.0)
    plain = model.sample_actions(observation, noise=noise, num_steps=STEPS)
    assert np.abs(want - plain).max() > 0.1  # guidance matters here
    np.testing.assert_allclose(actions, want, rtol=0, atol=TOLERANCE)
