"""Building blocks shared by the vision tower and the transformer.

The dtype rule of this backend: **activations choose the compute dtype**. Every
matmul casts its weights to the dtype of the activations it multiplies, so the
same module runs in float32 (the parity ground truth) or in bfloat16 (the fast
path, where the weights are already stored in bfloat16 and the cast is free),
and a float32 island is just a float32 input.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def einsum(spec: str, *operands: Array, out_dtype: jnp.dtype | None = None) -> Array:
    """``jnp.einsum`` at full precision.

    float32 matmuls must not silently drop to TF32 or bfloat16 passes on
    accelerators: float32 is the mode that has to match the reference to 1e-5.
    ``out_dtype`` asks for a wider accumulator/result (float32 attention logits).
    """
    return jnp.einsum(spec, *operands, precision=lax.Precision.HIGHEST, preferred_element_type=out_dtype)


def normal_init(key: Array, shape: tuple[int, ...], fan_in: int) -> Array:
    """Variance-scaling (LeCun normal) initial values; real weights replace them."""
    return jax.random.normal(key, shape, jnp.float32) / math.sqrt(fan_in)


class Linear(eqx.Module):
    """``y = x @ kernel + bias`` over the last axis.

    Attributes:
        kernel: ``[in, out]``.
        bias: ``[out]``.
    """

    kernel: Array
    bias: Array

    def __init__(self, in_features: int, out_features: int, *, key: Array):
        self.kernel = normal_init(key, (in_features, out_features), in_features)
        self.bias = jnp.zeros((out_features,), jnp.float32)

    def __call__(self, x: Array) -> Array:
        """``[..., in]`` -> ``[..., out]`` in the dtype of ``x``."""
        return einsum("...i,io->...o", x, self.kernel.astype(x.dtype)) + self.bias.astype(x.dtype)
