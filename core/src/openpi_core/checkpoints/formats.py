"""The built-in checkpoint formats, as :class:`~openpi_core.specs.AbstractCheckpointFormat` objects.

Their ``detect`` methods are disjoint, so :func:`openpi_core.checkpoints.load_checkpoint`
finds exactly one for any checkpoint. When reading, the config comes from the caller,
else from a manifest of this project beside the weights, else from the shapes. A
manifest of the reader's naming beside the weights also has the files it records
checked (size and sha256, see :mod:`openpi_core.checkpoints.native`).
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from openpi_core.checkpoints._io import (
    Progress,
    atomic_directory,
    cast,
    find_safetensors,
    read_safetensors,
    safetensors_keys,
    storage_dtype,
    write_safetensors,
)
from openpi_core.checkpoints.infer import ModelConfig, weight_schema
from openpi_core.checkpoints.naming import to_canonical
from openpi_core.checkpoints.native import (
    WEIGHTS,
    check_manifest_files,
    is_native,
    load_native,
    make_manifest,
    manifest_config,
    read_manifest,
    save_native,
    write_manifest,
)
from openpi_core.checkpoints.openpi_jax import openpi_jax_from_canonical
from openpi_core.checkpoints.openpi_torch import TIED_METADATA, is_openpi_torch_naming, openpi_torch_from_canonical
from openpi_core.checkpoints.orbax import ROOT, find_params_dir, read_orbax_params, write_orbax_params
from openpi_core.errors import WeightsError
from openpi_core.models.pi0_weights import check_against_schema
from openpi_core.specs import AbstractCheckpointFormat


def _stored_config(directory: Path, naming: str, config: ModelConfig | None) -> ModelConfig | None:
    """``config`` if given, else that of a manifest of ``naming`` in ``directory``, if there is one.

    The files such a manifest records are checked either way.

    Raises:
        WeightsError: the manifest is unreadable, or a file it records is missing,
            truncated or changed.
    """
    manifest = read_manifest(directory)
    if manifest is None or manifest.get("naming", "canonical") != naming:
        return config
    check_manifest_files(directory, manifest)
    return config or manifest_config(manifest, directory)


def _uniform(config: ModelConfig, params: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """Checked params, all of one storage dtype (float32 unless every array is bfloat16)."""
    params = check_against_schema(params, weight_schema(config))
    dtype = storage_dtype(params)
    return cast(params, dtype), dtype


class NativeFormat(AbstractCheckpointFormat):
    name = "native"
    description = "this project's format: model.safetensors under canonical names + manifest.json"

    def detect(self, path: Path) -> bool:
        return is_native(path)

    def read(
        self, path: Path, config: ModelConfig | None = None, *, progress: Progress = None
    ) -> tuple[ModelConfig, dict[str, np.ndarray]]:
        return load_native(path, config, progress=progress)

    def write(
        self,
        path: Path,
        config: ModelConfig,
        params: Mapping[str, np.ndarray],
        *,
        overwrite: bool = False,
        progress: Progress = None,
    ) -> None:
        save_native(path, config, params, overwrite=overwrite, progress=progress)


class OpenpiTorchFormat(AbstractCheckpointFormat):
    """A directory with ``model.safetensors`` (or the file itself) as openpi's PyTorch model
    or LeRobot's pi0/pi05 policies save it. Written as a directory with ``model.safetensors``
    and this project's ``manifest.json`` (``"naming": "openpi-torch"``)."""

    name = "openpi-torch"
    description = "openpi PyTorch / LeRobot model.safetensors (paligemma_with_expert.* keys)"

    def detect(self, path: Path) -> bool:
        file = find_safetensors(Path(path))
        return file is not None and is_openpi_torch_naming(safetensors_keys(file))

    def read(
        self, path: Path, config: ModelConfig | None = None, *, progress: Progress = None
    ) -> tuple[ModelConfig, dict[str, np.ndarray]]:
        file = find_safetensors(Path(path))
        if file is None:
            raise WeightsError(f"{path} is neither a .safetensors file nor a directory with model.safetensors")
        config = _stored_config(file.parent, self.name, config)
        return to_canonical(read_safetensors(file, progress), config)

    def write(
        self,
        path: Path,
        config: ModelConfig,
        params: Mapping[str, np.ndarray],
        *,
        overwrite: bool = False,
        progress: Progress = None,
    ) -> None:
        if config.family == "pi0_fast":
            raise WeightsError("openpi's PyTorch model has no π0-FAST; write π0-FAST weights as native or openpi-jax")
        params, dtype = _uniform(config, params)
        state = openpi_torch_from_canonical(params, config)
        with atomic_directory(Path(path), overwrite=overwrite) as scratch:
            write_safetensors(scratch / WEIGHTS, state, TIED_METADATA, progress)
            write_manifest(scratch, make_manifest(config, dtype, naming=self.name))


class OpenpiJaxFormat(AbstractCheckpointFormat):
    """openpi's Orbax ``params`` checkpoint: the ``params/`` directory itself, or a
    directory holding one (a released checkpoint or a training step). Written as a
    directory with ``params/`` and this project's ``manifest.json`` (``"naming": "openpi-jax"``);
    openpi restores ``<path>/params`` with ``restore_params``."""

    name = "openpi-jax"
    description = "openpi JAX Orbax params checkpoint (params/ or a directory holding params/)"

    def detect(self, path: Path) -> bool:
        return find_params_dir(Path(path)) is not None

    def read(
        self, path: Path, config: ModelConfig | None = None, *, progress: Progress = None
    ) -> tuple[ModelConfig, dict[str, np.ndarray]]:
        params_dir = find_params_dir(Path(path))
        if params_dir is None:
            raise WeightsError(f"{path} is not an Orbax params checkpoint")
        config = _stored_config(params_dir.parent, self.name, config)
        return to_canonical(read_orbax_params(params_dir, progress), config)

    def write(
        self,
        path: Path,
        config: ModelConfig,
        params: Mapping[str, np.ndarray],
        *,
        overwrite: bool = False,
        progress: Progress = None,
    ) -> None:
        params, dtype = _uniform(config, params)
        with atomic_directory(Path(path), overwrite=overwrite) as scratch:
            write_orbax_params(scratch / ROOT, openpi_jax_from_canonical(params), progress)
            write_manifest(scratch, make_manifest(config, dtype, naming=self.name))


class SafetensorsFormat(AbstractCheckpointFormat):
    """A bare ``.safetensors`` file (or a directory with ``model.safetensors`` that is not a
    native checkpoint) under openpi JAX (``/``-joined) or canonical names, such as the
    reference ``params.safetensors``. Read only."""

    name = "safetensors"
    description = "a bare .safetensors file under openpi JAX ('/'-joined) or canonical names (read only)"

    def detect(self, path: Path) -> bool:
        file = find_safetensors(Path(path))
        return file is not None and not is_native(Path(path)) and not is_openpi_torch_naming(safetensors_keys(file))

    def read(
        self, path: Path, config: ModelConfig | None = None, *, progress: Progress = None
    ) -> tuple[ModelConfig, dict[str, np.ndarray]]:
        file = find_safetensors(Path(path))
        if file is None:
            raise WeightsError(f"{path} is neither a .safetensors file nor a directory with model.safetensors")
        config = _stored_config(file.parent, "canonical", config)
        return to_canonical(read_safetensors(file, progress), config)


BUILTIN_FORMATS: tuple[AbstractCheckpointFormat, ...] = (
    NativeFormat(),
    OpenpiTorchFormat(),
    OpenpiJaxFormat(),
    SafetensorsFormat(),
)
