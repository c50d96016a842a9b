"""The training loop, the same for every backend: it drives an
:class:`~openpi_core.training.api.AbstractTrainer` with numpy inputs.

Per step ``s`` (0-based; ``s + 1`` updates are done after it):

1. the next batch from the loader (``Observation.to_dict()`` layout plus ``actions``
   ``[B, H, A]``);
2. noise ``[B, H, A]`` and flow-matching times ``[B]`` from
   :func:`~openpi_core.models.api.draw_noise` / :func:`~openpi_core.models.api.draw_time`
   with the seed :func:`step_seed` ``(train_config.seed, s)``, so a resumed run draws
   exactly the numbers the uninterrupted run would have;
3. the learning rate :func:`~openpi_core.training.schedule.learning_rate` ``(s)``;
4. ``trainer.step(...)``, whose ``loss`` and ``grad_norm`` (and any other float it
   returns) are averaged over each ``log_interval`` and appended to
   ``<exp dir>/metrics.jsonl`` as ``{"step": s + 1, "loss": …, "grad_norm": …, "lr": …,
   "steps_per_sec": …}`` (``lr`` is the last step's), and optionally sent to TensorBoard
   and Weights & Biases;
5. a checkpoint (:mod:`openpi_core.training.checkpoint`) every ``save_interval`` updates
   and after the last one.

A resumed run continues from the latest checkpoint with the trainer's state, the
loader's position and numpy's global RNG state restored, and drops the lines of
``metrics.jsonl`` written after that checkpoint (rewriting the file atomically). A torn
last line (a power loss or a full disk mid-append) is dropped with a warning; a
corrupt line before it is an error naming the file and the line. With ``log_interval`` dividing
``save_interval``, N steps + resume + N steps then give the same metrics and state as
2N steps in one go.
"""

import contextlib
import json
import logging
import sys
import time as wallclock
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

import attrs
import numpy as np

from openpi_core.checkpoints import load_checkpoint
from openpi_core.checkpoints._io import atomic_write
from openpi_core.data.augment import augment_batch
from openpi_core.errors import InputError, OpenpiError
from openpi_core.models.api import draw_noise, draw_time
from openpi_core.models.config import Pi0Config
from openpi_core.observation import Observation
from openpi_core.plugins import get_model_spec
from openpi_core.serialization import unstructure
from openpi_core.specs import AbstractBackend
from openpi_core.training import checkpoint as ckpt
from openpi_core.training.api import AbstractTrainer
from openpi_core.training.config import TrainConfig
from openpi_core.training.lora import init_lora
from openpi_core.training.schedule import learning_rate
from openpi_core.transforms.normalize import NormStats

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TIMING_KEYS = ("steps_per_sec",)
"""Metrics that depend on the machine rather than the run; everything else is reproducible."""
AUGMENT_STREAM = 2
"""Generator stream of a step's image augmentation, apart from its noise and time draws."""
INIT_STD = 0.02
"""Standard deviation of the fresh initialization (:func:`init_params`)."""


class ResumableLoader(Protocol):
    """What the loop needs of a loader (``openpi_core.data.create_data_loader`` returns one).

    Iterating yields batches; when an iteration ends (one epoch), the loop iterates
    again. ``state_dict()`` must be JSON-serializable and, given back to
    ``load_state_dict``, make the loader continue with the batch that would have come next.
    """

    def __iter__(self) -> Iterator[Mapping[str, Any]]: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s noise and times: 32 bits hashed from ``(seed, step)``."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def init_params(model_config: Pi0Config, seed: int) -> dict[str, np.ndarray]:
    """Fresh float32 weights for every name in the model family's weight schema.

    Every tensor is N(0, 0.02²) noise (the Gemma/ViT convention), except the vision
    tower's LayerNorm scales, which multiply their input and start at 1 + that noise
    (Gemma's RMSNorm scales are offsets from 1, so noise around 0 is their identity).
    A stream per name, from ``seed``, so adding a parameter changes no other one.
    """
    schema = get_model_spec(model_config.family).weight_schema(model_config)
    params = {}
    for index, (name, shape) in enumerate(sorted(schema.items())):
        value = np.random.default_rng([seed, index]).normal(0.0, INIT_STD, shape)
        if name.startswith("vision.") and name.endswith(".scale"):
            value += 1.0
        params[name] = value.astype(np.float32)
    return params


