"""File helpers shared by the checkpoint formats: dtypes, safetensors, atomic writes, checksums.

bfloat16: numpy has no bfloat16 of its own. Weights stored as bfloat16 are held as
``ml_dtypes.bfloat16`` arrays, the numpy extension type that jax, tensorstore and
safetensors share. ``ml_dtypes`` is imported only when a bfloat16 tensor is met,
and a clear error says how to install it when it is missing. Float32 weights
never need it.

Durability: :func:`atomic_directory` and :func:`atomic_write` fsync what they wrote
(every file, then the directories) before the rename that publishes it, and the
parent directory after it, so a power loss leaves either the old or the new
version, never a torn one.

Integrity: writers record each file's size and sha256 (:func:`file_records`) and
readers check them (:func:`check_files`); the JSON document holding the records carries
the sha256 of its own content (:func:`seal`, :func:`check_seal`). Sizes are always compared (one ``stat``);
hashing reads every byte, which a caller can skip with ``verify=False`` or, for every
load in the process, the environment variable ``OPENPI_SKIP_CHECKSUMS=1``
(:func:`should_verify`).
"""

import contextlib
import contextvars
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
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


@contextlib.contextmanager
def _readable_safetensors(path: Path) -> Iterator[None]:
    """Turn the errors of reading a truncated or corrupt safetensors file into a
    :class:`WeightsError` that names the file."""
    try:
        yield
    except SafetensorError as error:
        raise WeightsError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from error
    except OSError as error:
        raise WeightsError(f"cannot read {path}: {error}") from error


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names of a safetensors file, from its header alone.

    Raises:
        WeightsError: the file is unreadable, truncated or not safetensors (naming it).
    """
    with _readable_safetensors(path), safe_open(str(path), "np") as file:
        return list(file.keys())


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (empty when it has none).

    Raises:
        WeightsError: the file is unreadable, truncated or not safetensors (naming it).
    """
    with _readable_safetensors(path), safe_open(str(path), "np") as file:
        return dict(file.metadata() or {})


def read_safetensors(path: Path, progress: Progress = None) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, in file order; bfloat16 ones as ``ml_dtypes.bfloat16``.

    Raises:
        WeightsError: the file is unreadable, truncated or not safetensors (naming it).
    """
    with _readable_safetensors(path), safe_open(str(path), "np") as file:
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
        fsync_tree(scratch)
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
        fsync_directory(path.parent)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (files created, renamed or removed in it) durable.

    A no-op where directories cannot be opened for fsync (Windows).
    """
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def fsync_tree(path: Path) -> None:
    """fsync every file under ``path``, then every directory from the deepest up to ``path``."""
    directories = []
    for root, _, files in os.walk(path):
        directories.append(Path(root))
        for name in files:
            file = Path(root) / name
            if file.is_symlink():
                continue
            with file.open("rb") as handle:
                os.fsync(handle.fileno())
    for directory in reversed(directories):
        fsync_directory(directory)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Replace the file ``path`` with ``data`` (text is UTF-8) in one step.

    The data goes to a temporary file next to ``path``, is fsynced, and is renamed over
    ``path``; the directory is fsynced after. A reader, or the file after a crash or a
    power loss, holds either the old content or the new, never a mix or a torn tail.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    descriptor, scratch = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(scratch, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        raise
    fsync_directory(path.parent)
    return path


SKIP_CHECKSUMS_ENV = "OPENPI_SKIP_CHECKSUMS"
"""Set to ``1`` to skip the sha256 checks of checkpoint and dataset files (sizes are still checked)."""

_VERIFY: contextvars.ContextVar[bool | None] = contextvars.ContextVar("openpi_verify_checksums", default=None)


def should_verify(verify: bool | None = None) -> bool:
    """Whether to check checksums: ``verify`` when given, else what an enclosing
    :func:`verification` says, else True unless ``OPENPI_SKIP_CHECKSUMS`` is set (and not ``0``)."""
    if verify is not None:
        return verify
    scoped = _VERIFY.get()
    if scoped is not None:
        return scoped
    return os.environ.get(SKIP_CHECKSUMS_ENV, "").strip().lower() in ("", "0", "false", "no")


@contextlib.contextmanager
def verification(verify: bool | None) -> Iterator[None]:
    """Within the block, :func:`should_verify` ``()`` answers ``verify`` (None: leaves it as it is).

    Lets :func:`openpi_core.checkpoints.load_checkpoint` pass its ``verify`` through a
    checkpoint format's ``read`` without changing that plugin interface.
    """
    if verify is None:
        yield
        return
    token = _VERIFY.set(verify)
    try:
        yield
    finally:
        _VERIFY.reset(token)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_records(directory: Path, names: Iterable[str]) -> dict[str, Any]:
    """``{name: {"bytes": size, "sha256": hex}}`` of the files ``names`` (relative posix paths) in ``directory``."""
    directory = Path(directory)
    return {
        name: {"bytes": (directory / name).stat().st_size, "sha256": sha256_file(directory / name)} for name in names
    }


def check_records(records: Any, where: Path, error: type[Exception] = WeightsError) -> dict[str, dict[str, Any]]:
    """``records`` (a ``files`` entry read from ``where``) checked for form: relative path inside
    the directory -> ``{"bytes", "sha256"}``.

    Raises:
        ``error``: naming ``where``, when an entry is not of that form.
    """
    if not isinstance(records, dict):
        raise error(f"{where}: 'files' should be an object of path -> {{bytes, sha256}}, got {type(records).__name__}")
    for name, record in records.items():
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("bytes"), int)
            or not isinstance(record.get("sha256"), str)
        ):
            raise error(f"{where}: 'files' entry {name!r} should be {{'bytes': int, 'sha256': str}}, got {record!r}")
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
            raise error(f"{where}: 'files' entry {name!r} should be a path inside the checkpoint directory")
    return records


