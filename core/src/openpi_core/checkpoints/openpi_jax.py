"""openpi JAX naming <-> canonical naming, without knowing the model's sizes.

openpi's JAX checkpoints name parameters by their path in the params tree, here
joined with ``/`` (``PaliGemma/llm/layers/attn/q_einsum/w``); canonical names are
the dotted names of :mod:`openpi_core.models.pi0_weights`. The layouts are the same,
so converting is a pure rename. Training checkpoints saved from an ``nnx.State``
end every path in ``/value``; that suffix is dropped on import.
"""

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from openpi_core.errors import WeightsError
from openpi_core.models.config import GEMMA_VARIANTS, SIGLIP_VARIANTS, Pi0Config
from openpi_core.models.pi0_weights import openpi_jax_name, pi0_weight_schema

VALUE_SUFFIX = "/value"


@functools.cache
def _canonical_by_openpi_name() -> dict[str, str]:
    """Every canonical π0 and π0.5 name by its openpi JAX name (names do not depend on sizes)."""
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


def canonical_from_openpi_jax(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename openpi-JAX-named arrays to canonical names (shapes are checked later, against a schema).

    Raises:
        WeightsError: naming the openpi parameters no π0/π0.5 model has.
    """
    params = strip_value_suffix(params)
    known = _canonical_by_openpi_name()
    unknown = sorted(name for name in params if name not in known)
    if unknown:
        raise WeightsError(f"openpi JAX parameters unknown to π0/π0.5: {unknown[:10]} ({len(unknown)} in all)")
    return {known[name]: array for name, array in params.items()}


def openpi_jax_from_canonical(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename canonical arrays to openpi JAX names (``/``-joined tree paths)."""
    return {openpi_jax_name(name): array for name, array in params.items()}


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
