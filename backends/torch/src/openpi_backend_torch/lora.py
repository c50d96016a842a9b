"""LoRA adapters on the Gemma experts' projections, as a construction option.

:func:`apply_lora` swaps an adapted expert's fused ``nn.Linear`` projections for
:class:`LoRALinear` modules that keep the base ``weight`` under its old name and add
``lora_a`` / ``lora_b`` per canonical projection (:mod:`openpi_core.training.lora`):

==============  ===========================  ==========================================
module          canonical projections         adapter module parameters
==============  ===========================  ==========================================
``qkv``         ``q_proj``, ``kv_proj``        ``qkv.adapters.{q_proj,kv_proj}.lora_{a,b}``
``o_proj``      ``o_proj``                     ``o_proj.adapters.o_proj.lora_{a,b}``
``mlp.gate_up`` ``gate_up``                    ``mlp.gate_up.adapters.gate_up.lora_{a,b}``
``mlp.down``    ``down``                       ``mlp.down.adapters.down.lora_{a,b}``
==============  ===========================  ==========================================

Adapters keep the canonical per-layer layouts (the depth axis dropped). The forward
pass adds ``scale · (x @ lora_a) @ lora_b`` to the base projection, head by head, as
openpi does; this equals projecting with the effective weight ``W + scale · (lora_a @
lora_b)`` of the contract, without materialising it, and keeps the small adapter
product out of the rounding of a half-precision ``W``.
"""

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from openpi_backend_torch.weights import Rule
from openpi_core.models.config import GemmaConfig, Pi0Config, Pi0FASTConfig
from openpi_core.training.config import TrainConfig
from openpi_core.training.lora import adapters

EXPERT_INDEX = {"llm": 0, "expert": 1}
"""Canonical expert prefix -> its index in :class:`~openpi_backend_torch.gemma.GemmaMixture`."""

# module path inside an ExpertLayer -> canonical projections it fuses, in output order.
_MODULES = {
    "qkv": ("attn.q_proj", "attn.kv_proj"),
    "o_proj": ("attn.o_proj",),
    "mlp.gate_up": ("mlp.gate_up",),
    "mlp.down": ("mlp.down",),
}


