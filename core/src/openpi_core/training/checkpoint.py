"""Training checkpoints: one directory per saved step, written atomically.

Layout of an experiment (``<checkpoint_base_dir>/<config or model name>/<exp_name>/``)::

    metrics.jsonl                 # one JSON line per log interval (see openpi_core.training.loop)
    assets/norm_stats.json        # the norm stats the run normalizes with
    <step>/                       # ``step`` = optimizer updates done, e.g. 1000/
        model/                    # a native checkpoint (openpi_core.checkpoints.native) of the
            model.safetensors     #   inference weights (the EMA weights when EMA is on, LoRA merged)
            manifest.json
            norm_stats.json       # where openpi_core.policy looks for a native checkpoint's stats
            assets/tokenizer.model  # when the run used its own prompt tokenizer
        train_state.safetensors   # the trainer's state_dict(): params/, opt/, ema/
        train_state.json          # step, loader state, numpy RNG state, configs, backend,
                                  #   the size and sha256 of train_state.safetensors, its own sha256

``<step>/model`` is a complete checkpoint on its own, stats and tokenizer included: ``pi run serve --checkpoint
<step>/model`` and ``backend.load_model(<step>/model)`` read it directly.

A step directory is written under a hidden temporary name next to it, fsynced, and
renamed into place only once every file is complete, so a crash or power loss
mid-write never leaves a half checkpoint where :func:`latest_step` looks; the previous
checkpoint is pruned only after the new one is in place.

Integrity: ``model/manifest.json`` records the size and sha256 of every file of
``model/`` (norm stats and assets included) and ``train_state.json`` those of
``train_state.safetensors``; loading checks them (the sha256 unless ``verify=False`` or
``OPENPI_SKIP_CHECKSUMS=1``) and names the file that is missing, truncated or changed.
Checkpoints written before these records load unchecked.
"""

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from openpi_core.checkpoints._io import (
    SEAL_KEY,
    atomic_directory,
    check_files,
    check_records,
    check_seal,
    file_records,
    read_safetensors,
    safetensors_metadata,
    seal,
    write_safetensors,
)
from openpi_core.checkpoints.native import save_native, update_manifest_files
from openpi_core.errors import InputError
from openpi_core.models.config import Pi0Config
from openpi_core.serialization import unstructure
from openpi_core.training.api import AbstractTrainer
from openpi_core.training.config import TrainConfig
from openpi_core.transforms.normalize import FILE_NAME as NORM_STATS_FILE
from openpi_core.transforms.normalize import NormStats, save_norm_stats

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
TRAIN_STATE_WEIGHTS = "train_state.safetensors"
TRAIN_STATE_JSON = "train_state.json"
ASSETS_DIR = "assets"
TRAIN_STATE_VERSION = 1
FILES_KEY = "files"
"""Key of ``train_state.json`` recording ``{file: {"bytes": size, "sha256": hex}}`` of the step's arrays."""


def experiment_dir(train_config: TrainConfig, name: str) -> Path:
    """``<checkpoint_base_dir>/<name>/<exp_name>``; ``name`` is the preset's (or model family's) name."""
    return Path(train_config.checkpoint_base_dir) / name / train_config.exp_name


