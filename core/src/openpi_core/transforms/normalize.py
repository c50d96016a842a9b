"""Normalization statistics, their JSON file, and the Normalize / Unnormalize transforms.

The file format is openpi's ``norm_stats.json``::

    {"norm_stats": {"state": {"mean": [...], "std": [...], "q01": [...], "q99": [...]},
                    "actions": {...}}}

Keys are flattened data paths (``"state"``, ``"actions"``, ``"observation/state"``).
``q01`` and ``q99`` may be absent or ``null``; they are needed only for quantile
normalization (π0.5, π0-FAST).
"""

import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import numpy as np

from openpi_core.errors import InputError, NormStatsError
from openpi_core.schema import SEPARATOR, flatten_dict
from openpi_core.transforms.base import DataDict

FILE_NAME = "norm_stats.json"

# Added to every scale so a zero-width dimension does not divide by zero (openpi's value).
EPSILON = 1e-6

MAX_DEVIATION = 1e4
"""How far from its stats :class:`Normalize` lets a value be, in stds (z-score) or in
``q99 - q01`` widths from the middle of ``[q01, q99]`` (quantiles). No robot state is
that far from its training data; such a value is a unit or encoding mistake, and the
model would turn it into NaN actions."""
MIN_CHECKED_WIDTH = 1e-4
"""Dims whose std (or ``q99 - q01``) is below this are not held to :data:`MAX_DEVIATION`:
any noise on a constant training dim is "far" from it. They must still normalize to a
finite float32."""

_REQUIRED_FIELDS = ("mean", "std")
_QUANTILE_FIELDS = ("q01", "q99")
_ALL_FIELDS = (*_REQUIRED_FIELDS, *_QUANTILE_FIELDS)


