"""The SigLIP vision tower of π0/π0.5, with its Dense head to the LLM width.

Modules act on one image; the model vmaps over cameras and batch. Layer norms use
eps 1e-6 and compute their statistics in float32. The patch embedding and the
position embedding run in float32 whatever the compute dtype, then the tokens are
cast to it.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from openpi_backend_jax.layers import Array, Linear, einsum, normal_init
from openpi_core.models.config import SiglipConfig

LAYER_NORM_EPS = 1e-6


class LayerNorm(eqx.Module):
    """``(x - mean) / sqrt(var + eps) * scale + bias`` over the last axis ``[..., W]``."""

    scale: Array
    bias: Array

    def __init__(self, width: int):
        self.scale = jnp.ones((width,), jnp.float32)
        self.bias = jnp.zeros((width,), jnp.float32)

    def __call__(self, x: Array) -> Array:
        # Statistics in float32: bfloat16 sums over a wide axis lose too much.
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * lax.rsqrt(var + LAYER_NORM_EPS) * self.scale.astype(jnp.float32)
        return (y + self.bias.astype(jnp.float32)).astype(x.dtype)


class PatchEmbed(eqx.Module):
    """Non-overlapping ``ph x pw`` patches -> tokens: a stride-``p`` VALID convolution,
    written as a reshape and one matmul.

    Attributes:
        kernel: ``[ph, pw, 3, W]`` (HWIO, as the convolution stores it).
        bias: ``[W]``.
    """

    kernel: Array
    bias: Array

    def __init__(self, patch_size: tuple[int, int], width: int, *, key: Array):
        ph, pw = patch_size
        self.kernel = normal_init(key, (ph, pw, 3, width), ph * pw * 3)
        self.bias = jnp.zeros((width,), jnp.float32)

    def __call__(self, image: Array) -> Array:
        """float32 ``[H, W, 3]`` -> float32 ``[(H/ph)*(W/pw), W]``, patches in row-major order."""
        ph, pw, c, width = self.kernel.shape
        h, w, _ = image.shape
        patches = image.reshape(h // ph, ph, w // pw, pw, c).transpose(0, 2, 1, 3, 4)
        patches = patches.reshape((h // ph) * (w // pw), ph * pw * c)
        kernel = self.kernel.astype(jnp.float32).reshape(ph * pw * c, width)
        return einsum("np,pw->nw", patches, kernel) + self.bias.astype(jnp.float32)


class HeadsIn(eqx.Module):
    """Projection to attention heads: ``[T, W]`` -> ``[T, N, h]``.

    Attributes:
        kernel: ``[W, N, h]``.
        bias: ``[N, h]``.
    """

    kernel: Array
    bias: Array

    def __init__(self, width: int, num_heads: int, head_dim: int, *, key: Array):
        self.kernel = normal_init(key, (width, num_heads, head_dim), width)
        self.bias = jnp.zeros((num_heads, head_dim), jnp.float32)

    def __call__(self, x: Array) -> Array:
        return einsum("tw,wnh->tnh", x, self.kernel.astype(x.dtype)) + self.bias.astype(x.dtype)


class HeadsOut(eqx.Module):
    """Merge of attention heads: ``[T, N, h]`` -> ``[T, W]``.

    Attributes:
        kernel: ``[N, h, W]``.
        bias: ``[W]``.
    """

    kernel: Array
    bias: Array

    def __init__(self, num_heads: int, head_dim: int, width: int, *, key: Array):
        self.kernel = normal_init(key, (num_heads, head_dim, width), num_heads * head_dim)
        self.bias = jnp.zeros((width,), jnp.float32)

    def __call__(self, x: Array) -> Array:
        return einsum("tnh,nhw->tw", x, self.kernel.astype(x.dtype)) + self.bias.astype(x.dtype)


class MultiHeadAttention(eqx.Module):
    """Bidirectional multi-head self-attention with biases on every projection."""

    query: HeadsIn
    key: HeadsIn
    value: HeadsIn
    out: HeadsOut

    def __init__(self, width: int, num_heads: int, *, key: Array):
        head_dim = width // num_heads
        kq, kk, kv, ko = jax.random.split(key, 4)
        self.query = HeadsIn(width, num_heads, head_dim, key=kq)
        self.key = HeadsIn(width, num_heads, head_dim, key=kk)
        self.value = HeadsIn(width, num_heads, head_dim, key=kv)
        self.out = HeadsOut(num_heads, head_dim, width, key=ko)

    def __call__(self, x: Array) -> Array:
        """``[T, W]`` -> ``[T, W]``; logits and softmax in float32."""
        q, k, v = self.query(x), self.key(x), self.value(x)
        q = q / jnp.sqrt(jnp.float32(q.shape[-1])).astype(q.dtype)
        logits = einsum("tnh,snh->nts", q, k, out_dtype=jnp.float32)
        probs = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
        return self.out(einsum("nts,snh->tnh", probs, v))


class Mlp(eqx.Module):
    """``fc2(gelu_tanh(fc1(x)))``."""

    fc1: Linear
    fc2: Linear

    def __init__(self, width: int, mlp_dim: int, *, key: Array):
        k1, k2 = jax.random.split(key)
        self.fc1 = Linear(width, mlp_dim, key=k1)
        self.fc2 = Linear(mlp_dim, width, key=k2)

    def __call__(self, x: Array) -> Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=True))


class EncoderBlock(eqx.Module):
    """Pre-LN transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    norm1: LayerNorm
    attn: MultiHeadAttention
    norm2: LayerNorm
    mlp: Mlp

    def __init__(self, config: SiglipConfig, *, key: Array):
        ka, km = jax.random.split(key)
        self.norm1 = LayerNorm(config.width)
        self.attn = MultiHeadAttention(config.width, config.num_heads, key=ka)
        self.norm2 = LayerNorm(config.width)
        self.mlp = Mlp(config.width, config.mlp_dim, key=km)

    def __call__(self, x: Array) -> Array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Siglip(eqx.Module):
    """SigLIP encoder (no pooling) followed by a Dense head to the LLM width.

    Attributes:
        patch_embed: the patch convolution.
        pos_embed: learned position embedding ``[1, patches, vW]``.
        layers: the encoder blocks, stacked with a leading depth axis.
        final_norm: LayerNorm after the last block.
        head: Dense ``vW -> W_llm``; its output enters the LLM unscaled.
    """

    patch_embed: PatchEmbed
    pos_embed: Array
    layers: EncoderBlock
    final_norm: LayerNorm
    head: Linear

    def __init__(self, config: SiglipConfig, out_width: int, *, key: Array):
        kp, kpos, kl, kh = jax.random.split(key, 4)
        self.patch_embed = PatchEmbed(config.patch_size, config.width, key=kp)
        self.pos_embed = normal_init(kpos, (1, config.num_patches, config.width), config.width)
        self.layers = eqx.filter_vmap(lambda k: EncoderBlock(config, key=k))(jax.random.split(kl, config.depth))
        self.final_norm = LayerNorm(config.width)
        self.head = Linear(config.width, out_width, key=kh)

    def __call__(self, image: Array, dtype: jnp.dtype) -> Array:
        """float32 ``[H, W, 3]`` in ``[-1, 1]`` -> image tokens ``[patches, W_llm]`` in ``dtype``."""
        x = self.patch_embed(image) + self.pos_embed[0].astype(jnp.float32)
        x = x.astype(dtype)
        blocks, static = eqx.partition(self.layers, eqx.is_array)

        def block(x: Array, params: EncoderBlock) -> tuple[Array, None]:
            return eqx.combine(params, static)(x), None

        # Rematerialised so that training keeps one block's activations at a time.
        x, _ = lax.scan(jax.checkpoint(block, prevent_cse=False), x, blocks)
        return self.head(self.final_norm(x))