SEAL_KEY = "sha256"
"""Key of a JSON document's own digest (:func:`seal`)."""


def _content_digest(document: Mapping[str, Any]) -> str:
    body = {key: value for key, value in document.items() if key != SEAL_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` (JSON data) with ``"sha256"``: the digest of the rest of its content, so
    that changed bytes in the file that holds it can be told (:func:`check_seal`)."""
    return {**{key: value for key, value in document.items() if key != SEAL_KEY}, SEAL_KEY: _content_digest(document)}


def check_seal(
    document: Mapping[str, Any], where: Path, *, verify: bool | None = None, error: type[Exception] = WeightsError
) -> None:
    """Check the ``"sha256"`` that :func:`seal` added to ``document`` (read from ``where``), if it has one.

    Raises:
        ``error``: naming ``where``, when its content no longer matches.
    """
    if SEAL_KEY not in document or not should_verify(verify):
        return
    if document[SEAL_KEY] != _content_digest(document):
        raise error(
            f"{where} has changed since it was written: its content does not match the sha256 it records "
            f"(the file is corrupt; if it was edited on purpose, delete its {SEAL_KEY!r} entry)"
        )


def check_files(
    directory: Path,
    records: Mapping[str, Mapping[str, Any]],
    where: Path,
    *,
    verify: bool | None = None,
    error: type[Exception] = WeightsError,
) -> None:
    """Check that the files ``records`` (from :func:`file_records`, stored in ``where``) describes are intact.

    Every file must exist with its recorded size; with :func:`should_verify` ``(verify)``,
    its sha256 must match too.

    Raises:
        ``error``: naming the file that is missing, has another size, or changed.
    """
    directory = Path(directory)
    hashing = should_verify(verify)
    for name, record in records.items():
        file = directory / name
        if not file.is_file():
            raise error(f"{file} is missing, but {where} lists it")
        size = file.stat().st_size
        if size != record["bytes"]:
            raise error(
                f"{file} is {size} bytes, but {where} records {record['bytes']}: the file is truncated or "
                f"was changed after it was written"
            )
        if hashing:
            digest = sha256_file(file)
            if digest != record["sha256"]:
                raise error(
                    f"{file} has changed since it was written: its sha256 is {digest}, {where} records "
                    f"{record['sha256']} (the file is corrupt; set {SKIP_CHECKSUMS_ENV}=1 only to skip this check "
                    f"for speed, not to load a damaged file)"
                )
