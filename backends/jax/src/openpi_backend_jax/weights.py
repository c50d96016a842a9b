"""Canonical parameter dict <-> Equinox module tree.

A canonical name (see :mod:`openpi_core.models.pi0_weights`) is the dotted path of
attributes that reaches the array in the module tree: ``llm.layers.attn.q_proj`` is
``model.llm.layers.attn.q_proj``. Loading builds a shape-only skeleton of the model
(``eqx.filter_eval_shape``, nothing allocated), checks every named leaf's shape,
swaps the arrays in with one ``eqx.tree_at``, and fails if any leaf was left unfilled.
"""

from collections.abc import Iterable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from openpi_core.errors import WeightsError


def _leaf(tree: eqx.Module, name: str):
    node = tree
    for part in name.split("."):
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


def export(model: eqx.Module, names: Iterable[str], dtype: np.dtype | None = None) -> dict[str, np.ndarray]:
    """Canonical name -> numpy array for each of ``names``, as stored (or cast to ``dtype``)."""
    out = {}
    for name in names:
        value = np.asarray(_leaf(model, name))
        out[name] = value if dtype is None else value.astype(dtype)
    return out
