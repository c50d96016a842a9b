"""Real-time chunking's guided sampling (:mod:`openpi_core.models.rtc`) on the tiny models:
two backends agree, the committed steps follow the prefix, and zero guidance is plain
sampling.

Every backend samples the same seeded batch from the same noise, guided towards the
same seeded previous chunk, in float32 with 10 steps.
"""

import functools

import numpy as np

from openpi_conformance.fixtures import seeded_actions, seeded_observation, seeded_params, tiny_pi0_config
from openpi_conformance.parity import FLOAT32_BOUND
from openpi_core.models.api import draw_noise
from openpi_core.plugins import get_backend

INFERENCE_DELAY = np.array([2, 1])
"""``d`` per example: steps the previous chunk still runs before the new one starts."""

EXECUTION_HORIZON = 3
"""``s``: with the tiny models' horizon of 6 the mask ends at step ``6 - 3``, so each
example has full-weight steps, a decaying step (where ``d < H - s``) and free steps."""

PAIR_OUTPUTS = ("rtc_actions",)
"""Compared between two backends, within :data:`~openpi_conformance.parity.FLOAT32_BOUND`."""

BACKEND_OUTPUTS = ("rtc_prefix_adherence", "rtc_zero_guidance")
"""Checked in each backend on its own."""

ADHERENCE_BOUND = 1.0
"""Largest ``|guided - prefix|`` over the first ``d`` steps (the prefix is N(0, 1)).
Measured on the tiny models, the same in both backends: 0.079 (π0) and 0.37 (π0.5),
where plain sampling from the same noise is 4.3 and 4.9 away. The bound leaves 2.7x
room over the worst and stays 4x below unguided sampling, so a backend that does not
guide, guides the wrong way or at the wrong steps fails it. Guidance is a soft pull
(clipped at β = 5 over 10 steps), not a copy, hence not a float32-sized bound."""

ZERO_GUIDANCE_BOUND = FLOAT32_BOUND
"""``d = 0`` and ``max_guidance_weight = 0`` against plain sampling. Both backends give
bit-identical chunks on CPU; the bound leaves room for a compiler that fuses the guided
graph differently."""


@functools.cache
def rtc_outputs(backend: str, family: str) -> dict[str, np.ndarray]:
    """``guided``, ``zero_guidance`` and ``plain`` chunks ``[B, H, A]`` and the ``prefix``."""
    config = tiny_pi0_config(family, "float32")
    model = get_backend(backend).load_model(seeded_params(config), config)
    observation = seeded_observation(config)
    prefix = seeded_actions(config, seed=5)
    noise = draw_noise(3, prefix.shape)
    rtc = {"prefix_actions": prefix, "execution_horizon": EXECUTION_HORIZON}
    return {
        "prefix": prefix,
        "guided": model.sample_actions(observation, noise=noise, num_steps=10, inference_delay=INFERENCE_DELAY, **rtc),
        "zero_guidance": model.sample_actions(
            observation, noise=noise, num_steps=10, inference_delay=0, max_guidance_weight=0.0, **rtc
        ),
        "plain": model.sample_actions(observation, noise=noise, num_steps=10),
    }


def prefix_distance(chunk: np.ndarray, prefix: np.ndarray) -> float:
    """Largest ``|chunk - prefix|`` over each example's first ``d`` steps."""
    return max(
        float(np.max(np.abs(chunk[row, :delay] - prefix[row, :delay]), initial=0.0))
        for row, delay in enumerate(INFERENCE_DELAY)
    )
