"""Seeded inputs the parity checks feed to every backend: weights, observations, actions.

Everything is numpy and depends only on a seed, so two backends (or two processes)
receive bit-identical inputs.
"""

import numpy as np

from openpi_core.models.config import GEMMA_VARIANTS, Pi0Config, Pi0FASTConfig, SiglipConfig
from openpi_core.models.pi0_weights import pi0_fast_weight_schema, pi0_weight_schema
from openpi_core.observation import Observation

TINY_IMAGE_SIZE = (56, 56)
"""Small images keep the checks fast: 16 patches of 14x14 per camera."""


def tiny_pi0_config(family: str, dtype: str = "float32") -> Pi0Config:
    """A few-layer π0 (``family="pi0"``) or π0.5 (``"pi05"``) for the parity checks."""
    return Pi0Config(
        llm=GEMMA_VARIANTS["dummy"],
        action_expert=GEMMA_VARIANTS["dummy"],
        vision=SiglipConfig(width=32, depth=2, mlp_dim=64, num_heads=2, image_size=TINY_IMAGE_SIZE),
        vocab_size=128,
        pi05=family == "pi05",
        action_dim=8,
        action_horizon=6,
        max_token_len=12,
        dtype=dtype,
    )


def tiny_pi0_fast_config(dtype: str = "float32") -> Pi0FASTConfig:
    """A few-layer π0-FAST for the parity checks."""
    return Pi0FASTConfig(
        llm=GEMMA_VARIANTS["dummy"],
        vision=SiglipConfig(width=32, depth=2, mlp_dim=64, num_heads=2, image_size=TINY_IMAGE_SIZE),
        vocab_size=128,
        action_dim=8,
        action_horizon=6,
        max_token_len=12,
        max_decoding_steps=8,
        dtype=dtype,
    )


def seeded_params(config: Pi0Config | Pi0FASTConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights for every parameter of ``config``'s schema.

    Dense and attention weights are N(0, 1/fan_in) so activations stay of order one;
    norm offsets, biases and adaptive-norm projections get small noise so that a
    backend which ignores one of them disagrees with one that does not.
    """
    rng = np.random.default_rng(seed)
    params = {}
    schema = pi0_fast_weight_schema(config) if isinstance(config, Pi0FASTConfig) else pi0_weight_schema(config)
    for name, shape in sorted(schema.items()):
        if name.endswith(".bias") or name.endswith("norm.scale") or ".modulation." in name:
            value = rng.normal(0.0, 0.05, shape)
        elif name.startswith("vision.") and name.endswith(".scale"):
            value = 1.0 + rng.normal(0.0, 0.05, shape)
        elif name in ("llm.embedding", "vision.pos_embed"):
            value = rng.normal(0.0, 1.0 / np.sqrt(shape[-1]), shape)
        else:
            value = rng.normal(0.0, 1.0 / np.sqrt(_fan_in(name, shape)), shape)
        params[name] = value.astype(np.float32)
    return params


def _fan_in(name: str, shape: tuple[int, ...]) -> int:
    if name.endswith(("q_proj", "kv_proj", "gate_up")):
        return shape[-2]
    if name.endswith("o_proj"):
        return shape[-3] * shape[-2]
    if name.endswith("patch_embed.kernel"):
        return shape[0] * shape[1] * shape[2]
    if ".attn.out." in name:
        return shape[-3] * shape[-2]
    if ".attn." in name and name.startswith("vision."):
        return shape[-3]
    return shape[-2]


def seeded_observation(config: Pi0Config | Pi0FASTConfig, batch_size: int = 2, seed: int = 1) -> Observation:
    """A batch with every feature the mask logic must handle: prompts of different
    lengths padded with id 0 and, for π0/π0.5, one camera masked out in the last example
    (π0-FAST's decoder assumes every camera is valid). π0-FAST prompts end in a
    three-token answer that is autoregressive and carries the loss."""
    rng = np.random.default_rng(seed)
    height, width = config.vision.image_size
    images = {key: rng.uniform(-1, 1, (batch_size, height, width, 3)).astype(np.float32) for key in config.image_keys}
    masks = {key: np.ones(batch_size, bool) for key in config.image_keys}
    fast = isinstance(config, Pi0FASTConfig)
    if not fast:
        masks[config.image_keys[1]][-1] = False
    length = config.max_token_len
    valid = np.maximum(1, length - 3 * np.arange(batch_size))
    prompt_mask = np.arange(length)[None, :] < valid[:, None]
    prompt = np.where(prompt_mask, rng.integers(1, config.vocab_size, (batch_size, length)), 0)
    answer = prompt_mask & (np.arange(length)[None, :] >= valid[:, None] - 3) if fast else None
    return Observation(
        images=images,
        image_masks=masks,
        state=rng.normal(size=(batch_size, config.action_dim)).astype(np.float32),
        tokenized_prompt=prompt.astype(np.int32),
        tokenized_prompt_mask=prompt_mask,
        token_ar_mask=None if answer is None else answer.astype(np.int32),
        token_loss_mask=answer,
    )


def seeded_actions(config: Pi0Config, batch_size: int = 2, seed: int = 2) -> np.ndarray:
    """Target actions ``[B, H, A]``."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch_size, config.action_horizon, config.action_dim)).astype(np.float32)
