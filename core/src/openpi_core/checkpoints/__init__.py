"""Loading and saving π0 / π0.5 / π0-FAST weights in any supported format, with numpy alone.

Formats (each a plugin-registered :class:`~openpi_core.specs.AbstractCheckpointFormat`;
the built-ins live in :mod:`openpi_core.checkpoints.formats`):

* ``native``: this project's directory (``model.safetensors`` + ``manifest.json``).
* ``openpi-jax``: openpi's Orbax ``params`` checkpoints (reading needs tensorstore,
  ``pip install 'openpi-core[orbax]'``; writing needs orbax-checkpoint).
* ``openpi-torch``: openpi's PyTorch / LeRobot ``model.safetensors`` (π0 and π0.5 only).
* ``safetensors``: a bare safetensors file under openpi JAX or canonical names (read only).

Every reader returns canonical names and layouts (:mod:`openpi_core.models.pi0_weights`)
and every writer takes them, so any format converts to any other through
:func:`load_checkpoint` and :func:`save_checkpoint`.
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from openpi_core.checkpoints._io import SKIP_CHECKSUMS_ENV, Progress, cast, storage_dtype, verification
from openpi_core.checkpoints.infer import ModelConfig, infer_config, weight_schema
from openpi_core.checkpoints.naming import detect_naming, to_canonical
from openpi_core.checkpoints.native import load_native, save_native
from openpi_core.download import is_url, maybe_download
from openpi_core.errors import WeightsError
from openpi_core.plugins import get_checkpoint_format, get_plugin_manager
from openpi_core.specs import AbstractCheckpointFormat

__all__ = [
    "SKIP_CHECKSUMS_ENV",
    "detect_format",
    "detect_naming",
    "infer_config",
    "load_checkpoint",
    "load_native",
    "save_checkpoint",
    "save_native",
    "to_canonical",
    "weight_schema",
]


def detect_format(path: str | Path) -> AbstractCheckpointFormat:
    """The one installed checkpoint format that recognises ``path``.

    Raises:
        WeightsError: ``path`` does not exist, or no format (or more than one) recognises it.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"no checkpoint at {path}: no such file or directory")
    registry = get_plugin_manager().registry("checkpoint_format")
    matches = [entry.item for _, entry in sorted(registry.entries.items()) if entry.item.detect(path)]
    if len(matches) != 1:
        found = ", ".join(fmt.name for fmt in matches) if matches else "none of them"
        raise WeightsError(
            f"{path} should be recognised by exactly one checkpoint format; installed: "
            f"{', '.join(registry.names())}; recognised by: {found}"
        )
    return matches[0]


def load_checkpoint(
    path_or_params: str | Path | Mapping[str, np.ndarray],
    config: ModelConfig | None = None,
    *,
    progress: Progress = None,
    verify: bool | None = None,
) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """Load π0, π0.5 or π0-FAST weights from a checkpoint or a mapping of arrays, as canonical arrays.

    Args:
        path_or_params: a checkpoint path (format detected: a native directory, an
            Orbax ``params/`` or a directory holding one, a ``.safetensors`` file or a
            directory with ``model.safetensors`` in openpi JAX, openpi-PyTorch /
            LeRobot or canonical naming); a URL (``http(s)://``, ``gs://``, ``file://``),
            fetched into the cache by :func:`openpi_core.download.maybe_download`; or a
            mapping of arrays in any of the three namings.
        config: the model config; None takes the one stored with the checkpoint, else
            infers it from the shapes (``action_horizon`` and ``max_token_len`` then keep
            their defaults). Given, it overrides the stored one.
        progress: called with each tensor's name once it is loaded.
        verify: check the sha256 of the files that a manifest of this project beside
            the weights records (sizes are checked either way); None: yes, unless the
            environment sets ``OPENPI_SKIP_CHECKSUMS=1``. False saves reading very large
            files twice.

    Returns:
        ``(config, params)``: canonical name -> array, in the stored dtype.

    Raises:
        WeightsError: the source is not recognised; a file is unreadable, truncated or
            corrupt, or differs from the checksum its manifest records (naming the file);
            or a parameter is missing, unknown or mis-shaped (naming it, the expected
            and the found shape).
    """
    if isinstance(path_or_params, Mapping):
        return to_canonical(path_or_params, config)
    source = maybe_download(path_or_params) if is_url(str(path_or_params)) else Path(path_or_params)
    with verification(verify):
        return detect_format(source).read(source, config, progress=progress)


def save_checkpoint(
    path: str | Path,
    config: ModelConfig | None,
    params: Mapping[str, np.ndarray],
    to: str = "native",
    *,
    dtype: str | None = None,
    overwrite: bool = False,
    progress: Progress = None,
) -> Path:
    """Write weights at ``path`` in format ``to`` (``native``, ``openpi-torch``, ``openpi-jax``, …).

    Args:
        config: the model config; None infers it from the shapes.
        params: arrays in any of the three namings.
        dtype: ``float32`` or ``bfloat16`` storage; None keeps bfloat16 when every
            array is bfloat16 and stores float32 otherwise.
        overwrite: replace an existing ``path`` (the new checkpoint is written aside
            and renamed into place).

    Raises:
        UnknownNameError: no installed format is called ``to``.
        WeightsError: the params do not match the config, or ``path`` exists.
    """
    checkpoint_format = get_checkpoint_format(to)
    config, canonical = to_canonical(params, config)
    canonical = cast(canonical, dtype or storage_dtype(canonical))
    checkpoint_format.write(Path(path), config, canonical, overwrite=overwrite, progress=progress)
    return Path(path)
