"""Real-time chunking in torch: plain sampling untouched and still in inference mode,
guidance through a compiled step, the KV cache left as the prefix wrote it."""

import numpy as np
import pytest
import torch

from openpi_backend_torch.pi0 import Pi0Model, Pi0Module
from openpi_backend_torch.precision import exact_float32
from openpi_core.errors import InputError


def test_without_a_prefix_the_plain_sampler_runs_in_inference_mode(case, monkeypatch):
    model, obs, noise = case.model, case.ref.observation(), case.ref.io["inputs/noise"]
    with exact_float32(), torch.inference_mode():
        plain = model.module.sample(model._inputs(obs), torch.from_numpy(noise), 10).numpy()
    modes = []
    step = model.module.denoise_step

    def recording_step(*args):
        modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        return step(*args)

    monkeypatch.setattr(model, "_step", recording_step)
    monkeypatch.setattr(Pi0Module, "sample_guided", lambda *args: pytest.fail("guided sampler called"))
    np.testing.assert_array_equal(model.sample_actions(obs, noise=noise), plain)
    # Delay and horizon without a prefix are unused.
    again = model.sample_actions(obs, noise=noise, inference_delay=3, execution_horizon=4, max_guidance_weight=1.0)
    np.testing.assert_array_equal(again, plain)
    assert modes == [(True, False)] * 20


def test_guided_steps_record_gradients_and_leave_the_cache_alone(case):
    model, obs, noise = case.model, case.ref.observation(), case.ref.io["inputs/noise"]
    module = model.module
    inputs = model._inputs(obs)
    with exact_float32(), torch.no_grad():
        cache = module.fill_cache(*module.embed_prefix(inputs), inputs.state)
        before = cache.kv.keys.clone(), cache.kv.values.clone()
        x_t = torch.from_numpy(noise).requires_grad_()
        with torch.enable_grad():
            velocity = module.denoise_step(x_t, torch.full((2,), 0.6), cache)
            (gradient,) = torch.autograd.grad(velocity.sum(), x_t)
        torch.testing.assert_close(cache.kv.keys, before[0], rtol=0, atol=0)
        torch.testing.assert_close(cache.kv.values, before[1], rtol=0, atol=0)
        plain = module.denoise_step(x_t.detach(), torch.full((2,), 0.6), cache)  # writes the cache's tail
    assert torch.all(torch.isfinite(gradient)) and gradient.abs().max() > 0
    torch.testing.assert_close(velocity.detach(), plain, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_compiled_step_guides_like_the_eager_one(case):
    torch._dynamo.reset()
    model = Pi0Model.from_params(case.ref.config, case.params)
    obs, noise = case.ref.observation(), case.ref.io["inputs/noise"]
    prefix = np.roll(case.ref.io["outputs/actions"], -3, axis=1)
    arguments = {"prefix_actions": prefix, "inference_delay": np.array([2, 3]), "execution_horizon": 3}
    eager = model.sample_actions(obs, noise=noise, num_steps=3, **arguments)
    model.compile(backend="aot_eager")
    try:
        compiled = model.sample_actions(obs, noise=noise, num_steps=3, **arguments)
        np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-6)
        # The plain path still compiles and runs after a guided call.
        plain = model.sample_actions(obs, noise=noise, num_steps=3)
        assert np.all(np.isfinite(plain)) and not np.allclose(plain[:, :2], compiled[:, :2])
    finally:
        torch._dynamo.reset()


def test_guided_sampling_checks_its_arguments(case):
    obs = case.ref.observation()
    with pytest.raises(InputError, match="inference_delay is required"):
        case.model.sample_actions(obs, prefix_actions=np.zeros((2, 10, 32)), execution_horizon=1)
    with pytest.raises(InputError, match=r"inference_delay should lie in \[0, 10\]"):
        case.model.sample_actions(obs, prefix_actions=np.zeros((2, 10, 32)), inference_delay=11, execution_horizon=1)
