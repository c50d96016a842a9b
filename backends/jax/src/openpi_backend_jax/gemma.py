"""Gemma layers and the two-expert transformer of π0/π0.5.

Each expert (the PaliGemma LLM, the action expert) projects and transforms its own
tokens with its own weights, but every layer's attention runs jointly over the
concatenation of both experts' tokens. Modules act on one example; the model vmaps
the batch.

Shapes: ``T`` tokens in this pass (both experts, concatenated), ``S`` keys
(cached prefix + ``T``), ``W`` width, ``N`` query heads, ``K`` kv heads, ``h`` head
dim, ``M`` MLP dim, ``D`` depth, ``V`` vocabulary.
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from openpi_backend_jax.layers import Array, Linear, einsum, normal_init
from openpi_core.models.config import GemmaConfig
from openpi_core.training.config import LoRAConfig
from openpi_core.training.lora import lora_shapes

RMS_NORM_EPS = 1e-6
ROPE_MAX_WAVELENGTH = 10_000.0
MASKED_LOGIT = -2.3819763e38
"""What masked attention logits become: a large finite negative (Gemma's value), so
that a query with no valid key (a padding token) gets a uniform softmax, not NaN."""

KVCache = tuple[Array, Array]
"""Keys and values of the prefix after RoPE, each ``[D, P, K, h]``."""


class RMSNorm(eqx.Module):
    """``x * rsqrt(mean(x²) + eps) * (1 + scale)``, computed in float32.

    Attributes:
        scale: ``[W]``, an offset from 1.
    """

    scale: Array

    def __init__(self, width: int):
        self.scale = jnp.zeros((width,), jnp.float32)

    def __call__(self, x: Array, cond: None = None) -> tuple[Array, None]:
        """``[T, W]`` -> (normed ``[T, W]`` in the dtype of ``x``, no gate)."""
        return (_normalize(x) * (1.0 + self.scale.astype(jnp.float32))).astype(x.dtype), None


class AdaptiveRMSNorm(eqx.Module):
    """π0.5's adaRMS: RMS normalisation modulated by a conditioning vector.

    ``modulation(cond)`` splits into (scale, shift, gate); the output is
    ``normed * (1 + scale) + shift`` and the caller scales its residual branch by ``gate``.

    Attributes:
        modulation: Dense ``W_cond -> 3W``.
    """

    modulation: Linear

    def __init__(self, width: int, *, key: Array):
        self.modulation = Linear(width, 3 * width, key=key)

    def __call__(self, x: Array, cond: Array) -> tuple[Array, Array]:
        """``[T, W]`` and ``cond`` ``[W_cond]`` -> (normed ``[T, W]``, gate ``[W]``), in the dtype of ``x``."""
        scale, shift, gate = jnp.split(self.modulation(cond.astype(x.dtype)), 3, axis=-1)
        # The modulation itself runs in the compute dtype; scale and shift act in float32.
        normed = _normalize(x) * (1.0 + scale.astype(jnp.float32)) + shift.astype(jnp.float32)
        return normed.astype(x.dtype), gate


def _normalize(x: Array) -> Array:
    xf = x.astype(jnp.float32)
    return xf * lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + RMS_NORM_EPS)


def _norm(width: int, adaptive: bool, key: Array) -> RMSNorm | AdaptiveRMSNorm:
    return AdaptiveRMSNorm(width, key=key) if adaptive else RMSNorm(width)


class LoRA(eqx.Module):
    """A low-rank adapter of one weight ``[..., I, O]``: the weight in use is
    ``W + scale * (lora_a @ lora_b)`` (see :mod:`openpi_core.training.lora`).

    Attributes:
        lora_a: ``[..., I, r]``.
        lora_b: ``[..., r, O]``.
        scale: ``alpha / rank``.
    """

    lora_a: Array
    lora_b: Array
    scale: float = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], config: LoRAConfig, *, key: Array):
        shape_a, shape_b = lora_shapes(shape, config.rank)
        ka, kb = jax.random.split(key)
        self.lora_a = 0.01 * jax.random.normal(ka, shape_a)
        self.lora_b = 0.01 * jax.random.normal(kb, shape_b)
        self.scale = config.scale

    def merge(self, weight: Array) -> Array:
        """``weight + scale * (lora_a @ lora_b)``, in float32."""
        return merge_lora(weight, self.lora_a, self.lora_b, self.scale)


def merge_lora(weight: Array, lora_a: Array, lora_b: Array, scale: float) -> Array:
    """The adapted weight ``weight + scale * (lora_a @ lora_b)`` (rank axis contracted), float32."""
    delta = einsum("...ir,...ro->...io", jnp.asarray(lora_a, jnp.float32), jnp.asarray(lora_b, jnp.float32))
    return jnp.asarray(weight, jnp.float32) + scale * delta


def _adapter(shape: tuple[int, ...], config: LoRAConfig | None, key: Array) -> LoRA | None:
    return None if config is None else LoRA(shape, config, key=key)


def _weight(weight: Array, lora: LoRA | None, dtype: jnp.dtype) -> Array:
    """The weight a matmul uses, in ``dtype``: adapted when ``lora`` is set."""
    return (weight if lora is None else lora.merge(weight)).astype(dtype)


class Attention(eqx.Module):
    """One expert's attention projections (the attention itself is :func:`attend`).

    Attributes:
        q_proj: ``[N, W, h]``.
        kv_proj: ``[2, K, W, h]`` (keys, then values).
        o_proj: ``[N, h, W]``.
        q_proj_lora, kv_proj_lora, o_proj_lora: their adapters, or None.
    """

    q_proj: Array
    kv_proj: Array
    o_proj: Array
    q_proj_lora: LoRA | None
    kv_proj_lora: LoRA | None
    o_proj_lora: LoRA | None

    def __init__(self, config: GemmaConfig, *, lora: LoRAConfig | None = None, key: Array):
        kq, kkv, ko = jax.random.split(key, 3)
        n, kh, w, h = config.num_heads, config.num_kv_heads, config.width, config.head_dim
        self.q_proj = normal_init(kq, (n, w, h), w)
        self.kv_proj = normal_init(kkv, (2, kh, w, h), w)
        self.o_proj = normal_init(ko, (n, h, w), n * h)
        kq, kkv, ko = jax.random.split(jax.random.fold_in(key, 1), 3)
        self.q_proj_lora = _adapter(self.q_proj.shape, lora, kq)
        self.kv_proj_lora = _adapter(self.kv_proj.shape, lora, kkv)
        self.o_proj_lora = _adapter(self.o_proj.shape, lora, ko)

    def qkv(self, x: Array) -> tuple[Array, Array, Array]:
        """``[T, W]`` -> q ``[T, N, h]``, k ``[T, K, h]``, v ``[T, K, h]``."""
        q = einsum("tw,nwh->tnh", x, _weight(self.q_proj, self.q_proj_lora, x.dtype))
        k, v = einsum("tw,ckwh->ctkh", x, _weight(self.kv_proj, self.kv_proj_lora, x.dtype))
        return q, k, v

    def out(self, encoded: Array) -> Array:
        """``[T, N, h]`` -> ``[T, W]``."""
        return einsum("tnh,nhw->tw", encoded, _weight(self.o_proj, self.o_proj_lora, encoded.dtype))


class FeedForward(eqx.Module):
    """GeGLU MLP: ``down(gelu_tanh(x @ gate) * (x @ up))``.

    Attributes:
        gate_up: ``[2, W, M]`` (gate, then up).
        down: ``[M, W]``.
        gate_up_lora, down_lora: their adapters, or None.
    """

    gate_up: Array
    down: Array
    gate_up_lora: LoRA | None
    down_lora: LoRA | None

    def __init__(self, config: GemmaConfig, *, lora: LoRAConfig | None = None, key: Array):
        kg, kd = jax.random.split(key)
        self.gate_up = normal_init(kg, (2, config.width, config.mlp_dim), config.width)
        self.down = normal_init(kd, (config.mlp_dim, config.width), config.mlp_dim)
        kg, kd = jax.random.split(jax.random.fold_in(key, 1))
        self.gate_up_lora = _adapter(self.gate_up.shape, lora, kg)
        self.down_lora = _adapter(self.down.shape, lora, kd)

    def __call__(self, x: Array) -> Array:
        gate, up = einsum("tw,cwm->ctm", x, _weight(self.gate_up, self.gate_up_lora, x.dtype))
        hidden = jax.nn.gelu(gate, approximate=True) * up
        return einsum("tm,mw->tw", hidden, _weight(self.down, self.down_lora, x.dtype))


class Layer(eqx.Module):
    """One expert's weights for one transformer layer."""

    attn_norm: RMSNorm | AdaptiveRMSNorm
    attn: Attention
    mlp_norm: RMSNorm | AdaptiveRMSNorm
    mlp: FeedForward

    def __init__(self, config: GemmaConfig, adaptive_norms: bool, *, lora: LoRAConfig | None = None, key: Array):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.attn_norm = _norm(config.width, adaptive_norms, k1)
        self.attn = Attention(config, lora=lora, key=k2)
        self.mlp_norm = _norm(config.width, adaptive_norms, k3)
        self.mlp = FeedForward(config, lora=lora, key=k4)


class Gemma(eqx.Module):
    """One expert: its layer stack (leading depth axis), final norm and, for the LLM,
    the token embedding. ``lora`` adds adapters to every layer's attention and MLP.

    Attributes:
        embedding: ``[V, W]`` or None (the action expert reads no tokens).
        layers: :class:`Layer` with every array stacked on a leading ``D`` axis.
        final_norm: applied after the last layer.
    """

    embedding: Array | None
    layers: Layer
    final_norm: RMSNorm | AdaptiveRMSNorm

    def __init__(
        self,
        config: GemmaConfig,
        *,
        vocab_size: int | None = None,
        adaptive_norms: bool = False,
        lora: LoRAConfig | None = None,
        key: Array,
    ):
        ke, kl, kn = jax.random.split(key, 3)
        self.embedding = None if vocab_size is None else jax.random.normal(ke, (vocab_size, config.width))
        keys = jax.random.split(kl, config.depth)
        self.layers = eqx.filter_vmap(lambda k: Layer(config, adaptive_norms, lora=lora, key=k))(keys)
        self.final_norm = _norm(config.width, adaptive_norms, kn)

    def embed(self, tokens: Array) -> Array:
        """Token ids ``[L]`` -> ``[L, W]``, scaled by sqrt(W), in the embedding's dtype."""
        assert self.embedding is not None, "only the LLM expert embeds tokens"
        rows = self.embedding[tokens]
        return rows * jnp.sqrt(jnp.float32(rows.shape[-1])).astype(rows.dtype)


def apply_rope(x: Array, positions: Array) -> Array:
    """Rotary embedding, half-split: ``[T, H, h]`` at integer ``positions`` ``[T]``.

    Angles and the rotation are computed in float32, the result is cast back.
    """
    half = x.shape[-1] // 2
    timescale = ROPE_MAX_WAVELENGTH ** ((2.0 / x.shape[-1]) * jnp.arange(half, dtype=jnp.float32))
    # A division, not a multiplication by 1/timescale: at positions in the
    # thousands one ulp of the angle is ~1e-4, visible at float32 parity.
    radians = (positions.astype(jnp.float32)[:, None] / timescale)[:, None, :]
    sin, cos = jnp.sin(radians), jnp.cos(radians)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def attend(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """Grouped-query attention, logits and softmax in float32.

    Args:
        q: ``[T, N, h]``, already rotated and scaled.
        k, v: ``[S, K, h]``; each kv head serves ``N / K`` query heads.
        mask: bool ``[T, S]``, True where query t may attend to key s.

    Returns:
        ``[T, N, h]`` in the dtype of ``v``.
    """
    t, n, h = q.shape
    groups = q.reshape(t, k.shape[1], n // k.shape[1], h)
    logits = einsum("tkgh,skh->kgts", groups, k, out_dtype=jnp.float32)
    logits = jnp.where(mask, logits, MASKED_LOGIT)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return einsum("kgts,skh->tkgh", probs, v).reshape(t, n, h)


def _gated(x: Array, y: Array, gate: Array | None) -> Array:
    return x + y if gate is None else x + y * gate


def joint_layer(
    layers: Sequence[Layer],
    xs: Sequence[Array | None],
    conds: Sequence[Array | None],
    positions: Array,
    mask: Array,
    cached: KVCache | None,
) -> tuple[list[Array | None], KVCache]:
    """One layer of every expert, attending jointly.

    Args:
        layers: each expert's weights for this layer.
        xs: each expert's tokens ``[T_i, W_i]``, or None when that expert sits this pass out.
        conds: each expert's adaRMS conditioning ``[W_i]``, or None for plain RMSNorm.
        positions: ``[T]`` for the concatenated tokens (``T = sum T_i``).
        mask: bool ``[T, S]``.
        cached: this layer's prefix keys and values ``[P, K, h]`` each, or None.

    Returns:
        The experts' new tokens, and the keys/values of this pass's tokens ``[T, K, h]``.
    """
    active = [i for i, x in enumerate(xs) if x is not None]
    gates: dict[int, Array | None] = {}
    qs, ks, vs = [], [], []
    for i in active:
        normed, gates[i] = layers[i].attn_norm(xs[i], conds[i])
        q, k, v = layers[i].attn.qkv(normed)
        qs.append(q)
        ks.append(k)
        vs.append(v)
    q, k, v = (jnp.concatenate(parts, axis=0) for parts in (qs, ks, vs))
    q = apply_rope(q, positions)
    q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    k = apply_rope(k, positions)
    keys, values = (k, v) if cached is None else (jnp.concatenate([cached[0], k]), jnp.concatenate([cached[1], v]))
    encoded = attend(q, keys, values, mask)

    out: list[Array | None] = list(xs)
    start = 0
    for i in active:
        end = start + xs[i].shape[0]
        out[i] = _gated(xs[i], layers[i].attn.out(encoded[start:end]), gates[i])
        start = end
    for i in active:
        normed, gate = layers[i].mlp_norm(out[i], conds[i])
        out[i] = _gated(out[i], layers[i].mlp(normed), gate)
    return out, (k, v)


def transformer(
    experts: Sequence[Gemma],
    xs: Sequence[Array | None],
    conds: Sequence[Array | None],
    positions: Array,
    mask: Array,
    kv_cache: KVCache | None = None,
) -> tuple[list[Array | None], KVCache]:
    """Run the experts' layer stacks jointly (one ``lax.scan`` over depth), then their
    final norms.

    Arguments as in :func:`joint_layer`, except ``kv_cache``, which holds every
    layer's cached keys/values ``[D, P, K, h]``. Returns each active expert's output
    ``[T_i, W_i]`` (None for the others) and this pass's keys/values ``[D, T, K, h]``.
    """
    params, static = eqx.partition(tuple(e.layers for e in experts), eqx.is_array)

    def step(xs: list[Array | None], scanned: tuple[tuple[Layer, ...], KVCache | None]):
        layer_params, cached = scanned
        return joint_layer(eqx.combine(layer_params, static), xs, conds, positions, mask, cached)

    # Rematerialised so that training keeps one layer's activations at a time.
    xs, kv = lax.scan(jax.checkpoint(step, prevent_cse=False), list(xs), (params, kv_cache))
    outs = [None if x is None else e.final_norm(x, c)[0] for e, x, c in zip(experts, xs, conds, strict=True)]
    return outs, kv