def prepare_experiment_dir(path: str | Path, *, resume: bool, overwrite: bool) -> bool:
    """Make ``path`` ready for a run and say whether the run resumes.

    * ``overwrite``: an existing ``path`` is deleted; the run starts at step 0.
    * ``resume``: the run continues from :func:`latest_step` of ``path``; when ``path``
      holds no checkpoint yet, it starts at step 0 (so the same command can be
      re-issued after a preemption). Leftover temporary directories of an interrupted
      save are removed.
    * neither: ``path`` must not exist.

    Returns:
        True when a checkpoint exists to resume from.

    Raises:
        InputError: both flags are given, or neither is and ``path`` exists.
    """
    path = Path(path)
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other: pass at most one")
    if path.exists() and overwrite:
        logger.info("deleting the existing experiment directory %s (--overwrite)", path)
        shutil.rmtree(path)
    elif path.exists() and not resume:
        raise InputError(
            f"the experiment directory {path} already exists; pass --resume to continue from its latest "
            f"checkpoint or --overwrite to delete it and start again"
        )
    path.mkdir(parents=True, exist_ok=True)
    for leftover in path.glob(".*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)
    return resume and latest_step(path) is not None


def checkpoint_steps(path: str | Path) -> list[int]:
    """The steps saved in experiment directory ``path``, ascending (empty if none or no directory)."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in path.iterdir()
        if child.name.isdigit() and child.is_dir() and (child / TRAIN_STATE_JSON).is_file()
    )


def latest_step(path: str | Path) -> int | None:
    """The newest complete checkpoint's step in experiment directory ``path``, or None."""
    steps = checkpoint_steps(path)
    return steps[-1] if steps else None


@attrs.frozen
class TrainState:
    """What ``train_state.json`` records besides the trainer's arrays.

    Attributes:
        step: optimizer updates done when the checkpoint was taken.
        loader_state: the data loader's ``state_dict()`` (JSON-serializable).
        numpy_rng_state: ``numpy.random.get_state(legacy=False)`` with the key as a list.
        train_config: the unstructured :class:`TrainConfig`.
        model_config: the unstructured :class:`Pi0Config`.
        family: the model family (``pi0``, ``pi05``).
        backend: the backend that trained (``jax``, ``torch``).
        name: the preset's (or model family's) name.
    """

    step: int
    loader_state: Any
    numpy_rng_state: dict[str, Any]
    train_config: dict[str, Any]
    model_config: dict[str, Any]
    family: str
    backend: str
    name: str


def numpy_rng_state() -> dict[str, Any]:
    """numpy's global (legacy) RNG state as JSON-serializable data."""
    state = np.random.get_state(legacy=False)
    state["state"] = {"key": state["state"]["key"].tolist(), "pos": int(state["state"]["pos"])}
    return state


def set_numpy_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`numpy_rng_state` returned."""
    inner = state["state"]
    np.random.set_state(
        {**state, "state": {"key": np.asarray(inner["key"], dtype=np.uint32), "pos": int(inner["pos"])}}
    )


def make_train_state(
    step: int,
    *,
    loader_state: Any,
    train_config: TrainConfig,
    model_config: Pi0Config,
    backend: str,
    name: str,
) -> TrainState:
    """A :class:`TrainState` of the current process (numpy's global RNG included)."""
    return TrainState(
        step=step,
        loader_state=loader_state,
        numpy_rng_state=numpy_rng_state(),
        train_config=unstructure(train_config),
        model_config=unstructure(model_config),
        family=model_config.family,
        backend=backend,
        name=name,
    )


def save_train_checkpoint(
    exp_dir: str | Path,
    trainer: AbstractTrainer,
    state: TrainState,
    model_config: Pi0Config,
    norm_stats: Mapping[str, NormStats] | None,
    *,
    keep_period: int | None,
    model_assets: Mapping[str, str | Path] | None = None,
) -> Path:
    """Write ``<exp_dir>/<state.step>/`` atomically, then prune older steps.

    ``model_assets``: path inside ``model/`` -> file to copy there (e.g.
    ``{"assets/tokenizer.model": <the run's tokenizer>}``).
    Pruning keeps the new checkpoint and every older one whose step is a multiple of
    ``keep_period`` (None: keeps only the new one), as openpi does.

    Returns:
        The step directory.
    """
    exp_dir = Path(exp_dir)
    step_dir = exp_dir / str(state.step)
    with atomic_directory(step_dir, overwrite=True) as scratch:
        save_native(scratch / MODEL_DIR, model_config, trainer.inference_params())
        if norm_stats is not None:
            save_norm_stats(norm_stats, scratch / MODEL_DIR)
        for relative, source in (model_assets or {}).items():
            target = scratch / MODEL_DIR / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        if norm_stats is not None or model_assets:
            update_manifest_files(scratch / MODEL_DIR)
        _write_arrays(scratch / TRAIN_STATE_WEIGHTS, trainer.state_dict())
        document = {
            "version": TRAIN_STATE_VERSION,
            **attrs.asdict(state, recurse=False),
            FILES_KEY: file_records(scratch, [TRAIN_STATE_WEIGHTS]),
        }
        document = seal(json.loads(json.dumps(document, default=_json_default)))
        (scratch / TRAIN_STATE_JSON).write_text(json.dumps(document, indent=2) + "\n")
    prune_checkpoints(exp_dir, keep_period)
    return step_dir


def prune_checkpoints(exp_dir: str | Path, keep_period: int | None) -> list[int]:
    """Delete every checkpoint but the newest and those at multiples of ``keep_period``.

    Returns:
        The deleted steps.
    """
    steps = checkpoint_steps(exp_dir)
    doomed = [step for step in steps[:-1] if keep_period is None or step % keep_period != 0]
    for step in doomed:
        # Renamed out of sight first, so a crash mid-delete leaves no half checkpoint behind.
        aside = Path(exp_dir) / f".{step}.deleting.partial"
        os.replace(Path(exp_dir) / str(step), aside)
        shutil.rmtree(aside)
    return doomed


def load_train_checkpoint(
    exp_dir: str | Path, step: int | None = None, *, verify: bool | None = None
) -> tuple[TrainState, dict[str, np.ndarray]]:
    """Read ``<exp_dir>/<step>/`` (default: the latest): its :class:`TrainState` and the
    trainer state arrays.

    Args:
        verify: check the sha256 of ``train_state.safetensors`` against the one
            ``train_state.json`` records (its size is checked either way); None: yes,
            unless ``OPENPI_SKIP_CHECKSUMS=1``.

    Raises:
        InputError: no such checkpoint; its ``train_state.json`` is unreadable or of a
            newer version; or ``train_state.safetensors`` is truncated, corrupt or changed.
            The message names the file, and the earlier step to fall back on if there is one.
    """
    exp_dir = Path(exp_dir)
    step = latest_step(exp_dir) if step is None else step
    if step is None:
        raise InputError(f"{exp_dir} holds no training checkpoint (no <step>/{TRAIN_STATE_JSON})")
    step_dir = exp_dir / str(step)
    try:
        return _load_step(step_dir, verify)
    except InputError as error:
        earlier = [s for s in checkpoint_steps(exp_dir) if s < step]
        if not earlier:
            raise
        raise type(error)(
            f"{error}; to resume from the previous checkpoint (step {earlier[-1]}) instead, delete {step_dir}"
        ) from error


def _load_step(step_dir: Path, verify: bool | None) -> tuple[TrainState, dict[str, np.ndarray]]:
    file = step_dir / TRAIN_STATE_JSON
    try:
        document = json.loads(file.read_bytes().decode())
    except OSError as error:
        raise InputError(f"cannot read the training state {file}: {error}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"the training state {file} is not valid JSON (truncated or corrupt?): {error}") from error
    if not isinstance(document, dict):
        raise InputError(f"the training state {file} should hold a JSON object, got {type(document).__name__}")
    version = document.get("version")
    if version != TRAIN_STATE_VERSION:
        raise InputError(f"{file} has version {version!r}; this openpi-core reads version {TRAIN_STATE_VERSION}")
    check_seal(document, file, verify=verify, error=InputError)
    records = check_records(document.pop(FILES_KEY, {}), file, InputError)
    document.pop("version")
    document.pop(SEAL_KEY, None)
    try:
        state = TrainState(**document)
    except TypeError as error:
        raise InputError(f"{file} does not hold a valid training state: {error}") from error
    check_files(step_dir, records, file, verify=verify, error=InputError)
    return state, _read_arrays(step_dir / TRAIN_STATE_WEIGHTS)


def save_experiment_norm_stats(exp_dir: str | Path, norm_stats: Mapping[str, NormStats]) -> Path:
    """Write the run's norm stats to ``<exp_dir>/assets/norm_stats.json``."""
    return save_norm_stats(norm_stats, Path(exp_dir) / ASSETS_DIR)


def experiment_norm_stats_path(exp_dir: str | Path) -> Path:
    """Where :func:`save_experiment_norm_stats` writes."""
    return Path(exp_dir) / ASSETS_DIR / NORM_STATS_FILE


SCALARS_METADATA = "scalars"
"""safetensors metadata key listing the 0-d arrays, which reading gives back as ``[1]``."""


def _write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    scalars = sorted(name for name, value in arrays.items() if np.ndim(value) == 0)
    write_safetensors(
        path, {name: np.asarray(value) for name, value in arrays.items()}, {SCALARS_METADATA: json.dumps(scalars)}
    )


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"the training state arrays {path} are missing")
    try:
        scalars = json.loads(safetensors_metadata(path).get(SCALARS_METADATA, "[]"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: the {SCALARS_METADATA!r} metadata is not valid JSON: {error}") from error
    arrays = read_safetensors(path)
    missing = [name for name in scalars if name not in arrays]
    if missing:
        raise InputError(f"{path}: the {SCALARS_METADATA!r} metadata names arrays it lacks: {missing}")
    return arrays | {name: arrays[name].reshape(()) for name in scalars}


def _json_default(value: Any) -> Any:
    """Loader states may hold numpy scalars and arrays; JSON gets their Python values."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} in the training state is not JSON-serializable")
