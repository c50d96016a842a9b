"""openpi's Orbax ``params`` checkpoints, read with tensorstore and written with orbax-checkpoint.

Layout (as published under ``gs://openpi-assets/checkpoints/<name>/params`` and as
the ``params/`` item of an openpi training step directory): an Orbax PyTree
checkpoint whose root is ``{"params": <pure dict>}``. Each array is a zarr (v2, or
v3 with ``use_zarr3``) array whose key is its tree path joined with ``.``
(``params.PaliGemma.llm.embedder.input_embedding``), inside one OCDBT key-value
store (``manifest.ocdbt``) or, in old checkpoints, one directory per array.

Reading opens that store directly with tensorstore, so it needs neither jax nor
orbax (``pip install 'openpi-core[orbax]'``). Writing goes through orbax-checkpoint,
which imports jax; it is imported inside :func:`write_orbax_params` only.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from openpi_core.checkpoints._io import Progress
from openpi_core.checkpoints.openpi_jax import nest, strip_value_suffix
from openpi_core.errors import WeightsError

ROOT = "params"
"""openpi stores the params tree under this single top-level key."""
MARKERS = ("_METADATA", "manifest.ocdbt", "_CHECKPOINT_METADATA")
"""Files of which at least one marks a directory as an Orbax checkpoint."""
INSTALL_HINT = "pip install 'openpi-core[orbax]'"


def find_params_dir(path: Path) -> Path | None:
    """The Orbax params checkpoint at ``path``: ``path`` itself or its ``params/`` (a step directory)."""
    for candidate in (Path(path), Path(path) / ROOT):
        if candidate.is_dir() and any((candidate / marker).exists() for marker in MARKERS):
            return candidate
    return None


def _tensorstore() -> Any:
    try:
        import tensorstore
    except ImportError as error:
        raise WeightsError(f"reading Orbax checkpoints needs tensorstore: {INSTALL_HINT}") from error
    return tensorstore


def _kvstore(params_dir: Path, key: str = "") -> dict[str, Any]:
    """tensorstore kvstore spec of ``key`` inside the checkpoint's store."""
    root = params_dir.resolve()
    if (root / "manifest.ocdbt").is_file():
        return {"driver": "ocdbt", "base": root.as_uri() + "/", "path": key}
    return {"driver": "file", "path": f"{root}/{key}"}


def read_orbax_params(path: str | Path, progress: Progress = None) -> dict[str, np.ndarray]:
    """Every array of an openpi Orbax params checkpoint, by openpi JAX name (``/``-joined).

    The ``params`` root is dropped, and so is a ``value`` leaf that every path ends
    in (``nnx.State`` training checkpoints). Tree keys must not contain ``.``, which
    Orbax uses to join them (openpi's never do). Arrays keep their stored dtype.

    Raises:
        WeightsError: ``path`` is not an Orbax checkpoint, holds no arrays, or
            tensorstore is not installed.
    """
    params_dir = find_params_dir(Path(path))
    if params_dir is None:
        raise WeightsError(f"{path} is not an Orbax checkpoint: none of {MARKERS} in it or in its {ROOT}/")
    ts = _tensorstore()
    context = ts.Context()
    drivers = {}
    for key in ts.KvStore.open(_kvstore(params_dir), context=context).result().list().result():
        array_key, _, leaf = key.decode().rpartition("/")
        if leaf in (".zarray", "zarr.json"):
            drivers[array_key] = "zarr" if leaf == ".zarray" else "zarr3"
    if not drivers:
        raise WeightsError(f"the Orbax checkpoint {params_dir} holds no arrays")
    opened = {
        key: ts.open({"driver": driver, "kvstore": _kvstore(params_dir, key + "/")}, context=context, open=True)
        for key, driver in sorted(drivers.items())
    }
    reads = {key: future.result().read() for key, future in opened.items()}
    names = {key: key.split(".") for key in reads}
    if all(parts[0] == ROOT and len(parts) > 1 for parts in names.values()):
        names = {key: parts[1:] for key, parts in names.items()}
    params = {}
    for key, read in reads.items():
        name = "/".join(names[key])
        params[name] = np.asarray(read.result())
        if progress:
            progress(name)
    return strip_value_suffix(params)


def write_orbax_params(path: str | Path, params: Mapping[str, np.ndarray], progress: Progress = None) -> None:
    """Save openpi-JAX-named arrays as an Orbax PyTree checkpoint of ``{"params": tree}`` at ``path``.

    openpi's ``restore_params`` (and :func:`read_orbax_params`) read it back. Arrays
    are saved as numpy arrays in their own dtype. ``path`` must not exist yet.

    Raises:
        WeightsError: orbax-checkpoint is not installed.
    """
    try:
        import orbax.checkpoint as ocp
    except ImportError as error:
        raise WeightsError("writing Orbax checkpoints needs orbax-checkpoint: pip install orbax-checkpoint") from error
    tree = {ROOT: nest({name: np.asarray(array) for name, array in params.items()})}
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(Path(path).absolute(), tree)
    if progress:
        for name in params:
            progress(name)
