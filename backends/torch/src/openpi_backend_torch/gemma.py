"""The Gemma mixture of π0/π0.5: two experts that attend jointly, layer by layer.

The PaliGemma LLM (expert 0) reads the prefix (image and prompt tokens), the
action expert (expert 1) reads the suffix (state and action tokens). In every
layer each expert normalises and projects its own tokens with its own weights;
the queries, keys and values of all present experts are concatenated along the
sequence and attend together under one mask; the attention output is split back
and each expert applies its own output projection and MLP.

Shapes: ``B`` batch, ``T`` query tokens (all present experts), ``S`` key tokens,
``N`` query heads, ``K`` kv heads, ``h`` head dim, ``W`` an expert's width.
"""

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from openpi_backend_torch.precision import pow_float32
from openpi_core.models.config import GemmaConfig

RMS_NORM_EPS = 1e-6
ROPE_MAX_WAVELENGTH = 10_000.0
MASKED_LOGIT = -2.3819763e38
"""Added to the logits of masked pairs. A finite value rather than -inf, as in the
reference: a query that may see nothing (a padding token) then gets a uniform
softmax instead of NaNs, which would otherwise reach the KV cache and the gradients."""


def rms_normalize(x: Tensor) -> Tensor:
    """``x * rsqrt(mean(x²) + eps)`` over the last axis, in float32 whatever ``x``'s dtype."""
    x = x.float()
    variance = x.square().mean(dim=-1, keepdim=True)
    return x * torch.reciprocal(torch.sqrt(variance + RMS_NORM_EPS))


