"""Canonical parameter dict <-> Equinox module tree.

A canonical name (see :mod:`openpi_core.models.pi0_weights`) is the dotted path of
attributes that reaches the array in the module tree: ``llm.layers.attn.q_proj`` is
``model.llm.layers.attn.q_proj`` (its LoRA adapter ``….q_proj.lora_a`` is
``….q_proj_lora.lora_a``). Loading builds a shape-only skeleton of the model
(``eqx.filter_eval_shape``, nothing allocated), checks every named leaf's shape,
swaps the arrays in with one ``eqx.tree_at``, and fails if any leaf was left unfilled.
"""

from collections.abc import Iterable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from openpi_core.errors import WeightsError


def _path(name: str) -> list[str]:
    """Attribute path of canonical ``name``; a LoRA adapter ``<weight>.lora_a`` lives at
    ``<weight>_lora.lora_a`` (:class:`~openpi_backend_jax.gemma.LoRA`)."""
    base, _, last = name.rpartition(".")
    if last in ("lora_a", "lora_b"):
        return [*f"{base}_lora".split("."), last]
    return name.split(".")


def _leaf(tree: eqx.Module, name: str):
    node = tree
    for part in _path(name):
        if not hasattr(node, part):
            raise WeightsError(f"parameter {name!r} names no array of the model ({part!r} not found)")
        node = getattr(node, part)
    return node


def fill(skeleton: eqx.Module, params: Mapping[str, np.ndarray], dtype: jnp.dtype) -> eqx.Module:
    """Put ``params`` (canonical name -> array) into a shape-only ``skeleton``.

    Every array is converted to ``dtype``; a float32 array into a float32 model is
    copied bit for bit.

    Raises:
        WeightsError: a name reaches no leaf, a shape differs from the skeleton's, or
            a leaf of the skeleton received no array.
    """
    names = sorted(params)
    for name in names:
        leaf = _leaf(skeleton, name)
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            raise WeightsError(f"parameter {name!r} names a {type(leaf).__name__}, not an array")
        if tuple(leaf.shape) != tuple(np.shape(params[name])):
            raise WeightsError(
                f"parameter {name!r} should have shape {list(leaf.shape)}, found {list(np.shape(params[name]))}"
            )
    model = eqx.tree_at(
        lambda tree: [_leaf(tree, name) for name in names],
        skeleton,
        [jnp.asarray(params[name], dtype=dtype) for name in names],
    )
    unfilled = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(model)
        if isinstance(leaf, jax.ShapeDtypeStruct)
    ]
    if unfilled:
        raise WeightsError(f"no parameter given for {unfilled[:10]} ({len(unfilled)} in all)")
    return model


def label(skeleton: eqx.Module, names: Iterable[str]) -> eqx.Module:
    """``skeleton`` with the leaf of each of ``names`` replaced by that name: a tree of
    strings whose leaf order maps the leaves of any tree of the same structure to names."""
    names = list(names)
    return eqx.tree_at(lambda tree: [_leaf(tree, name) for name in names], skeleton, names)


def export(model: eqx.Module, names: Iterable[str], dtype: np.dtype | None = None) -> dict[str, np.ndarray]:
    """Canonical name -> numpy array for each of ``names``, as stored (or cast to ``dtype``)."""
    out = {}
    for name in names:
        value = np.asarray(_leaf(model, name))
        out[name] = value if dtype is None else value.astype(dtype)
    return out
