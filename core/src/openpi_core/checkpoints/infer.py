"""The model config of canonical weights, read off their shapes, and the weight schema of a config.

Canonical (and openpi JAX) layouts keep attention heads on their own axis, so every
architecture number is recoverable: widths, depths, heads, head dims, mlp dims,
vocabulary, vision patch and image sizes, π0-FAST (no action expert) vs π0 vs π0.5
(adaptive norms in the action expert). What weights cannot tell (``action_horizon``,
``max_token_len``, and π0-FAST's ``action_dim`` and decoding settings) keeps the
config's defaults, and ``dtype`` is float32.
"""

import math
from collections.abc import Mapping

import numpy as np

from openpi_core.errors import WeightsError
from openpi_core.models.config import GemmaConfig, Pi0Config, Pi0FASTConfig, SiglipConfig
from openpi_core.models.pi0_weights import Shape, pi0_fast_weight_schema, pi0_weight_schema

ModelConfig = Pi0Config | Pi0FASTConfig


def weight_schema(config: ModelConfig) -> dict[str, Shape]:
    """Canonical name -> shape of every parameter of ``config``'s model family."""
    return pi0_fast_weight_schema(config) if isinstance(config, Pi0FASTConfig) else pi0_weight_schema(config)


def image_size(num_patches: int, patch_size: tuple[int, int]) -> tuple[int, int]:
    """Image height and width of a square grid of ``num_patches`` patches."""
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise WeightsError(f"cannot infer the image size: {num_patches} position embeddings is not a square grid")
    return side * patch_size[0], side * patch_size[1]


def _shape(params: Mapping[str, np.ndarray], name: str) -> tuple[int, ...]:
    if name not in params:
        raise WeightsError(f"cannot infer the model config: parameter {name!r} is missing")
    return tuple(np.shape(params[name]))


def _gemma(params: Mapping[str, np.ndarray], prefix: str) -> GemmaConfig:
    depth, num_heads, width, head_dim = _shape(params, f"{prefix}.layers.attn.q_proj")
    return GemmaConfig(
        width=width,
        depth=depth,
        mlp_dim=_shape(params, f"{prefix}.layers.mlp.gate_up")[-1],
        num_heads=num_heads,
        num_kv_heads=_shape(params, f"{prefix}.layers.attn.kv_proj")[2],
        head_dim=head_dim,
    )


def infer_config(params: Mapping[str, np.ndarray]) -> ModelConfig:
    """The :class:`Pi0Config`, or :class:`Pi0FASTConfig` when there is no action expert,
    whose weight schema canonical ``params`` should match.

    Only the shapes are read; :func:`~openpi_core.models.pi0_weights.check_against_schema`
    then checks every tensor against the inferred config.

    Raises:
        WeightsError: a tensor the sizes are read from is missing.
    """
    patch_h, patch_w, _, _ = _shape(params, "vision.patch_embed.kernel")
    depth, width, num_heads, _ = _shape(params, "vision.layers.attn.query.kernel")
    num_patches = _shape(params, "vision.pos_embed")[1]
    vision = SiglipConfig(
        width=width,
        depth=depth,
        mlp_dim=_shape(params, "vision.layers.mlp.fc1.kernel")[-1],
        num_heads=num_heads,
        patch_size=(patch_h, patch_w),
        image_size=image_size(num_patches, (patch_h, patch_w)),
    )
    if "expert.layers.attn.q_proj" not in params:
        return Pi0FASTConfig(
            llm=_gemma(params, "llm"), vision=vision, vocab_size=_shape(params, "llm.embedding")[0], dtype="float32"
        )
    return Pi0Config(
        llm=_gemma(params, "llm"),
        action_expert=_gemma(params, "expert"),
        vision=vision,
        vocab_size=_shape(params, "llm.embedding")[0],
        pi05="expert.final_norm.modulation.kernel" in params,
        action_dim=_shape(params, "action_in_proj.kernel")[0],
        dtype="float32",
    )
