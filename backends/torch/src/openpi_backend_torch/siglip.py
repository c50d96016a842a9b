"""The SigLIP vision tower of π0/π0.5 and its Dense head to the LLM width.

Patch convolution and the learned position embedding run in float32; the blocks
are pre-LayerNorm (eps 1e-6) with biased multi-head attention and a tanh-GELU MLP;
a final LayerNorm and the Dense head follow. There is no pooling: every patch is
one LLM token. Shapes: ``B`` batch, ``P`` patches, ``vW`` tower width, ``W`` LLM width.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from openpi_core.models.config import SiglipConfig

LAYER_NORM_EPS = 1e-6


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in the input's dtype."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class SiglipAttention(nn.Module):
    """Multi-head self-attention with biased q/k/v (fused) and output projections."""

    def __init__(self, width: int, num_heads: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width, dtype=dtype)
        self.out = nn.Linear(width, width, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, P, vW]`` -> ``[B, P, vW]``."""
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        encoded = F.scaled_dot_product_attention(q, k, v)
        return self.out(encoded.transpose(1, 2).flatten(2))


class SiglipMlp(nn.Module):
    def __init__(self, width: int, mlp_dim: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, mlp_dim, dtype=dtype)
        self.fc2 = nn.Linear(mlp_dim, width, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipBlock(nn.Module):
    """Pre-LN encoder block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, config: SiglipConfig, dtype: torch.dtype) -> None:
        super().__init__()
        self.norm1 = LayerNorm32(config.width, eps=LAYER_NORM_EPS, dtype=torch.float32)
        self.attn = SiglipAttention(config.width, config.num_heads, dtype)
        self.norm2 = LayerNorm32(config.width, eps=LAYER_NORM_EPS, dtype=torch.float32)
        self.mlp = SiglipMlp(config.width, config.mlp_dim, dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SiglipEncoder(nn.Module):
    """Images float32 ``[B, H, W, 3]`` in ``[-1, 1]`` -> tokens ``[B, P, W]`` in the compute dtype.

    ``gradient_checkpointing``: as in :class:`~openpi_backend_torch.gemma.GemmaMixture`.
    """

    gradient_checkpointing = False

    def __init__(self, config: SiglipConfig, out_width: int, dtype: torch.dtype) -> None:
        super().__init__()
        if config.pool_type != "none":
            raise ValueError(f"π0 uses every patch as a token (pool_type 'none'), got {config.pool_type!r}")
        self.config = config
        self.patch_embed = nn.Conv2d(3, config.width, config.patch_size, stride=config.patch_size, dtype=torch.float32)
        self.pos_embed = nn.Parameter(torch.empty(1, config.num_patches, config.width, dtype=torch.float32))
        self.layers = nn.ModuleList(SiglipBlock(config, dtype) for _ in range(config.depth))
        self.final_norm = LayerNorm32(config.width, eps=LAYER_NORM_EPS, dtype=torch.float32)
        self.head = nn.Linear(config.width, out_width, dtype=dtype)

    def forward(self, images: Tensor) -> Tensor:
        # Patch extraction and position embedding stay in float32 whatever the compute dtype.
        patches = self.patch_embed(images.float().permute(0, 3, 1, 2))
        x = patches.flatten(2).transpose(1, 2) + self.pos_embed
        x = x.to(self.head.weight.dtype)
        for layer in self.layers:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return self.head(self.final_norm(x))
