"""One optimizer step in two backends, from the same weights, batch, noise, time and lr."""

import functools

import numpy as np

from openpi_conformance.fixtures import (
    seeded_actions,
    seeded_observation,
    seeded_params,
    tiny_pi0_config,
    tiny_pi0_fast_config,
)
from openpi_core.models.api import draw_noise, draw_time
from openpi_core.plugins import get_backend
from openpi_core.training.config import AdamWConfig, TrainConfig

STEP_LR = 1e-3
"""Large enough that a wrong update formula moves parameters visibly."""

PARAMS_BOUND = 1e-3
"""Relative bound on every parameter's change in the step (float32). A first Adam step
divides each gradient by its own magnitude, so float32 rounding in small gradients shows
up amplified: measured worst 1.3e-4 (a SigLIP norm scale)."""

ZERO_GRADIENT_PARAMETERS = ("vision.layers.attn.key.bias",)
"""Parameters whose gradient is zero in exact arithmetic (a key bias shifts every logit
of a query equally, and softmax ignores that): both backends move them by rounding noise
divided by Adam's eps, which is not a property of either implementation."""

SCALAR_BOUND = 5e-6
"""Absolute bound on the step's loss and relative bound on its gradient norm."""


def train_config() -> TrainConfig:
    # Tight clipping so the clip path is exercised; weight decay large enough to matter.
    # A first Adam step moves every parameter by about lr * g / (|g| + eps): with openpi's
    # eps of 1e-8, float32 rounding in the tiniest gradients would decide whole steps.
    # A larger eps keeps the comparison about the update formula.
    return TrainConfig(
        exp_name="conformance",
        batch_size=2,
        num_train_steps=1,
        ema_decay=0.9,
        precision="float32",
        optimizer=AdamWConfig(eps=1e-4, weight_decay=1e-2, clip_gradient_norm=0.5),
    )


@functools.cache
def one_step(backend: str, family: str) -> dict[str, object]:
    """The loss, gradient norm, and parameter updates (after minus before) of one step.

    π0-FAST's targets are the action tokens in the observation's prompt; the actions,
    noise and times passed along are the same in both backends and unused."""
    config = tiny_pi0_fast_config("float32") if family == "pi0_fast" else tiny_pi0_config(family, "float32")
    params = seeded_params(config)
    trainer = get_backend(backend).create_trainer(config, train_config(), params)
    observation = seeded_observation(config)
    actions = seeded_actions(config)
    noise = draw_noise(3, actions.shape)
    time = draw_time(4, actions.shape[0])
    metrics = trainer.step(observation, actions, noise, time, STEP_LR)
    state = trainer.state_dict()
    updates = {
        name: state[f"params/{name}"].astype(np.float64) - value.astype(np.float64)
        for name, value in params.items()
        if name not in ZERO_GRADIENT_PARAMETERS
    }
    return {"loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]), "updates": updates}
