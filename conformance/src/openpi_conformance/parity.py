"""What each π0-family parity check compares, and how each backend's numbers are made.

Two backends build the same model from one seeded set of weights and see the same
seeded batch; their outputs must agree within the bounds below.
"""

import functools

import numpy as np

from openpi_conformance.fixtures import seeded_actions, seeded_observation, seeded_params, tiny_pi0_config
from openpi_core.models.api import draw_noise, draw_time
from openpi_core.plugins import get_backend

FLOAT32_BOUND = 5e-6
"""Absolute bound between our backends in float32 (openpi's own JAX and PyTorch differ by
1.8e-5 on actions, mostly from a float64 time embedding on the PyTorch side)."""

GRADIENT_BOUND = 1e-4
"""Relative bound on every parameter's gradient, float32."""

BFLOAT16_BOUNDS = {"prefix_embeddings": 0.1, "velocity": 0.1, "actions": 0.1, "loss": 0.1}
"""Absolute bounds in bfloat16, measured on the tiny model (see the README)."""

OUTPUTS = ("prefix_embeddings", "prefix_mask", "velocity", "actions", "loss")


def bound(output: str, dtype: str) -> float:
    if output == "prefix_mask":
        return 0.0
    return FLOAT32_BOUND if dtype == "float32" else BFLOAT16_BOUNDS[output]


@functools.cache
def backend_outputs(backend: str, family: str, dtype: str) -> dict[str, object]:
    """Every compared output of ``backend`` for the tiny ``family`` model in ``dtype``.

    ``gradients`` (float32 only) maps canonical parameter names to the gradient of the
    mean loss.
    """
    config = tiny_pi0_config(family, dtype)
    model = get_backend(backend).load_model(seeded_params(config), config)
    observation = seeded_observation(config)
    actions = seeded_actions(config)
    shape = actions.shape
    noise = draw_noise(3, shape)
    time = draw_time(4, shape[0])
    tokens, mask, _ = model.embed_prefix(observation)
    outputs: dict[str, object] = {
        # Tokens of a masked camera are computed but never attended to; compare only valid ones.
        "prefix_embeddings": np.where(mask[..., None], tokens, 0.0),
        "prefix_mask": mask,
        "velocity": model.velocity(observation, noise, np.full(shape[0], 0.7, np.float32)),
        "actions": model.sample_actions(observation, noise=noise, num_steps=10),
        "loss": model.compute_loss(observation, actions, noise=noise, time=time),
    }
    if dtype == "float32":
        _, outputs["gradients"] = model.loss_gradients(observation, actions, noise, time)
    return outputs
