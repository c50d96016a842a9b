"""Normalization statistics of a dataset, computed in one streaming pass (openpi's
``scripts/compute_norm_stats.py``).

Samples go through the given transforms (the LeRobot repack and the embodiment's
input transforms, not Normalize or the model transforms:
:func:`openpi_core.training.presets.stats_transforms`); the chosen keys are fed to
:class:`~openpi_core.norm_stats.RunningStats`. ``actions`` chunks ``[H, A]`` count
every step, as in openpi.
"""

import logging
from collections.abc import Callable, Sequence

import numpy as np

from openpi_core.data.loader import Dataset
from openpi_core.errors import InputError
from openpi_core.norm_stats import RunningStats, near_zero_dims
from openpi_core.schema import flatten_dict
from openpi_core.transforms import DataTransform, NormStats, compose

logger = logging.getLogger(__name__)

NEAR_ZERO_TOLERANCE = 1e-4
"""A dim whose std or q99 - q01 is below this is reported (see :func:`~openpi_core.norm_stats.near_zero_dims`)."""

_UPDATE_EVERY = 256  # samples buffered per RunningStats update


def sample_indices(size: int, max_frames: int | None, seed: int = 0) -> np.ndarray:
    """All frames in order, or ``max_frames`` of them drawn without replacement (sorted, for sequential reading)."""
    if max_frames is None or max_frames >= size:
        return np.arange(size)
    if max_frames < 2:
        raise InputError(f"max_frames should be >= 2, got {max_frames}")
    return np.sort(np.random.default_rng(seed).choice(size, max_frames, replace=False))


def compute_norm_stats(
    dataset: Dataset,
    transforms: Sequence[DataTransform],
    keys: Sequence[str] = ("state", "actions"),
    max_frames: int | None = None,
    *,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, NormStats]:
    """Mean, std, q01 and q99 of each of ``keys`` (flattened paths) over the transformed samples.

    Args:
        dataset: random access to samples (a :class:`~openpi_core.data.LeRobotDataset`).
        transforms: applied to each sample first.
        keys: data keys to describe; each must be an array ``[..., D]`` in every sample.
        max_frames: use a random subset of this many frames (drawn from ``seed``).
        progress: called with 1 after each sample.

    Returns:
        key -> :class:`NormStats`. Dims whose std or q99 - q01 is below
        :data:`NEAR_ZERO_TOLERANCE` are logged as warnings naming the key and the dims.

    Raises:
        InputError: a key is missing from a transformed sample, or the data is not finite.
    """
    transform = compose(list(transforms))
    stats = {key: RunningStats() for key in keys}
    buffers: dict[str, list[np.ndarray]] = {key: [] for key in keys}

    def flush() -> None:
        for key, values in buffers.items():
            if values:
                stats[key].update(np.stack(values))
                values.clear()

    indices = sample_indices(len(dataset), max_frames, seed)
    for count, index in enumerate(indices, 1):
        sample = flatten_dict(transform(dataset[int(index)]))
        for key in keys:
            if key not in sample:
                raise InputError(
                    f"norm stats: transformed sample {int(index)} lacks {key!r}; got keys {sorted(sample)}"
                )
            buffers[key].append(np.asarray(sample[key], dtype=np.float64))
        if count % _UPDATE_EVERY == 0:
            flush()
        if progress is not None:
            progress(1)
    flush()

    result = {key: running.get_statistics() for key, running in stats.items()}
    for message in near_zero_warnings(result).values():
        logger.warning("%s", message)
    return result


def near_zero_warnings(stats: dict[str, NormStats], tol: float = NEAR_ZERO_TOLERANCE) -> dict[str, str]:
    """key -> a warning naming its dims of (almost) zero width, for the keys that have any."""
    warnings: dict[str, str] = {}
    for key, entry in stats.items():
        dims = near_zero_dims(entry, tol)
        if dims:
            details = ", ".join(
                f"dim {dim} (std {entry.std[dim]:.3g}"
                + ("" if entry.q01 is None or entry.q99 is None else f", q99-q01 {entry.q99[dim] - entry.q01[dim]:.3g}")
                + ")"
                for dim in dims
            )
            warnings[key] = (
                f"norm stats {key!r}: near-zero width (< {tol:g}) on {details}; "
                "normalizing these dims divides by almost nothing"
            )
    return warnings