def _q_delta(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x ``[..., W]``, a ``[N, W, r]``, b ``[N, r, h]`` -> ``[..., N·h]``."""
    return torch.einsum("...nr,nrh->...nh", torch.einsum("...w,nwr->...nr", x, a), b).flatten(-2)


def _kv_delta(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x ``[..., W]``, a ``[2, K, W, r]``, b ``[2, K, r, h]`` -> ``[..., 2·K·h]`` (kv, head, h)."""
    return torch.einsum("...ckr,ckrh->...ckh", torch.einsum("...w,ckwr->...ckr", x, a), b).flatten(-3)


def _o_delta(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x ``[..., N·h]``, a ``[N, h, r]``, b ``[N, r, W]`` -> ``[..., W]``."""
    heads = x.unflatten(-1, a.shape[:2])
    return torch.einsum("...nr,nrw->...w", torch.einsum("...nh,nhr->...nr", heads, a), b)


def _gate_up_delta(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x ``[..., W]``, a ``[2, W, r]``, b ``[2, r, M]`` -> ``[..., 2·M]`` (gate, then up)."""
    return torch.einsum("...cr,crm->...cm", torch.einsum("...w,cwr->...cr", x, a), b).flatten(-2)


def _down_delta(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x ``[..., M]``, a ``[M, r]``, b ``[r, W]`` -> ``[..., W]``."""
    return (x @ a) @ b


_DELTAS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "attn.q_proj": _q_delta,
    "attn.kv_proj": _kv_delta,
    "attn.o_proj": _o_delta,
    "mlp.gate_up": _gate_up_delta,
    "mlp.down": _down_delta,
}


def _adapter_shapes(g: GemmaConfig, rank: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Canonical projection -> per-layer (lora_a, lora_b) shapes (the depth axis dropped)."""
    n, k, w, h, m, r = g.num_heads, g.num_kv_heads, g.width, g.head_dim, g.mlp_dim, rank
    return {
        "attn.q_proj": ((n, w, r), (n, r, h)),
        "attn.kv_proj": ((2, k, w, r), (2, k, r, h)),
        "attn.o_proj": ((n, h, r), (n, r, w)),
        "mlp.gate_up": ((2, w, r), (2, r, m)),
        "mlp.down": ((m, r), (r, w)),
    }


class Adapter(nn.Module):
    """One canonical projection's ``lora_a`` and ``lora_b`` (float32, one layer)."""

    def __init__(self, shape_a: tuple[int, ...], shape_b: tuple[int, ...], device: torch.device) -> None:
        super().__init__()
        self.lora_a = nn.Parameter(torch.zeros(shape_a, dtype=torch.float32, device=device))
        self.lora_b = nn.Parameter(torch.zeros(shape_b, dtype=torch.float32, device=device))


class LoRALinear(nn.Module):
    """A bias-free projection ``x @ weight.T`` plus ``scale ·`` its adapters' low-rank paths.

    ``weight`` is the replaced ``nn.Linear``'s parameter object itself. The adapters'
    outputs are concatenated in ``projections`` order along the last axis, matching
    the rows of the fused ``weight``.
    """

    def __init__(self, linear: nn.Linear, projections: Mapping[str, Adapter], scale: float) -> None:
        super().__init__()
        if linear.bias is not None:
            raise ValueError("LoRA adapts bias-free projections only")
        self.weight = linear.weight
        self.adapters = nn.ModuleDict({name.split(".")[-1]: adapter for name, adapter in projections.items()})
        self.deltas = [_DELTAS[name] for name in projections]
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[..., in]`` -> ``[..., out]``."""
        base = nn.functional.linear(x, self.weight)
        parts = [
            delta(x, adapter.lora_a.to(x.dtype), adapter.lora_b.to(x.dtype))
            for delta, adapter in zip(self.deltas, self.adapters.values(), strict=True)
        ]
        low_rank = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return base + low_rank * self.scale


def apply_lora(module: nn.Module, config: Pi0Config | Pi0FASTConfig, train: TrainConfig) -> None:
    """Give ``module`` (a :class:`~openpi_backend_torch.pi0.Pi0Module` or
    :class:`~openpi_backend_torch.pi0_fast.Pi0FASTModule`) the adapters that ``train``
    asks for, zero-initialised; fill them with :func:`adapter_rules`."""
    configs = {"llm": config.llm}
    if isinstance(config, Pi0Config):
        configs["expert"] = config.action_expert
    for prefix, lora in adapters(train).items():
        shapes = _adapter_shapes(configs[prefix], lora.rank)
        for layer in module.gemma.layers:
            expert = layer.experts[EXPERT_INDEX[prefix]]
            for path, projections in _MODULES.items():
                parent_path, _, leaf = path.rpartition(".")
                parent = expert.get_submodule(parent_path) if parent_path else expert
                linear = getattr(parent, leaf)
                device = linear.weight.device
                made = {name: Adapter(*shapes[name], device) for name in projections}
                setattr(parent, leaf, LoRALinear(linear, made, lora.scale))


def adapter_rules(train: TrainConfig, depth: int) -> list[Rule]:
    """Canonical adapter name (``llm.layers.attn.q_proj.lora_a``, stacked ``[D, ...]``) <->
    module parameter of layer ``{i}``, one stacked rule per adapter matrix."""
    rules = []
    for prefix in adapters(train):
        for path, projections in _MODULES.items():
            for projection in projections:
                for matrix in ("lora_a", "lora_b"):
                    module = (
                        f"gemma.layers.{{i}}.experts.{EXPERT_INDEX[prefix]}.{path}"
                        f".adapters.{projection.split('.')[-1]}.{matrix}"
                    )
                    canonical = f"{prefix}.layers.{projection}.{matrix}"
                    rules.append(Rule((canonical,), module, lambda x: x, lambda x: (x,), depth=depth))
    return rules


def merge_lora(params: Mapping[str, np.ndarray], train: TrainConfig) -> dict[str, np.ndarray]:
    """Canonical params with adapters -> canonical params without: every adapted ``W``
    becomes ``W + scale · (lora_a @ lora_b)`` (float32, over the last two axes)."""
    merged = {name: value for name, value in params.items() if not name.endswith((".lora_a", ".lora_b"))}
    for prefix, lora in adapters(train).items():
        for projections in _MODULES.values():
            for projection in projections:
                name = f"{prefix}.layers.{projection}"
                delta = np.matmul(params[f"{name}.lora_a"], params[f"{name}.lora_b"])
                merged[name] = (merged[name] + np.float32(lora.scale) * delta).astype(np.float32)
    return merged