def _as_vector(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _as_optional_vector(value: Any) -> np.ndarray | None:
    return None if value is None else _as_vector(value)


_array_eq = attrs.cmp_using(eq=np.array_equal)


@attrs.frozen
class NormStats:
    """Per-dimension statistics of one data key, each a float64 vector ``[D]``.

    Construction only converts; :meth:`check` validates (shapes, finiteness, widths).
    """

    mean: np.ndarray = attrs.field(converter=_as_vector, eq=_array_eq)
    std: np.ndarray = attrs.field(converter=_as_vector, eq=_array_eq)
    q01: np.ndarray | None = attrs.field(default=None, converter=_as_optional_vector, eq=_array_eq)
    q99: np.ndarray | None = attrs.field(default=None, converter=_as_optional_vector, eq=_array_eq)

    @property
    def has_quantiles(self) -> bool:
        return self.q01 is not None and self.q99 is not None

    def check(self, key: str) -> None:
        """Validate these stats, naming ``key`` in any error.

        Every field must be a finite vector of one common length; ``q01`` and ``q99``
        come together. A width (``std`` or ``q99 - q01``) may be zero on some
        dimensions (see :func:`openpi_core.norm_stats.near_zero_dims`) but not on all
        of them, and never negative.

        Raises:
            NormStatsError: naming the key and the field.
        """
        if (self.q01 is None) != (self.q99 is None):
            missing = "q01" if self.q01 is None else "q99"
            raise NormStatsError(f"norm stats {key!r}: {missing!r} is missing while its pair is given")
        fields = {name: getattr(self, name) for name in _ALL_FIELDS}
        fields = {name: value for name, value in fields.items() if value is not None}
        for name, value in fields.items():
            if value.ndim != 1 or value.size == 0:
                raise NormStatsError(
                    f"norm stats {key!r}: {name!r} should be a non-empty vector, got shape {list(value.shape)}"
                )
            if value.shape != self.mean.shape:
                raise NormStatsError(
                    f"norm stats {key!r}: {name!r} has length {value.size}, 'mean' has length {self.mean.size}"
                )
            if not np.all(np.isfinite(value)):
                bad = int(np.flatnonzero(~np.isfinite(value))[0])
                raise NormStatsError(f"norm stats {key!r}: {name!r} should be finite, got {value[bad]} at dim {bad}")
        widths = {"std": self.std}
        if self.q01 is not None and self.q99 is not None:
            widths["q99 - q01"] = self.q99 - self.q01
        for name, width in widths.items():
            if np.any(width < 0):
                bad = int(np.flatnonzero(width < 0)[0])
                raise NormStatsError(f"norm stats {key!r}: {name!r} should be >= 0, got {width[bad]} at dim {bad}")
            if np.all(width == 0):
                raise NormStatsError(f"norm stats {key!r}: {name!r} is zero on every dimension")


def load_norm_stats(path: str | pathlib.Path) -> dict[str, NormStats]:
    """Read openpi's ``norm_stats.json``; a directory means ``<dir>/norm_stats.json``.

    Raises:
        NormStatsError: the file is missing or not JSON, lacks ``norm_stats`` or a
            key's ``mean``/``std``, or holds invalid stats (see :meth:`NormStats.check`).
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    try:
        text = path.read_text()
    except OSError as error:
        raise NormStatsError(f"cannot read norm stats file {str(path)!r}: {error}") from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise NormStatsError(f"norm stats file {str(path)!r} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("norm_stats"), dict):
        raise NormStatsError(f"norm stats file {str(path)!r} should hold an object with a 'norm_stats' object")
    return {key: _parse_entry(key, entry) for key, entry in document["norm_stats"].items()}


def save_norm_stats(stats: Mapping[str, NormStats], path: str | pathlib.Path) -> pathlib.Path:
    """Write ``stats`` as openpi's ``norm_stats.json`` and return the file's path.

    ``path`` is the file itself when it ends in ``.json``, otherwise a directory
    (created if needed) that receives ``norm_stats.json``. Stats are validated first,
    so a file that cannot be loaded back is never written, and the file is replaced
    atomically (a temporary file, fsynced, renamed over it), so a crash leaves the old
    file or the new one, never a torn one.
    """
    for key, entry in stats.items():
        entry.check(key)
    path = pathlib.Path(path)
    if path.suffix != ".json":
        path = path / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "norm_stats": {
            key: {name: None if (value := getattr(entry, name)) is None else value.tolist() for name in _ALL_FIELDS}
            for key, entry in stats.items()
        }
    }
    from openpi_core.checkpoints._io import atomic_write  # lazy: checkpoints imports transforms

    atomic_write(path, json.dumps(document, indent=2))
    return path


def _parse_entry(key: str, entry: Any) -> NormStats:
    if not isinstance(entry, dict):
        raise NormStatsError(f"norm stats {key!r} should be an object of fields, got {type(entry).__name__}")
    for name in _REQUIRED_FIELDS:
        if entry.get(name) is None:
            raise NormStatsError(f"norm stats {key!r} is missing the field {name!r}; got fields {sorted(entry)}")
    fields = {name: _parse_field(key, name, entry.get(name)) for name in _ALL_FIELDS}
    stats = NormStats(**fields)
    stats.check(key)
    return stats


def _parse_field(key: str, name: str, value: Any) -> np.ndarray | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise NormStatsError(f"norm stats {key!r}: {name!r} should be a list of numbers, got {value!r:.80}")
    return np.asarray(value, dtype=np.float64)


def _convert_stats(stats: Mapping[str, Any] | None) -> dict[str, NormStats] | None:
    return None if stats is None else flatten_dict(stats)


def _check_stats(use_quantiles: bool, stats: dict[str, NormStats] | None) -> None:
    for key, entry in (stats or {}).items():
        if not isinstance(entry, NormStats):
            raise NormStatsError(f"norm stats {key!r} should be NormStats, got {type(entry).__name__}")
        entry.check(key)
        if use_quantiles and not entry.has_quantiles:
            raise NormStatsError(f"norm stats {key!r}: quantile normalization needs 'q01' and 'q99', they are missing")


_StatsFn = Callable[[np.ndarray, NormStats], np.ndarray]
_CheckFn = Callable[[str, np.ndarray, np.ndarray, NormStats], None]


def _apply(
    data: DataDict,
    stats: Mapping[str, NormStats],
    fn: _StatsFn,
    *,
    strict: bool,
    what: str,
    check: _CheckFn | None = None,
) -> DataDict:
    """Apply ``fn(x, stats)`` to the leading dims of every data key that has stats."""
    if strict and (missing := sorted(set(stats) - set(flatten_dict(data)))):
        raise InputError(
            f"{what}: data lacks the keys {missing} that have norm stats; got keys {sorted(flatten_dict(data))}"
        )

    # Rebuild the data's own nesting (rather than unflattening the flat view) so that a
    # flat key such as "observation/state" stays flat.
    def rebuild(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        out = {}
        for name, value in tree.items():
            path = f"{prefix}{SEPARATOR}{name}" if prefix else str(name)
            if isinstance(value, Mapping):
                out[name] = rebuild(value, path)
            elif path in stats:
                out[name] = _apply_leading(path, np.asarray(value), stats[path], fn, what, check)
            else:
                out[name] = value
        return out

    return rebuild(data, "")


def _apply_leading(
    key: str, x: np.ndarray, stats: NormStats, fn: _StatsFn, what: str, check: _CheckFn | None
) -> np.ndarray:
    # Stats may be narrower than the data (actions padded to the model's width) or wider
    # (stats of the full robot state, data cropped): only the common leading dims change.
    if x.ndim == 0:
        raise InputError(f"{what}: data[{key!r}] should have shape [..., D], got a scalar")
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
    dims = min(x.shape[-1], stats.mean.size)
    out = x.astype(np.float64)
    stats = _truncate(stats, dims)
    normalized = fn(out[..., :dims], stats)
    if check is not None:
        check(key, out[..., :dims], normalized, stats)
    out[..., :dims] = normalized
    return out.astype(dtype)


def _deviation_check(use_quantiles: bool, max_deviation: float) -> _CheckFn:
    """Refuse values :data:`MAX_DEVIATION`-far from their stats, or that normalize to no finite float32."""

    def check(key: str, raw: np.ndarray, normalized: np.ndarray, stats: NormStats) -> None:
        if use_quantiles:
            width = stats.q99 - stats.q01
            deviation = np.abs(normalized) / 2.0  # widths from the middle of [q01, q99]
            unit, center = "q99 - q01 widths from the middle of [q01, q99]", (stats.q01 + stats.q99) / 2.0
        else:
            width = stats.std
            deviation = np.abs(normalized)
            unit, center = "stds from the mean", stats.mean
        too_far = (deviation > max_deviation) & (width >= MIN_CHECKED_WIDTH)
        too_far |= ~(np.abs(normalized) <= np.finfo(np.float32).max)  # NaN or beyond float32
        if np.any(too_far):
            index = tuple(int(i) for i in np.argwhere(too_far)[0])
            dim = index[-1]
            raise InputError(
                f"Normalize: data[{key!r}] dim {dim} is {raw[index]:.6g}, {deviation[index]:.3g} {unit} "
                f"(mean/middle {center[dim]:.6g}); more than {max_deviation:g} cannot be meant: check its units"
            )

    return check


def _truncate(stats: NormStats, dims: int) -> NormStats:
    return NormStats(
        mean=stats.mean[:dims],
        std=stats.std[:dims],
        q01=None if stats.q01 is None else stats.q01[:dims],
        q99=None if stats.q99 is None else stats.q99[:dims],
    )


def _z_score(x: np.ndarray, stats: NormStats) -> np.ndarray:
    return (x - stats.mean) / (stats.std + EPSILON)


def _quantile(x: np.ndarray, stats: NormStats) -> np.ndarray:
    return (x - stats.q01) / (stats.q99 - stats.q01 + EPSILON) * 2.0 - 1.0


def _inverse_z_score(x: np.ndarray, stats: NormStats) -> np.ndarray:
    return x * (stats.std + EPSILON) + stats.mean


def _inverse_quantile(x: np.ndarray, stats: NormStats) -> np.ndarray:
    return (x + 1.0) / 2.0 * (stats.q99 - stats.q01 + EPSILON) + stats.q01


@attrs.frozen
class Normalize:
    """Normalize the data keys named in ``norm_stats`` (flattened paths, e.g. ``"state"``).

    z-score: ``(x - mean) / (std + 1e-6)``; quantile: ``(x - q01) / (q99 - q01 + 1e-6) * 2 - 1``,
    which maps ``[q01, q99]`` to ``[-1, 1]``. Data ``[..., D]``; only the first
    ``min(D, len(stats))`` dims change, the rest pass through. Float data keeps its
    dtype, other data becomes float32. Stats whose key is absent from the data are
    skipped unless ``strict``. ``norm_stats=None`` makes this the identity.

    A value more than ``max_deviation`` stds (z-score) or ``q99 - q01`` widths
    (quantiles) from its stats, on a dim at least :data:`MIN_CHECKED_WIDTH` wide, or one
    that normalizes to no finite float32, is refused: openpi passes it on and the model
    answers NaN. ``max_deviation=None`` turns the check off.

    Raises:
        NormStatsError: at construction, invalid stats, or quantile mode without q01/q99.
        InputError: when called, ``strict`` and a key is missing from the data, or a
            value is that far off (the message names the key, the dim and the value).
    """

    norm_stats: dict[str, NormStats] | None = attrs.field(converter=_convert_stats)
    use_quantiles: bool = False
    strict: bool = False
    max_deviation: float | None = MAX_DEVIATION

    def __attrs_post_init__(self) -> None:
        _check_stats(self.use_quantiles, self.norm_stats)

    def __call__(self, data: DataDict) -> DataDict:
        if self.norm_stats is None:
            return data
        fn = _quantile if self.use_quantiles else _z_score
        check = None if self.max_deviation is None else _deviation_check(self.use_quantiles, self.max_deviation)
        return _apply(data, self.norm_stats, fn, strict=self.strict, what="Normalize", check=check)


@attrs.frozen
class Unnormalize:
    """Invert :class:`Normalize` on the data keys named in ``norm_stats``.

    Dims of the data beyond the stats' length pass through unchanged. (openpi's
    z-score inverse instead multiplies them by ``1 + 1e-6``; its quantile inverse
    passes them through as here.) Like openpi, every key with stats must be present
    in the data unless ``strict=False``.

    Raises:
        NormStatsError: at construction, invalid stats, or quantile mode without q01/q99.
        InputError: when called, ``strict`` and a key is missing from the data.
    """

    norm_stats: dict[str, NormStats] | None = attrs.field(converter=_convert_stats)
    use_quantiles: bool = False
    strict: bool = True

    def __attrs_post_init__(self) -> None:
        _check_stats(self.use_quantiles, self.norm_stats)

    def __call__(self, data: DataDict) -> DataDict:
        if self.norm_stats is None:
            return data
        fn = _inverse_quantile if self.use_quantiles else _inverse_z_score
        return _apply(data, self.norm_stats, fn, strict=self.strict, what="Unnormalize")
