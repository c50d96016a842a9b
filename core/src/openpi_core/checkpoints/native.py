"""This project's own checkpoint format: one directory, two files.

* ``model.safetensors``: every parameter under its canonical name and layout
  (:mod:`openpi_core.models.pi0_weights`), all of one storage dtype.
* ``manifest.json``::

      {"format": "openpi-plugins", "format_version": 1, "naming": "canonical",
       "family": "pi0" | "pi05" | "pi0_fast", "config": <unstructured Pi0Config or Pi0FASTConfig>,
       "dtype": "float32" | "bfloat16",
       "files": {"model.safetensors": {"bytes": <size>, "sha256": <hex digest>}, ...},
       "sha256": <hex digest of the rest of the manifest>}

  ``dtype`` is the storage dtype of the tensors, not the compute dtype
  (``config.dtype``). ``files`` describes every other file of the directory
  (a training checkpoint's ``norm_stats.json`` and ``assets/`` included); readers
  check each file's size, and its sha256 unless told not to (``verify=False`` or
  ``OPENPI_SKIP_CHECKSUMS=1``, see :func:`openpi_core.checkpoints._io.should_verify`).
  The manifest's own ``sha256`` covers its other content (the config included), so a
  changed byte in it is refused too; delete that entry after editing a manifest by hand.
  Manifests written before ``files`` existed have none and load unchecked. Readers
  ignore keys they do not know. The exporters to openpi's formats write the same
  manifest beside their files with ``"naming"`` set to ``openpi-torch`` or
  ``openpi-jax``, so their output can be read back without guessing the config;
  openpi ignores it.

A ``manifest.json`` that exists but cannot be read (not JSON, truncated, fields of the
wrong type) is an error naming it, never taken for "no manifest": the config would
otherwise be guessed from the shapes and a different model served.

bfloat16 tensors are stored as safetensors ``BF16`` and loaded as
``ml_dtypes.bfloat16`` arrays; float32 round trips are bit-exact.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from openpi_core.checkpoints._io import (
    STORAGE_DTYPES,
    Progress,
    atomic_directory,
    atomic_write,
    cast,
    check_files,
    check_records,
    check_seal,
    file_records,
    read_safetensors,
    seal,
    storage_dtype,
    verification,
    write_safetensors,
)
from openpi_core.checkpoints.infer import ModelConfig, weight_schema
from openpi_core.errors import InputError, WeightsError
from openpi_core.models.config import Pi0Config, Pi0FASTConfig
from openpi_core.models.pi0_weights import check_against_schema
from openpi_core.serialization import structure, unstructure

FORMAT = "openpi-plugins"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
NAMINGS = ("canonical", "openpi-torch", "openpi-jax")


def make_manifest(config: ModelConfig, dtype: str, naming: str = "canonical") -> dict[str, Any]:
    """The manifest describing weights of ``config`` stored as ``dtype`` in ``naming``."""
    if dtype not in STORAGE_DTYPES:
        raise WeightsError(f"manifest dtype should be one of {STORAGE_DTYPES}, got {dtype!r}")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "naming": naming,
        "family": config.family,
        "config": unstructure(config),
        "dtype": dtype,
    }


def write_manifest(directory: Path, manifest: Mapping[str, Any], known: Mapping[str, Any] | None = None) -> None:
    """Write ``manifest`` into ``directory`` with ``files``: the size and sha256 of every
    other file under ``directory``, so write the manifest last. ``known``: records of
    files already hashed (from :func:`file_records`), taken as they are."""
    directory = Path(directory)
    known = dict(known or {})
    present = sorted(
        file.relative_to(directory).as_posix()
        for file in directory.rglob("*")
        if file.is_file() and file.relative_to(directory).as_posix() != MANIFEST
    )
    files = file_records(directory, [name for name in present if name not in known])
    files = {name: known[name] if name in known else files[name] for name in present}
    atomic_write(directory / MANIFEST, json.dumps(seal({**manifest, "files": files}), indent=2) + "\n")


def update_manifest_files(directory: Path) -> None:
    """Record in ``directory``'s manifest the files added to ``directory`` since it was
    written (files it already records keep their records, without hashing them again)."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise WeightsError(f"{Path(directory) / MANIFEST} is missing or not a manifest of {FORMAT!r}")
    write_manifest(directory, manifest, known=manifest.get("files"))


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest in ``directory``, or None when there is no ``manifest.json`` or it is
    another project's (a JSON object without ``"format": "openpi-plugins"``).

    Raises:
        WeightsError: ``manifest.json`` exists but cannot be read (unreadable, not JSON,
            truncated, not an object), or is ours with a field of the wrong type, a newer
            format version or an unknown naming; the message names the file.
    """
    file = Path(directory) / MANIFEST
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_bytes().decode())
    except OSError as error:
        raise WeightsError(f"cannot read the checkpoint manifest {file}: {error}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WeightsError(
            f"the checkpoint manifest {file} is not valid JSON (truncated or corrupt?): {error}"
        ) from error
    if not isinstance(manifest, dict):
        raise WeightsError(f"the checkpoint manifest {file} should hold a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        return None
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise WeightsError(f"{file} has format_version {version!r}; this openpi-core reads up to {FORMAT_VERSION}")
    check_seal(manifest, file)
    if manifest.get("naming", "canonical") not in NAMINGS:
        raise WeightsError(f"{file}: naming should be one of {NAMINGS}, got {manifest.get('naming')!r}")
    if not isinstance(manifest.get("family", ""), str):
        raise WeightsError(f"{file}: family should be a string, got {manifest['family']!r}")
    if not isinstance(manifest.get("config"), dict):
        raise WeightsError(f"{file}: config should be an object of model config fields, got {manifest.get('config')!r}")
    if manifest.get("dtype", "float32") not in STORAGE_DTYPES:
        raise WeightsError(f"{file}: dtype should be one of {STORAGE_DTYPES}, got {manifest.get('dtype')!r}")
    if "files" in manifest:
        check_records(manifest["files"], file)
    return manifest


def check_manifest_files(directory: Path, manifest: Mapping[str, Any], *, verify: bool | None = None) -> None:
    """Check the files ``manifest`` (read from ``directory``) records; nothing to do for
    manifests written before checksums were.

    Raises:
        WeightsError: naming a file that is missing, has another size or another sha256.
    """
    if "files" in manifest:
        check_files(Path(directory), manifest["files"], Path(directory) / MANIFEST, verify=verify)


def manifest_config(manifest: Mapping[str, Any], where: Path) -> ModelConfig:
    """The model config a manifest records (a :class:`Pi0FASTConfig` when its ``family``
    is ``pi0_fast``, else a :class:`Pi0Config`), checked against that ``family``."""
    config_type = Pi0FASTConfig if manifest.get("family") == "pi0_fast" else Pi0Config
    try:
        config = structure(manifest["config"], config_type)
    except (KeyError, InputError) as error:
        raise WeightsError(f"{where / MANIFEST}: no valid model config ({error})") from error
    if manifest.get("family", config.family) != config.family:
        raise WeightsError(
            f"{where / MANIFEST}: family is {manifest['family']!r} but the config describes {config.family!r}"
        )
    return config


def is_native(path: Path) -> bool:
    """Whether ``path`` is a native checkpoint directory."""
    path = Path(path)
    if not path.is_dir() or not (path / WEIGHTS).is_file():
        return False
    manifest = read_manifest(path)
    return manifest is not None and manifest.get("naming", "canonical") == "canonical"


def save_native(
    path: str | Path,
    config: ModelConfig,
    params: Mapping[str, np.ndarray],
    *,
    dtype: str | None = None,
    overwrite: bool = False,
    progress: Progress = None,
) -> Path:
    """Write a native checkpoint directory at ``path``, atomically.

    Args:
        params: canonical name -> array, checked against ``config``'s weight schema.
        dtype: storage dtype; None keeps ``bfloat16`` when every array is bfloat16 and
            stores ``float32`` otherwise (never a lossy cast unless asked for).
        overwrite: replace an existing ``path``.

    Raises:
        WeightsError: a parameter is missing, unknown or mis-shaped; ``path`` exists.
    """
    params = check_against_schema(params, weight_schema(config))
    dtype = dtype or storage_dtype(params)
    tensors = cast(params, dtype)
    with atomic_directory(Path(path), overwrite=overwrite) as scratch:
        write_safetensors(scratch / WEIGHTS, tensors, progress=progress)
        write_manifest(scratch, make_manifest(config, dtype))
    return Path(path)


def load_native(
    path: str | Path, config: ModelConfig | None = None, *, progress: Progress = None, verify: bool | None = None
) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """Read a native checkpoint directory.

    Args:
        config: overrides the manifest's config (for fields weights do not fix, such as
            ``action_horizon``); the weights are checked against whichever is used.
        verify: check the sha256 of every file the manifest records, and of the
            manifest's own content; None: yes, unless ``OPENPI_SKIP_CHECKSUMS=1`` (sizes
            are checked either way).

    Returns:
        The config and canonical name -> array, in the stored dtype.

    Raises:
        WeightsError: not a native checkpoint; its manifest is unreadable; a file is
            truncated, corrupt or changed (naming it); or its tensors do not match the
            config or the manifest's dtype.
    """
    path = Path(path)
    with verification(verify):
        manifest = read_manifest(path)
    if manifest is None or not (path / WEIGHTS).is_file():
        raise WeightsError(f"{path} is not a native checkpoint: it needs {MANIFEST} (format {FORMAT!r}) and {WEIGHTS}")
    check_manifest_files(path, manifest, verify=verify)
    config = config or manifest_config(manifest, path)
    params = check_against_schema(read_safetensors(path / WEIGHTS, progress), weight_schema(config))
    expected = manifest.get("dtype", "float32")
    for name, array in params.items():
        if np.dtype(array.dtype).name != expected:
            raise WeightsError(f"parameter {name!r} is stored as {array.dtype}, but {MANIFEST} says {expected}")
    return config, params
