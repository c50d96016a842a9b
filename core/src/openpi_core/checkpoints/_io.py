"""File helpers shared by the checkpoint formats: dtypes, safetensors, atomic directories.

bfloat16: numpy has no bfloat16 of its own. Weights stored as bfloat16 are held as
``ml_dtypes.bfloat16`` arrays, the numpy extension type that jax, tensorstore and
safetensors share. ``ml_dtypes`` is imported only when a bfloat16 tensor is met,
and a clear error says how to install it when it is missing. Float32 weights
never need it.
"""

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from openpi_core.errors import WeightsError

Progress = Callable[[str], None] | None
"""Called with a tensor's name once that tensor has been read, converted or written."""

STORAGE_DTYPES = ("float32", "bfloat16")


def bfloat16() -> np.dtype:
    """numpy's ``bfloat16`` dtype from ``ml_dtypes``, imported on first use."""
    try:
        import ml_dtypes
    except ImportError as error:
        raise WeightsError("bfloat16 weights need the ml_dtypes package: pip install ml-dtypes") from error
    return np.dtype(ml_dtypes.bfloat16)


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a storage dtype name (``float32`` or ``bfloat16``)."""
    if name not in STORAGE_DTYPES:
        raise WeightsError(f"storage dtype should be one of {STORAGE_DTYPES}, got {name!r}")
    return bfloat16() if name == "bfloat16" else np.dtype(np.float32)


def storage_dtype(params: Mapping[str, np.ndarray]) -> str:
    """``bfloat16`` when every array is bfloat16, else ``float32`` (the lossless choice)."""
    dtypes = {np.dtype(array.dtype).name for array in params.values()}
    return "bfloat16" if dtypes == {"bfloat16"} else "float32"


def cast(params: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """Every array as ``dtype``; arrays already of that dtype are passed through, not copied."""
    target = numpy_dtype(dtype)
    return {name: np.asarray(array).astype(target, copy=False) for name, array in params.items()}


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names of a safetensors file, from its header alone."""
    with safe_open(str(path), "np") as file:
        return list(file.keys())


def read_safetensors(path: Path, progress: Progress = None) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, in file order; bfloat16 ones as ``ml_dtypes.bfloat16``."""
    with safe_open(str(path), "np") as file:
        names = list(file.keys())
        if any(file.get_slice(name).get_dtype() == "BF16" for name in names):
            bfloat16()  # registers the dtype name that safetensors asks numpy for
        params = {}
        for name in names:
            params[name] = file.get_tensor(name)
            if progress:
                progress(name)
    return params


def write_safetensors(
    path: Path, params: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None, progress: Progress = None
) -> None:
    """Write ``params`` (made C-contiguous) to one safetensors file."""
    tensors = {}
    for name, array in params.items():
        tensors[name] = np.ascontiguousarray(array)
        if progress:
            progress(name)
    save_file(tensors, str(path), metadata=metadata)


def find_safetensors(path: Path) -> Path | None:
    """``path`` if it is a ``.safetensors`` file, ``path/model.safetensors`` if that exists, else None."""
    if path.is_file() and path.suffix == ".safetensors":
        return path
    if path.is_dir() and (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    return None


@contextlib.contextmanager
def atomic_directory(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty scratch directory next to ``path``; on success it becomes ``path``.

    Readers never see a half-written checkpoint: the scratch directory is renamed
    into place only after the ``with`` body finished, and removed if it raised. An
    existing ``path`` is replaced only with ``overwrite=True`` (it is moved aside
    first and deleted after the rename).

    Raises:
        WeightsError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise WeightsError(f"{path} already exists; pass overwrite=True (pi convert --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield scratch
        if path.exists():
            aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
            os.replace(path, aside)
            os.replace(scratch, path)
            if aside.is_dir():
                shutil.rmtree(aside)
            else:
                aside.unlink()
        else:
            os.replace(scratch, path)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