def initial_params(
    model_config: Pi0Config, train_config: TrainConfig, base_checkpoint: str | Path | None = None
) -> dict[str, np.ndarray]:
    """The weights a new run starts from, float32, LoRA adapters included when asked for.

    Args:
        base_checkpoint: any format :func:`~openpi_core.checkpoints.load_checkpoint`
            reads (a path or URL); its weights must fit ``model_config``. None: a fresh
            :func:`init_params` from ``train_config.seed``.
    """
    if base_checkpoint is None:
        params = init_params(model_config, train_config.seed)
    else:
        _, loaded = load_checkpoint(base_checkpoint, model_config)
        params = {name: np.asarray(value).astype(np.float32) for name, value in loaded.items()}
    schema = get_model_spec(model_config.family).weight_schema(model_config)
    return params | init_lora(schema, train_config, train_config.seed)


@attrs.frozen
class TrainResult:
    """What :func:`train` did: the last update, its checkpoint and the last metrics line."""

    step: int
    exp_dir: Path
    checkpoint: Path | None
    metrics: dict[str, float] | None


def run_training(
    backend: AbstractBackend,
    loader: ResumableLoader,
    model_config: Pi0Config,
    train_config: TrainConfig,
    *,
    name: str,
    norm_stats: Mapping[str, NormStats] | None = None,
    base_checkpoint: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    model_assets: Mapping[str, str | Path] | None = None,
    progress: TextIO | None = sys.stderr,
    tensorboard: bool = False,
    wandb: bool = False,
) -> TrainResult:
    """Set up (or resume) the experiment ``<checkpoint_base_dir>/<name>/<exp_name>`` and train.

    A new run builds the trainer from :func:`initial_params` and seeds numpy's global RNG
    with ``train_config.seed`` (so transforms that draw from it are reproducible). A
    resumed run builds it from the checkpoint's ``params/`` (no base checkpoint is read)
    and restores the trainer, loader and RNG states.

    Raises:
        InputError: see :func:`~openpi_core.training.checkpoint.prepare_experiment_dir`;
            or the checkpoint to resume was trained with another model config.
    """
    exp_dir = ckpt.experiment_dir(train_config, name)
    resuming = ckpt.prepare_experiment_dir(exp_dir, resume=resume, overwrite=overwrite)
    if resuming:
        state, arrays = ckpt.load_train_checkpoint(exp_dir)
        wanted = json.loads(json.dumps(unstructure(model_config)))
        if state.model_config != wanted:
            changed = {
                key: (state.model_config.get(key), value)
                for key, value in wanted.items()
                if state.model_config.get(key) != value
            }
            raise InputError(
                f"cannot resume {exp_dir}: its step {state.step} was trained with another model config; "
                f"field: (checkpoint's, this run's): {changed}"
            )
        if state.backend != backend.name:
            logger.warning("resuming a run of backend %r with backend %r", state.backend, backend.name)
        params = {key.removeprefix("params/"): value for key, value in arrays.items() if key.startswith("params/")}
        trainer = backend.create_trainer(model_config, train_config, params)
        trainer.load_state_dict(arrays)
        loader.load_state_dict(state.loader_state)
        ckpt.set_numpy_rng_state(state.numpy_rng_state)
        start_step = state.step
        logger.info("resuming %s from step %d", exp_dir, start_step)
    else:
        params = initial_params(model_config, train_config, base_checkpoint)
        trainer = backend.create_trainer(model_config, train_config, params)
        np.random.seed(train_config.seed)
        start_step = 0
    if norm_stats is not None:
        ckpt.save_experiment_norm_stats(exp_dir, norm_stats)
    return train(
        trainer,
        loader,
        model_config,
        train_config,
        exp_dir=exp_dir,
        backend=backend.name,
        name=name,
        norm_stats=norm_stats,
        model_assets=model_assets,
        start_step=start_step,
        progress=progress,
        tensorboard=tensorboard,
        wandb=wandb,
    )