class RMSNorm(nn.Module):
    """Gemma's RMSNorm: the stored ``scale`` is an offset from 1. Float32 inside."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(width, dtype=torch.float32))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, None]:
        """``x`` ``[B, T, W]`` -> (normalised ``x`` in ``x``'s dtype, no gate). ``cond`` is ignored."""
        return (rms_normalize(x) * (1.0 + self.scale.float())).to(x.dtype), None


class AdaptiveRMSNorm(nn.Module):
    """π0.5's adaRMS: a Dense layer maps the conditioning vector to (scale, shift, gate)."""

    def __init__(self, width: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.modulation = nn.Linear(width, 3 * width, dtype=dtype)

    def forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """``x`` ``[B, T, W]``, ``cond`` ``[B, W]`` -> (``normed·(1+scale)+shift`` in ``x``'s
        dtype, ``gate`` ``[B, 1, W]`` for the residual)."""
        if cond is None:
            raise ValueError("an adaptive RMSNorm needs its conditioning vector")
        modulation = self.modulation(cond.to(self.modulation.weight.dtype))[:, None, :]
        scale, shift, gate = modulation.chunk(3, dim=-1)
        normed = rms_normalize(x) * (1.0 + scale.float()) + shift.float()
        return normed.to(x.dtype), gate.to(x.dtype)


def make_norm(width: int, *, adaptive: bool, dtype: torch.dtype) -> RMSNorm | AdaptiveRMSNorm:
    return AdaptiveRMSNorm(width, dtype) if adaptive else RMSNorm(width)


def gated_residual(x: Tensor, y: Tensor, gate: Tensor | None) -> Tensor:
    return x + y if gate is None else x + y * gate


def rope_tables(positions: Tensor, head_dim: int) -> tuple[Tensor, Tensor]:
    """Half-split RoPE rotation for integer ``positions`` ``[B, T]``: (cos, sin), each
    float32 ``[B, T, 1, h/2]``. Frequencies are ``10000^(-2k/h)``, in float32."""
    exponents = torch.arange(head_dim // 2, dtype=torch.float32, device=positions.device) * (2.0 / head_dim)
    timescale = pow_float32(ROPE_MAX_WAVELENGTH, exponents)
    radians = positions.to(torch.float32)[..., None, None] / timescale
    return torch.cos(radians), torch.sin(radians)


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate ``x`` ``[B, T, heads, h]``: the first half of the head dim pairs with the second.

    Computed in float32 and returned in ``x``'s dtype, as in the reference."""
    cos, sin = rope
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class GeGLU(nn.Module):
    """Gemma's MLP: ``down(gelu_tanh(gate(x)) * up(x))``, gate and up fused in one matmul."""

    def __init__(self, width: int, mlp_dim: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * mlp_dim, bias=False, dtype=dtype)
        self.down = nn.Linear(mlp_dim, width, bias=False, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.gelu(gate, approximate="tanh") * up)


class ExpertLayer(nn.Module):
    """One expert's weights in one layer: norms, fused q/k/v projection, output projection, MLP."""

    def __init__(self, config: GemmaConfig, *, adaptive: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.config = config
        heads = config.num_heads + 2 * config.num_kv_heads
        self.attn_norm = make_norm(config.width, adaptive=adaptive, dtype=dtype)
        self.qkv = nn.Linear(config.width, heads * config.head_dim, bias=False, dtype=dtype)
        self.o_proj = nn.Linear(config.num_heads * config.head_dim, config.width, bias=False, dtype=dtype)
        self.mlp_norm = make_norm(config.width, adaptive=adaptive, dtype=dtype)
        self.mlp = GeGLU(config.width, config.mlp_dim, dtype)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised ``x`` ``[B, T, W]`` -> q ``[B, T, N, h]``, k and v ``[B, T, K, h]``."""
        c = self.config
        q, k, v = self.qkv(x).split(
            [c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.num_kv_heads * c.head_dim], dim=-1
        )
        return (
            q.unflatten(-1, (c.num_heads, c.head_dim)),
            k.unflatten(-1, (c.num_kv_heads, c.head_dim)),
            v.unflatten(-1, (c.num_kv_heads, c.head_dim)),
        )


@dataclasses.dataclass
class KVCache:
    """Preallocated keys and values of every layer, ``[D, B, K, L, h]`` each.

    ``L`` is fixed when the cache is made (the prefix length plus the suffix length), so
    every denoising step sees the same shapes: the prefix pass writes positions
    ``[0, P)`` once, and each denoising step overwrites ``[P, L)`` with its suffix.
    Keys are stored after RoPE.
    """

    keys: Tensor
    values: Tensor

    @classmethod
    def allocate(
        cls, config: GemmaConfig, batch_size: int, length: int, *, dtype: torch.dtype, device: torch.device
    ) -> "KVCache":
        shape = (config.depth, batch_size, config.num_kv_heads, length, config.head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, num_kv_heads: int) -> Tensor:
    """Grouped-query attention. q ``[B, N, T, h]``, k/v ``[B, K, S, h]``, additive ``mask``
    ``[B, 1, T, S]`` in q's dtype -> ``[B, N, T, h]``.

    Query head ``n`` reads kv head ``n // (N/K)``. The kv heads are broadcast with a
    stride-0 view (no copy when K is 1). For bfloat16 inputs the kernels torch picks
    for a masked attention (CPU flash, CUDA memory-efficient) keep the logits and the
    softmax in float32, as the reference does.
    """
    batch, num_heads, _, head_dim = q.shape
    group = num_heads // num_kv_heads
    seq = k.shape[2]
    k = k[:, :, None].expand(batch, num_kv_heads, group, seq, head_dim).reshape(batch, num_heads, seq, head_dim)
    v = v[:, :, None].expand(batch, num_kv_heads, group, seq, head_dim).reshape(batch, num_heads, seq, head_dim)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=head_dim**-0.5)


class JointLayer(nn.Module):
    """One layer of the mixture: per-expert projections around one joint attention."""

    def __init__(self, configs: Sequence[GemmaConfig], adaptive: Sequence[bool], dtype: torch.dtype) -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            ExpertLayer(c, adaptive=a, dtype=dtype) for c, a in zip(configs, adaptive, strict=True)
        )

    def forward(
        self,
        xs: Sequence[Tensor | None],
        rope: tuple[Tensor, Tensor],
        mask: Tensor,
        conds: Sequence[Tensor | None],
        cache: tuple[Tensor, Tensor] | None,
        cache_offset: int,
        write_cache: bool = True,
    ) -> list[Tensor | None]:
        """``xs``: per expert ``[B, T_e, W_e]`` or None (expert absent). Returns the same
        structure. With ``cache`` (this layer's ``[B, K, L, h]`` keys and values), the new
        keys/values are written at ``cache_offset`` and the queries attend to the cache
        up to the end of what was written; ``mask`` then spans those keys. Without
        ``write_cache`` the cache is left as it is: the queries attend to its first
        ``cache_offset`` slots followed by the new keys/values."""
        present = [(i, x) for i, x in enumerate(xs) if x is not None]
        normed, gates, qs, ks, vs = {}, {}, [], [], []
        for i, x in present:
            expert = self.experts[i]
            normed[i], gates[i] = expert.attn_norm(x, conds[i])
            q, k, v = expert.project(normed[i])
            qs.append(q)
            ks.append(k)
            vs.append(v)
        q = apply_rope(torch.cat(qs, dim=1), rope).transpose(1, 2)
        k = apply_rope(torch.cat(ks, dim=1), rope).transpose(1, 2)
        v = torch.cat(vs, dim=1).transpose(1, 2)
        if cache is not None and not write_cache:
            k = torch.cat([cache[0][:, :, :cache_offset], k], dim=2)
            v = torch.cat([cache[1][:, :, :cache_offset], v], dim=2)
        elif cache is not None:
            end = cache_offset + k.shape[2]
            cache[0][:, :, cache_offset:end] = k
            cache[1][:, :, cache_offset:end] = v
            k, v = cache[0][:, :, :end], cache[1][:, :, :end]
        num_kv_heads = self.experts[present[0][0]].config.num_kv_heads
        encoded = attend(q, k, v, mask, num_kv_heads).transpose(1, 2).flatten(2)

        out: list[Tensor | None] = [None] * len(xs)
        start = 0
        for i, x in present:
            expert = self.experts[i]
            end = start + x.shape[1]
            x = gated_residual(x, expert.o_proj(encoded[:, start:end]), gates[i])
            start = end
            y, gate = expert.mlp_norm(x, conds[i])
            out[i] = gated_residual(x, expert.mlp(y), gate)
        return out


class GemmaMixture(nn.Module):
    """The LLM's token embedding, the stack of joint layers, and each expert's final norm.

    With ``gradient_checkpointing`` set, a pass that records gradients keeps only each
    layer's inputs and recomputes the layer during the backward pass.
    """

    gradient_checkpointing = False

    def __init__(
        self, configs: Sequence[GemmaConfig], adaptive: Sequence[bool], vocab_size: int, dtype: torch.dtype
    ) -> None:
        super().__init__()
        if len({c.depth for c in configs}) != 1:
            raise ValueError("the experts of a mixture must have the same depth")
        self.configs = tuple(configs)
        self.embedding = nn.Embedding(vocab_size, configs[0].width, dtype=dtype)
        self.layers = nn.ModuleList(JointLayer(configs, adaptive, dtype) for _ in range(configs[0].depth))
        self.final_norms = nn.ModuleList(
            make_norm(c.width, adaptive=a, dtype=dtype) for c, a in zip(configs, adaptive, strict=True)
        )

    def embed(self, tokens: Tensor) -> Tensor:
        """Token ids ``[B, L]`` -> LLM embeddings ``[B, L, W]``, scaled by sqrt(W)."""
        table = self.embedding.weight
        return table[tokens] * math.sqrt(table.shape[1])

    def forward(
        self,
        xs: Sequence[Tensor | None],
        positions: Tensor,
        mask: Tensor,
        conds: Sequence[Tensor | None] | None = None,
        cache: KVCache | None = None,
        cache_offset: int = 0,
        write_cache: bool = True,
    ) -> list[Tensor | None]:
        """Run the layers and final norms.

        Args:
            xs: per expert, its tokens ``[B, T_e, W_e]`` (any float dtype; cast to the
                weights' dtype) or None when that expert has no tokens in this pass.
            positions: int ``[B, T]`` RoPE positions of the concatenated tokens.
            mask: bool ``[B, T, S]``; True where a query may attend to a key. ``S`` is
                ``T`` without a cache, ``cache_offset + T`` with one.
            conds: per expert, the adaRMS conditioning ``[B, W_e]`` or None.
            cache: when given, each layer's keys/values are written into it at
                ``cache_offset`` and attention reads the cache.
            write_cache: False leaves ``cache`` untouched: attention reads its first
                ``cache_offset`` slots and this pass's keys/values after them. A pass
                that is differentiated needs this, as a later layer's write would
                change what an earlier layer's backward reads.

        Returns:
            per expert, its output ``[B, T_e, W_e]`` after the final norm, or None.
        """
        dtype = self.embedding.weight.dtype
        conds = conds if conds is not None else [None] * len(xs)
        xs = [None if x is None else x.to(dtype) for x in xs]
        additive_mask = torch.where(mask, 0.0, MASKED_LOGIT).to(dtype)[:, None]
        rope = rope_tables(positions, self.configs[0].head_dim)
        for index, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache.keys[index], cache.values[index])
            if self.gradient_checkpointing and torch.is_grad_enabled():
                xs = checkpoint(
                    layer, xs, rope, additive_mask, conds, layer_cache, cache_offset, write_cache, use_reentrant=False
                )
            else:
                xs = layer(xs, rope, additive_mask, conds, layer_cache, cache_offset, write_cache)
        return [
            None if x is None else norm(x, cond)[0] for norm, x, cond in zip(self.final_norms, xs, conds, strict=True)
        ]
