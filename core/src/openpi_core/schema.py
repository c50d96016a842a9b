"""Declared shapes and dtypes of the arrays in a data dict, and their validation.

An observation schema maps flattened key paths (``"images/cam_high"``) to an
:class:`ArraySpec`. Validation raises :class:`~openpi_core.errors.InputError`
naming the key, the expected and the actual value, never a numpy ``IndexError``.
"""

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from openpi_core.errors import InputError, few

SEPARATOR = "/"


@attrs.frozen
class ArraySpec:
    """Shape and dtype kind of one array.

    ``shape`` entries that are ``None`` match any size but zero. ``dtype_kind`` is a numpy
    kind string: ``"u"`` unsigned, ``"i"`` signed, ``"f"`` float, ``"b"`` bool, or
    several of them (``"uf"`` accepts uint8 images or float images). ``required``
    keys must be present; optional ones are checked only when present.
    """

    shape: tuple[int | None, ...] = attrs.field(converter=tuple)
    dtype_kind: str = "f"
    required: bool = True
    finite: bool = True
    description: str = ""

    def describe(self) -> str:
        dims = ", ".join("*" if d is None else str(d) for d in self.shape)
        return f"[{dims}] ({self.dtype_kind})"


def flatten_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into ``{"a/b": leaf}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{SEPARATOR}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_dict(value, path))
        else:
            flat[path] = value
    return flat


def unflatten_dict(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_dict`."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(SEPARATOR)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def validate(data: Mapping[str, Any], schema: Mapping[str, ArraySpec], *, what: str = "observation") -> None:
    """Check ``data`` (nested or flat) against ``schema``.

    Raises:
        InputError: a required key is missing (the message lists the expected keys
            and the ones that came), or an array has the wrong rank, size, dtype kind,
            or non-finite values.
    """
    flat = flatten_dict(data)
    missing = [key for key, spec in schema.items() if spec.required and key not in flat]
    if missing:
        raise InputError(
            f"{what} is missing {few(missing)}; expected keys {few(sorted(schema), 12)}, "
            f"got {len(flat)} keys: {few(sorted(flat, key=str))}"
        )
    for key, spec in schema.items():
        if key not in flat:
            continue
        check_array(key, flat[key], spec, what=what)


def check_array(key: str, value: Any, spec: ArraySpec, *, what: str = "observation") -> None:
    """Check one array against its spec; see :func:`validate`."""
    array = np.asarray(value)
    if array.ndim != len(spec.shape) or any(
        got == 0 if want is None else want != got for want, got in zip(spec.shape, array.shape, strict=False)
    ):
        raise InputError(f"{what}[{key!r}] should have shape {spec.describe()}, got {list(array.shape)}")
    if array.dtype.kind not in spec.dtype_kind:
        raise InputError(f"{what}[{key!r}] should have dtype kind {spec.dtype_kind!r}, got {array.dtype}")
    if spec.finite and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise InputError(f"{what}[{key!r}] should be finite, got {array[tuple(bad)]} at index {bad}")