def train(
    trainer: AbstractTrainer,
    loader: ResumableLoader,
    model_config: Pi0Config,
    train_config: TrainConfig,
    *,
    exp_dir: str | Path,
    backend: str,
    name: str,
    norm_stats: Mapping[str, NormStats] | None = None,
    model_assets: Mapping[str, str | Path] | None = None,
    start_step: int = 0,
    progress: TextIO | None = sys.stderr,
    tensorboard: bool = False,
    wandb: bool = False,
) -> TrainResult:
    """Run updates ``start_step .. train_config.num_train_steps - 1`` on ``trainer``.

    ``trainer`` and ``loader`` must already be in the state of ``start_step`` (see
    :func:`run_training`). ``norm_stats`` and ``model_assets`` go into every checkpoint
    (see :func:`~openpi_core.training.checkpoint.save_train_checkpoint`). ``progress``: where the tqdm bar (loss, lr, grad norm,
    steps/s, ETA) goes; None for no bar. ``tensorboard`` / ``wandb``: also log there,
    when ``tensorboardX`` or ``tensorboard`` / ``wandb`` is installed (a warning otherwise).

    Raises:
        OpenpiError: the loss became NaN or infinite.
    """
    exp_dir = Path(exp_dir)
    total = train_config.num_train_steps
    metrics_path = exp_dir / METRICS_FILE
    _truncate_metrics(metrics_path, start_step)
    sinks = _Sinks(exp_dir, train_config, name, tensorboard=tensorboard, wandb=wandb)
    batches = _forever(loader)
    sums: dict[str, float] = {}
    count, lr, interval_start = 0, 0.0, wallclock.perf_counter()
    previous = exp_dir / str(start_step)
    result = TrainResult(start_step, exp_dir, previous if start_step in ckpt.checkpoint_steps(exp_dir) else None, None)
    with sinks, _progress_bar(progress, total, start_step) as bar:
        for step in range(start_step, total):
            batch = next(batches)
            seed = step_seed(train_config.seed, step)
            if train_config.augment:
                batch = augment_batch(batch, np.random.default_rng([seed, AUGMENT_STREAM]))
            observation = Observation.from_dict(batch)
            actions = np.asarray(batch["actions"], dtype=np.float32)
            noise = draw_noise(seed, actions.shape)
            times = draw_time(seed, actions.shape[0])
            lr = learning_rate(train_config.lr_schedule, step)
            info = {key: float(value) for key, value in trainer.step(observation, actions, noise, times, lr).items()}
            if not np.isfinite(info["loss"]):
                raise OpenpiError(
                    f"the loss is {info['loss']} at step {step}: training diverged; lower the peak learning "
                    f"rate (lr_schedule.peak_lr) or check the data and its norm stats"
                )
            for key, value in info.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            done = step + 1
            if bar is not None:
                bar.set_postfix(
                    loss=f"{info['loss']:.4f}", lr=f"{lr:.2e}", grad_norm=f"{info['grad_norm']:.3f}", refresh=False
                )
                bar.update(1)
            if done % train_config.log_interval == 0 or done == total:
                now = wallclock.perf_counter()
                line = {"step": done, **{key: value / count for key, value in sums.items()}, "lr": lr}
                line["steps_per_sec"] = count / max(now - interval_start, 1e-9)
                sinks.write(line)
                sums, count, interval_start = {}, 0, now
                result = attrs.evolve(result, metrics=line)
            if done % train_config.save_interval == 0 or done == total:
                state = ckpt.make_train_state(
                    done,
                    loader_state=loader.state_dict(),
                    train_config=train_config,
                    model_config=model_config,
                    backend=backend,
                    name=name,
                )
                path = ckpt.save_train_checkpoint(
                    exp_dir,
                    trainer,
                    state,
                    model_config,
                    norm_stats,
                    keep_period=train_config.keep_period,
                    model_assets=model_assets,
                )
                result = attrs.evolve(result, checkpoint=path)
            result = attrs.evolve(result, step=done)
    return result


