"""openpi JAX naming <-> canonical naming, without knowing the model's sizes.

openpi's JAX checkpoints name parameters by their path in the params tree, here
joined with ``/`` (``PaliGemma/llm/layers/attn/q_einsum/w``); canonical names are
the dotted names of :mod:`openpi_core.models.pi0_weights`. The layouts are the same,
so converting is a pure rename, with one exception: where a Gemma has as many KV heads
as query heads, openpi fuses the projections into ``qkv_einsum`` ``[D, 3, N, W, h]``
(q, k, v); it is split into ``q_proj`` and ``kv_proj`` on import and joined on export.
Training checkpoints saved from an ``nnx.State`` end every path in ``/value``; that
suffix is dropped on import. π0-FAST's names are π0's without the action expert.
"""

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from openpi_core.errors import WeightsError
from openpi_core.models.config import GEMMA_VARIANTS, SIGLIP_VARIANTS, Pi0Config
from openpi_core.models.pi0_weights import openpi_jax_name, pi0_weight_schema

VALUE_SUFFIX = "/value"
ATTN = "PaliGemma/llm/layers/attn/"
EXPERT_SUFFIXES = ("", "_1")
"""openpi suffixes the action expert's Gemma parameters with ``_1``."""


@functools.cache
def _canonical_by_openpi_name() -> dict[str, str]:
    """Every canonical π0 and π0.5 name by its openpi JAX name (names do not depend on sizes;
    π0-FAST's are a subset)."""
    names: dict[str, str] = {}
    for pi05 in (False, True):
        config = Pi0Config(
            llm=GEMMA_VARIANTS["dummy"],
            action_expert=GEMMA_VARIANTS["dummy"],
            vision=SIGLIP_VARIANTS["So400m/14"],
            pi05=pi05,
        )
        names.update({openpi_jax_name(name): name for name in pi0_weight_schema(config)})
    return names


def strip_value_suffix(params: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``/value`` from every name when every name ends with it (``nnx.State`` checkpoints)."""
    if params and all(name.endswith(VALUE_SUFFIX) for name in params):
        return {name[: -len(VALUE_SUFFIX)]: value for name, value in params.items()}
    return dict(params)


def split_qkv(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replace each fused ``qkv_einsum{s}/w`` ``[D, 3, N, W, h]`` with ``q_einsum{s}/w``
    ``[D, N, W, h]`` and ``kv_einsum{s}/w`` ``[D, 2, N, W, h]``."""
    params = dict(params)
    for s in EXPERT_SUFFIXES:
        name = f"{ATTN}qkv_einsum{s}/w"
        if name not in params:
            continue
        fused = params.pop(name)
        if np.ndim(fused) != 5 or np.shape(fused)[1] != 3:
            raise WeightsError(
                f"{name} should have shape [depth, 3, heads, width, head_dim], found {list(np.shape(fused))}"
            )
        params[f"{ATTN}q_einsum{s}/w"] = np.asarray(fused[:, 0])
        params[f"{ATTN}kv_einsum{s}/w"] = np.asarray(fused[:, 1:])
    return params


def join_qkv(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fuse ``q_einsum{s}/w`` and ``kv_einsum{s}/w`` into ``qkv_einsum{s}/w`` where there are
    as many KV heads as query heads, as openpi's Gemma names them then."""
    params = dict(params)
    for s in EXPERT_SUFFIXES:
        q, kv = params.get(f"{ATTN}q_einsum{s}/w"), params.get(f"{ATTN}kv_einsum{s}/w")
        if q is not None and kv is not None and np.shape(kv)[2] == np.shape(q)[1]:
            del params[f"{ATTN}q_einsum{s}/w"], params[f"{ATTN}kv_einsum{s}/w"]
            params[f"{ATTN}qkv_einsum{s}/w"] = np.concatenate([np.asarray(q)[:, None], np.asarray(kv)], axis=1)
    return params


def canonical_from_openpi_jax(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename openpi-JAX-named arrays to canonical names (shapes are checked later, against a schema).

    Raises:
        WeightsError: naming the openpi parameters no π0 or π0.5 model has (π0-FAST's
            are a subset of π0's).
    """
    params = split_qkv(strip_value_suffix(params))
    known = _canonical_by_openpi_name()
    unknown = sorted(name for name in params if name not in known)
    if unknown:
        raise WeightsError(f"openpi JAX parameters unknown to π0/π0.5: {unknown[:10]} ({len(unknown)} in all)")
    return {known[name]: array for name, array in params.items()}


def openpi_jax_from_canonical(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename canonical arrays to openpi JAX names (``/``-joined tree paths)."""
    return join_qkv({openpi_jax_name(name): array for name, array in params.items()})


def nest(params: Mapping[str, Any], separator: str = "/") -> dict[str, Any]:
    """``{"a/b": x}`` -> ``{"a": {"b": x}}``: the pure-dict tree openpi saves and restores."""
    tree: dict[str, Any] = {}
    for name, value in params.items():
        *parents, leaf = name.split(separator)
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
