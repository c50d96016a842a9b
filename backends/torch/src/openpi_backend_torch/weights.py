"""Canonical parameters (:mod:`openpi_core.models.pi0_weights`) <-> :class:`Pi0Module` parameters.

The canonical layouts are openpi JAX's (dense kernels ``[in, out]``, einsum weights
such as ``[N, W, h]``, a leading depth axis on stacked layers). Inside torch every
layer is its own module and every dense weight is ``nn.Linear``'s ``[out, in]``;
q/k/v projections and Gemma's gate/up projections are fused into one matmul each.
Each :class:`Rule` below converts one module parameter with transposes, reshapes,
concatenations and splits only, so a round trip is bit-exact.
"""

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from openpi_core.errors import WeightsError
from openpi_core.models.config import GemmaConfig, Pi0Config, Pi0FASTConfig
from openpi_core.models.pi0_weights import check_against_schema, pi0_fast_weight_schema, pi0_weight_schema


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one module parameter is made from canonical arrays, and back.

    A rule with ``depth`` > 0 is stacked: ``module`` holds ``{i}``, the layer index,
    the rule applies to ``canonical[name][i]`` for every layer ``i`` < ``depth``, and
    its inverse is stacked back along a new leading axis.
    """

    canonical: tuple[str, ...]
    module: str
    to_module: Callable[..., np.ndarray]
    to_canonical: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    depth: int = 0


def _same(canonical: str, module: str) -> Rule:
    return Rule((canonical,), module, lambda a: a, lambda m: (m,))


def _dense(canonical: str, module: str) -> list[Rule]:
    """A flax Dense (``kernel [in, out]``, ``bias``) -> ``nn.Linear`` (``weight [out, in]``, ``bias``)."""
    return [
        Rule((f"{canonical}.kernel",), f"{module}.weight", lambda k: k.T, lambda w: (w.T,)),
        _same(f"{canonical}.bias", f"{module}.bias"),
    ]


def _stacked(rules: list[Rule], depth: int) -> list[Rule]:
    return [dataclasses.replace(rule, depth=depth) for rule in rules]


def _vision_rules(config: Pi0Config) -> list[Rule]:
    v = config.vision
    width, inner = v.width, v.num_heads * v.head_dim
    heads = (v.num_heads, v.head_dim)
    qkv = tuple(f"vision.layers.attn.{p}" for p in ("query", "key", "value"))

    def qkv_bias_inverse(bias: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(part.reshape(heads) for part in np.split(bias, 3))

    layers = [
        Rule(
            tuple(f"{name}.kernel" for name in qkv),
            "vision.layers.{i}.attn.qkv.weight",
            lambda *ks: np.concatenate([k.reshape(width, inner).T for k in ks]),
            lambda w: tuple(part.T.reshape(width, *heads) for part in np.split(w, 3)),
        ),
        Rule(
            tuple(f"{name}.bias" for name in qkv),
            "vision.layers.{i}.attn.qkv.bias",
            lambda *bs: np.concatenate([b.reshape(inner) for b in bs]),
            qkv_bias_inverse,
        ),
        Rule(
            ("vision.layers.attn.out.kernel",),
            "vision.layers.{i}.attn.out.weight",
            lambda k: k.reshape(inner, width).T,
            lambda w: (w.T.reshape(*heads, width),),
        ),
        _same("vision.layers.attn.out.bias", "vision.layers.{i}.attn.out.bias"),
        *_dense("vision.layers.mlp.fc1", "vision.layers.{i}.mlp.fc1"),
        *_dense("vision.layers.mlp.fc2", "vision.layers.{i}.mlp.fc2"),
    ]
    for norm in ("norm1", "norm2"):
        layers.append(_same(f"vision.layers.{norm}.scale", f"vision.layers.{{i}}.{norm}.weight"))
        layers.append(_same(f"vision.layers.{norm}.bias", f"vision.layers.{{i}}.{norm}.bias"))
    return [
        # HWIO [ph, pw, 3, vW] -> OIHW [vW, 3, ph, pw]
        Rule(
            ("vision.patch_embed.kernel",),
            "vision.patch_embed.weight",
            lambda k: k.transpose(3, 2, 0, 1),
            lambda w: (w.transpose(2, 3, 1, 0),),
        ),
        _same("vision.patch_embed.bias", "vision.patch_embed.bias"),
        _same("vision.pos_embed", "vision.pos_embed"),
        _same("vision.final_norm.scale", "vision.final_norm.weight"),
        _same("vision.final_norm.bias", "vision.final_norm.bias"),
        *_dense("vision.head", "vision.head"),
        *_stacked(layers, v.depth),
    ]


def _expert_rules(prefix: str, index: int, g: GemmaConfig, *, adaptive: bool) -> list[Rule]:
    """One Gemma expert's stacked layers and final norm (expert ``index`` of the mixture)."""
    n, k, w, h, m = g.num_heads, g.num_kv_heads, g.width, g.head_dim, g.mlp_dim
    layer = f"gemma.layers.{{i}}.experts.{index}"

    def qkv_inverse(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, kv = np.split(weight, [n * h])
        return q.reshape(n, h, w).transpose(0, 2, 1), kv.reshape(2, k, h, w).transpose(0, 1, 3, 2)

    layers = [
        # q [N, W, h] and kv [2, K, W, h] -> one [(N + 2K)·h, W] weight; rows are (head, h).
        Rule(
            (f"{prefix}.layers.attn.q_proj", f"{prefix}.layers.attn.kv_proj"),
            f"{layer}.qkv.weight",
            lambda q, kv: np.concatenate(
                [q.transpose(0, 2, 1).reshape(n * h, w), kv.transpose(0, 1, 3, 2).reshape(2 * k * h, w)]
            ),
            qkv_inverse,
        ),
        Rule(
            (f"{prefix}.layers.attn.o_proj",),
            f"{layer}.o_proj.weight",
            lambda o: o.reshape(n * h, w).T,
            lambda weight: (weight.T.reshape(n, h, w),),
        ),
        # gating_einsum [2, W, M] (gate, up) -> one [2M, W] weight.
        Rule(
            (f"{prefix}.layers.mlp.gate_up",),
            f"{layer}.mlp.gate_up.weight",
            lambda gu: gu.transpose(0, 2, 1).reshape(2 * m, w),
            lambda weight: (weight.reshape(2, m, w).transpose(0, 2, 1),),
        ),
        Rule((f"{prefix}.layers.mlp.down",), f"{layer}.mlp.down.weight", lambda d: d.T, lambda weight: (weight.T,)),
    ]
    for norm in ("attn_norm", "mlp_norm"):
        layers += _norm_rules(f"{prefix}.layers.{norm}", f"{layer}.{norm}", adaptive=adaptive)
    return _stacked(layers, g.depth) + _norm_rules(
        f"{prefix}.final_norm", f"gemma.final_norms.{index}", adaptive=adaptive
    )


def _norm_rules(canonical: str, module: str, *, adaptive: bool) -> list[Rule]:
    if adaptive:
        return _dense(f"{canonical}.modulation", f"{module}.modulation")
    return [_same(f"{canonical}.scale", f"{module}.scale")]


def weight_schema(config: Pi0Config | Pi0FASTConfig) -> dict[str, tuple[int, ...]]:
    """The canonical schema of ``config``'s family."""
    return pi0_fast_weight_schema(config) if isinstance(config, Pi0FASTConfig) else pi0_weight_schema(config)


def module_rules(config: Pi0Config | Pi0FASTConfig) -> list[Rule]:
    """Every rule of a π0/π0.5 model (or of π0-FAST: the vision tower and the LLM as a
    one-expert mixture); together they cover the canonical schema exactly once."""
    rules = _vision_rules(config)
    rules.append(_same("llm.embedding", "gemma.embedding.weight"))
    rules += _expert_rules("llm", 0, config.llm, adaptive=False)
    if isinstance(config, Pi0Config):
        rules += _expert_rules("expert", 1, config.action_expert, adaptive=config.pi05)
        projections = ["action_in_proj", "action_out_proj"]
        projections += (
            ["time_mlp_in", "time_mlp_out"]
            if config.pi05
            else ["state_proj", "action_time_mlp_in", "action_time_mlp_out"]
        )
        for name in projections:
            rules += _dense(name, name)
    covered = [name for rule in rules for name in rule.canonical]
    if sorted(covered) != sorted(weight_schema(config)):
        raise AssertionError("the torch weight rules and the canonical schema disagree")
    return rules


def module_arrays(config: Pi0Config, params: Mapping[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    """Canonical name -> array  ==>  (module parameter name, float32 array in module
    layout), one parameter at a time so that a conversion holds one extra tensor at most.

    Raises:
        WeightsError: a parameter is missing, unexpected or mis-shaped.
    """
    params = check_against_schema(params, weight_schema(config))
    for rule in module_rules(config):
        sources = [np.asarray(params[name], dtype=np.float32) for name in rule.canonical]
        if rule.depth:
            for i in range(rule.depth):
                yield rule.module.format(i=i), rule.to_module(*(s[i] for s in sources))
        else:
            yield rule.module, rule.to_module(*sources)


def canonical_from_module_state(config: Pi0Config, state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Module parameter name -> tensor (parameters or their gradients)  ==>  canonical
    name -> float32 numpy array in the canonical layout."""

    def array(name: str) -> np.ndarray:
        return state[name].detach().to(device="cpu", dtype=torch.float32).numpy()

    params: dict[str, np.ndarray] = {}
    for rule in module_rules(config):
        if rule.depth:
            per_layer = [rule.to_canonical(array(rule.module.format(i=i))) for i in range(rule.depth)]
            parts = [np.stack(layers) for layers in zip(*per_layer, strict=True)]
        else:
            parts = list(rule.to_canonical(array(rule.module)))
        for name, part in zip(rule.canonical, parts, strict=True):
            params[name] = np.ascontiguousarray(part)
    return params


def load_into(module: nn.Module, config: Pi0Config, params: Mapping[str, np.ndarray]) -> None:
    """Fill ``module`` (built on the meta device) with canonical ``params``, in place.

    Each array is converted, copied once into a tensor of the dtype the module
    declared for that parameter (float32 islands stay float32), and then replaces the
    meta tensor (``assign=True``): the module owns its weights and nothing is
    allocated twice.

    Raises:
        WeightsError: a parameter is missing, unexpected or mis-shaped, or the module
            has a parameter no canonical array filled.
    """
    expected = dict(module.named_parameters())
    tensors = {}
    for name, array in module_arrays(config, params):
        target = expected[name]
        if tuple(array.shape) != tuple(target.shape):
            raise WeightsError(
                f"module parameter {name!r} should have shape {list(target.shape)}, got {list(array.shape)}"
            )
        tensors[name] = torch.from_numpy(np.array(array, dtype=np.float32, order="C")).to(target.dtype)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise WeightsError(f"no canonical parameter fills module parameters {missing[:10]}")
    module.load_state_dict(tensors, strict=True, assign=True)
    still_meta = [name for name, p in module.named_parameters() if p.is_meta]
    if still_meta:
        raise WeightsError(f"module parameters left unfilled: {still_meta[:10]}")