def read_metrics(exp_dir: str | Path) -> list[dict[str, float]]:
    """The lines of ``<exp_dir>/metrics.jsonl``, in order (empty when there is none).

    A torn last line is left out with a warning.

    Raises:
        InputError: a line before the last is not a JSON object with a numeric ``step``.
    """
    return [entry for entry, _ in _metrics_lines(Path(exp_dir) / METRICS_FILE)]


def _metrics_lines(path: Path) -> list[tuple[dict[str, Any], str]]:
    """Each metrics record of ``path`` with its line; a last line that does not parse is
    dropped with a warning."""
    if not path.is_file():
        return []
    try:
        lines = path.read_bytes().decode(errors="replace").splitlines()
    except OSError as error:
        raise InputError(f"cannot read the metrics file {path}: {error}") from error
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    metrics = []
    for position, (number, line) in enumerate(numbered):
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or type(entry.get("step")) not in (int, float):
                raise ValueError("not a JSON object with a numeric 'step'")
        except ValueError as error:
            if position == len(numbered) - 1:
                logger.warning(
                    "%s: dropping its last line %d, which is incomplete (a write was cut short): %.80r",
                    path,
                    number,
                    line,
                )
                break
            raise InputError(
                f"{path} line {number} is not a metrics record (a JSON object with a 'step'): {line[:80]!r}; "
                f"only a torn last line can be dropped, so fix or delete that line"
            ) from error
        metrics.append((entry, line))
    return metrics


def _forever(loader: ResumableLoader) -> Iterator[Mapping[str, Any]]:
    """The loader's batches, epoch after epoch.

    One empty iteration is allowed: a loader restored at the end of an epoch may finish
    that epoch without a batch before starting the next.
    """
    empty_in_a_row = 0
    while empty_in_a_row < 2:
        empty_in_a_row += 1
        for batch in loader:
            empty_in_a_row = 0
            yield batch
    raise InputError("the data loader yields no batch: is the dataset smaller than one batch (with drop_last)?")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines after ``step`` (written by a run that stopped after its last checkpoint)
    and a torn last line, rewriting the file atomically."""
    if not path.is_file():
        return
    kept = [line for entry, line in _metrics_lines(path) if entry["step"] <= step]
    atomic_write(path, "".join(f"{line}\n" for line in kept))


@contextlib.contextmanager
def _progress_bar(file: TextIO | None, total: int, initial: int) -> Iterator[Any]:
    if file is None:
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        logger.warning("no progress bar: tqdm is not installed (pip install tqdm)")
        yield None
        return
    with tqdm(total=total, initial=initial, unit="steps", file=file, dynamic_ncols=True, desc="train") as bar:
        yield bar


class _Sinks:
    """Where metrics lines go: ``metrics.jsonl`` always, TensorBoard and W&B when asked for and installed."""

    def __init__(self, exp_dir: Path, train_config: TrainConfig, name: str, *, tensorboard: bool, wandb: bool) -> None:
        self._path = exp_dir / METRICS_FILE
        self._tensorboard = _tensorboard_writer(exp_dir / "tensorboard") if tensorboard else None
        self._wandb = _wandb_run(exp_dir, train_config, name) if wandb else None

    def __enter__(self) -> "_Sinks":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()

    def write(self, line: Mapping[str, float]) -> None:
        with self._path.open("a") as file:
            file.write(json.dumps(line) + "\n")
        step = int(line["step"])
        scalars = {key: value for key, value in line.items() if key != "step"}
        if self._tensorboard is not None:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(f"train/{key}", value, step)
            self._tensorboard.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("not logging to TensorBoard: install tensorboardX, or torch and tensorboard")
            return None
    return SummaryWriter(log_dir=str(log_dir))


WANDB_ID_FILE = "wandb_id.txt"
"""Holds the W&B run id, so a resumed run logs into the same W&B run."""


def _wandb_run(exp_dir: Path, train_config: TrainConfig, name: str) -> Any:
    try:
        import wandb
    except ImportError:
        logger.warning("not logging to Weights & Biases: pip install wandb")
        return None
    id_file = exp_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    run = wandb.init(
        project="openpi",
        group=name,
        name=train_config.exp_name,
        id=run_id,
        resume="allow",
        config=unstructure(train_config),
        dir=str(exp_dir),
    )
    id_file.write_text(run.id)
    return run
