"""The denoising step is one static-shape graph: torch.compile(fullgraph=True) takes it whole.

The ``aot_eager`` backend traces and functionalises exactly as inductor would (so
graph breaks and the in-place KV-cache writes are exercised) without generating
code, which keeps the test fast on CPU.
"""

import numpy as np
import pytest
import torch


@pytest.fixture()
def step_inputs(case):
    module = case.model.module
    inputs = case.model._inputs(case.ref.observation())
    with torch.inference_mode():
        cache = module.fill_cache(*module.embed_prefix(inputs), inputs.state)
    x_t = torch.from_numpy(case.ref.io["inputs/noise"])
    return module, x_t, torch.full((2,), 0.7), cache


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_explain_reports_graph_breaks():
    """Guards the check below: explain does see a break when there is one."""

    def broken(x):
        x = x + 1
        torch._dynamo.graph_break()
        return x * 2

    assert torch._dynamo.explain(broken)(torch.ones(3)).graph_break_count == 1


def test_denoise_step_has_no_graph_breaks(step_inputs):
    module, x_t, time, cache = step_inputs
    with torch.inference_mode():
        explanation = torch._dynamo.explain(module.denoise_step)(x_t, time, cache)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_step_samples_the_same_actions_as_eager(case):
    """``Pi0Model.compile`` swaps in ``torch.compile(denoise_step, fullgraph=True)``; three
    steps at three times reuse one graph and overwrite the cache's suffix tail each time."""
    from openpi_backend_torch.pi0 import Pi0Model

    model = Pi0Model.from_params(case.ref.config, case.params)
    observation, noise = case.ref.observation(), case.ref.io["inputs/noise"]
    eager = model.sample_actions(observation, noise=noise, num_steps=3)
    model.compile(backend="aot_eager")
    np.testing.assert_array_equal(model.sample_actions(observation, noise=noise, num_steps=3), eager)
