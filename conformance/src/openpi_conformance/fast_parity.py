"""What the π0-FAST parity checks compare, and how each backend's numbers are made."""

import functools

import numpy as np

from openpi_conformance.fixtures import seeded_observation, seeded_params, tiny_pi0_fast_config
from openpi_core.plugins import get_backend

LOGITS_BOUND = 1e-4
"""Absolute bound on logits in float32 (openpi's reference suggests comparing logits with a
tolerance: magnitudes of a few units make 1e-5 too tight for float32 rounding)."""

LOSS_BOUND = 1e-5
GRADIENT_BOUND = 1e-4

FAST_OUTPUTS = ("prefix_embeddings", "prefix_logits", "loss", "greedy_tokens", "gradients")


def fast_bound(output: str) -> float:
    return {"prefix_embeddings": 5e-6, "prefix_logits": LOGITS_BOUND, "loss": LOSS_BOUND, "greedy_tokens": 0.0}[output]


@functools.cache
def fast_backend_outputs(backend: str) -> dict[str, object]:
    """Every compared π0-FAST output of ``backend`` in float32 for the tiny model.

    The weights are scaled up three-fold (as in openpi's FAST reference) so greedy
    decoding does not repeat one token and its choices are not near-ties.
    """
    config = tiny_pi0_fast_config()
    params = {
        name: value * np.float32(3.0) if name.startswith("llm.layers.") and not name.endswith("norm.scale") else value
        for name, value in seeded_params(config).items()
    }
    model = get_backend(backend).load_model(params, config)
    observation = seeded_observation(config)
    tokens, mask, _ = model.embed_prefix(observation)
    logits = model.prefix_logits(observation)
    loss, gradients = model.loss_gradients(observation)
    return {
        "prefix_embeddings": np.where(mask[..., None], tokens, 0.0),
        "prefix_logits": np.where(mask[..., None], logits, 0.0),
        "loss": model.compute_loss(observation),
        "greedy_tokens": model.sample_actions(observation, num_steps=config.max_decoding_steps),
        "gradients": gradients,
        "loss_from_gradients": loss,
    }
