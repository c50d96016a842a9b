"""``pi run train``: fine-tune (or train) a π0, π0.5 or π0-FAST policy on a LeRobot dataset.

The command is glue: it assembles the configs, the data pipeline
(:mod:`openpi_core.training.presets`), the norm stats and the loader, then hands over to
:func:`openpi_core.training.loop.run_training`, which drives the backend's trainer and
writes checkpoints (:mod:`openpi_core.training.checkpoint`).
"""

import contextlib
import json
import logging
import shutil
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

logger = logging.getLogger(__name__)


def _parse_value(text: str) -> Any:
    """``--set`` values are JSON (numbers, true/false, null, lists, objects) or else plain strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict[str, Any], assignments: tuple[str, ...]) -> dict[str, Any]:
    """``data`` with each ``a.b.c=value`` of ``assignments`` set (nested dicts created as needed)."""
    from openpi_core.errors import InputError

    data = json.loads(json.dumps(data))
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects key=value (e.g. lr_schedule.peak_lr=1e-4), got {assignment!r}")
        *parents, leaf = key.split(".")
        node = data
        for parent in parents:
            child = node.get(parent)
            if child is None:
                child = node[parent] = {}
            if not isinstance(child, dict):
                raise InputError(f"--set {key}: {parent!r} is {child!r}, not a table of fields")
            node = child
        node[leaf] = _parse_value(value)
    return data


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML (``.toml``) or JSON file of config fields."""
    from openpi_core.errors import InputError

    try:
        text = path.read_text()
        return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"cannot read the config file {path}: {error}") from error


def read_model_config(path: Path) -> Any:
    """The model config in a JSON or TOML file: the fields of the config class of its
    ``family`` key (when absent, a :class:`~openpi_core.models.config.Pi0Config`, whose
    ``pi05`` field tells π0 from π0.5).

    Raises:
        InputError: the file is unreadable, names an unknown family, or its fields do not fit.
    """
    from openpi_core.errors import InputError
    from openpi_core.models.config import Pi0Config
    from openpi_core.plugins import get_model_spec
    from openpi_core.serialization import structure

    fields = read_config_file(path)
    family = fields.pop("family", None)
    config = structure(fields, Pi0Config if family is None else get_model_spec(family).config_type)
    if family is not None and config.family != family:
        raise InputError(f"{path} says family {family!r}, but its fields describe a {config.family!r} model")
    return config


def missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    return [folder for folder in (path, *path.parents) if not folder.exists()]


@contextlib.contextmanager
def removed_on_failure(exp_dir: Path, created: list[Path]) -> Iterator[None]:
    """Remove what a run made when it fails before its first checkpoint.

    ``created`` lists the folders the run made, deepest first: ``exp_dir`` leads it when
    the run created it (or replaced it under ``--overwrite``). On failure ``exp_dir``
    is removed only then, and the folders above it only when they are then empty. A
    folder that existed before (``--resume``) is never touched, and neither are
    checkpoints: a run that saved one keeps it, to be continued with ``--resume``.
    """
    from openpi_core.training import checkpoint as ckpt

    try:
        yield
    except BaseException:
        if created and created[0] == exp_dir and exp_dir.is_dir():
            if ckpt.checkpoint_steps(exp_dir):
                logger.warning("the run failed; its checkpoints stay in %s (continue with --resume)", exp_dir)
            else:
                shutil.rmtree(exp_dir, ignore_errors=True)
                for parent in created[1:]:
                    with contextlib.suppress(OSError):  # not empty: something else lives there now
                        parent.rmdir()
        raise


def model_assets(tokenizer: str | Path | None, fast_tokenizer: str | None) -> dict[str, Path]:
    """Files the run's checkpoints ship (path inside ``model/`` -> source): its own prompt
    tokenizer, and the files of a local π0-FAST action tokenizer."""
    from openpi_core.fast.action_tokenizer import BPE_FILE, PROCESSOR_CONFIG
    from openpi_core.policy import FAST_TOKENIZER_ASSET, TOKENIZER_ASSET

    assets = {TOKENIZER_ASSET: Path(tokenizer)} if tokenizer else {}
    if fast_tokenizer is not None and Path(fast_tokenizer).is_dir():
        for name in (PROCESSOR_CONFIG, BPE_FILE):
            assets[f"{FAST_TOKENIZER_ASSET}/{name}"] = Path(fast_tokenizer) / name
    return assets


@click.command()
@click.option("--config", "config_name", metavar="NAME", help="A preset (see `pi configs`), e.g. pi0_aloha_sim.")
@click.option("--embodiment", metavar="NAME", help="The robot, when training without a preset (e.g. aloha).")
@click.option(
    "--model-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file with the model config (an unstructured Pi0Config, or Pi0FASTConfig with "
    '"family": "pi0_fast"); overrides the preset\'s.',
)
@click.option("--backend", metavar="NAME", help="jax or torch (default: torch when installed, else jax).")
@click.option("--exp-name", metavar="NAME", help="Name of the run; checkpoints go to <base>/<config>/<exp-name>/.")
@click.option(
    "--dataset",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A local LeRobot dataset (v2.1 or v3.0).",
)
@click.option(
    "--base-checkpoint",
    metavar="PATH_OR_URL",
    help="Weights to start from, any supported format (e.g. gs://openpi-assets/checkpoints/pi0_base/params); "
    "default: a fresh seeded initialization.",
)
@click.option("--resume", is_flag=True, help="Continue the experiment from its latest checkpoint.")
@click.option("--overwrite", is_flag=True, help="Delete the experiment's directory and start again.")
@click.option(
    "--train-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML or JSON file of TrainConfig fields; the flags override it.",
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a TrainConfig field, e.g. --set batch_size=8 --set lr_schedule.peak_lr=1e-4 "
    '--set \'expert_lora={"rank": 32, "alpha": 32}\'. Repeatable.',
)
@click.option(
    "--norm-stats",
    metavar="PATH_OR_URL",
    help="norm_stats.json or its folder (default: the experiment's own when resuming, else computed from the dataset).",
)
@click.option("--default-prompt", metavar="TEXT", help="Prompt for samples without one; wins over the preset's.")
@click.option(
    "--tokenizer",
    metavar="PATH_OR_URL",
    help="SentencePiece prompt tokenizer (default: the preset's, else PaliGemma's).",
)
@click.option(
    "--fast-tokenizer",
    metavar="DIR_OR_URL",
    help="π0-FAST action tokenizer (default: physical-intelligence/fast); a local one is saved with the checkpoints.",
)
@click.option("--tensorboard", is_flag=True, help="Also log to TensorBoard (needs tensorboardX or tensorboard).")
@click.option("--wandb", is_flag=True, help="Also log to Weights & Biases (needs wandb).")
def train(
    config_name: str | None,
    embodiment: str | None,
    model_config: Path | None,
    backend: str | None,
    exp_name: str | None,
    dataset: Path,
    base_checkpoint: str | None,
    resume: bool,
    overwrite: bool,
    train_config: Path | None,
    assignments: tuple[str, ...],
    norm_stats: str | None,
    default_prompt: str | None,
    tokenizer: str | None,
    fast_tokenizer: str | None,
    tensorboard: bool,
    wandb: bool,
) -> None:
    """Train a policy on a LeRobot dataset, checkpointing to <checkpoint_base_dir>/<config>/<exp-name>/<step>/.

    Each <step>/model is a complete checkpoint: serve it with
    `pi run serve --checkpoint <step>/model --embodiment ROBOT`.

    \b
    pi run train --config pi0_aloha_sim --exp-name try1 --dataset ./aloha_sim \\
        --base-checkpoint gs://openpi-assets/checkpoints/pi0_base/params
    pi run train --config pi0_aloha_sim --exp-name try1 --dataset ./aloha_sim --resume
    pi run train --embodiment aloha --model-config tiny.json --exp-name cpu --dataset ./data \\
        --backend torch --set batch_size=2 --set num_train_steps=20
    """
    from openpi_core.errors import OpenpiError

    logging.getLogger("openpi_core").setLevel(logging.INFO)
    try:
        result = _train(
            config_name=config_name,
            embodiment_name=embodiment,
            model_config_file=model_config,
            backend_name=backend,
            exp_name=exp_name,
            dataset_root=dataset,
            base_checkpoint=base_checkpoint,
            resume=resume,
            overwrite=overwrite,
            train_config_file=train_config,
            assignments=assignments,
            norm_stats=norm_stats,
            default_prompt=default_prompt,
            tokenizer=tokenizer,
            fast_tokenizer=fast_tokenizer,
            tensorboard=tensorboard,
            wandb=wandb,
        )
    except OpenpiError as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from error
    click.echo(f"trained to step {result.step}; last checkpoint: {result.checkpoint}")
    if result.metrics is not None:
        click.echo(f"loss {result.metrics['loss']:.4f}, grad norm {result.metrics['grad_norm']:.3f}")


def _train(
    *,
    config_name: str | None,
    embodiment_name: str | None,
    model_config_file: Path | None,
    backend_name: str | None,
    exp_name: str | None,
    dataset_root: Path,
    base_checkpoint: str | None,
    resume: bool,
    overwrite: bool,
    train_config_file: Path | None,
    assignments: tuple[str, ...],
    norm_stats: str | None,
    default_prompt: str | None,
    tokenizer: str | None,
    fast_tokenizer: str | None,
    tensorboard: bool,
    wandb: bool,
) -> Any:
    from tqdm import tqdm

    from openpi_core.data.lerobot import LeRobotDataset
    from openpi_core.data.loader import create_data_loader
    from openpi_core.data.norm_stats import compute_norm_stats
    from openpi_core.data.oversample import EpisodeStartOversampling
    from openpi_core.download import is_url, maybe_download
    from openpi_core.errors import InputError
    from openpi_core.plugins import get_backend, get_config, get_embodiment
    from openpi_core.policy import default_backend
    from openpi_core.serialization import structure
    from openpi_core.training import checkpoint as ckpt
    from openpi_core.training.config import TrainConfig
    from openpi_core.training.loop import run_training
    from openpi_core.training.presets import DataRecipe, stats_transforms, training_transforms
    from openpi_core.transforms import load_norm_stats
    from openpi_core.transforms.normalize import FILE_NAME as NORM_STATS_FILE

    preset = get_config(config_name) if config_name else None
    embodiment_name = embodiment_name or (preset.embodiment if preset else None)
    if embodiment_name is None:
        raise click.UsageError("say what to train: --config NAME, or --embodiment NAME with --model-config FILE")
    if model_config_file is not None:
        model = read_model_config(model_config_file)
    elif preset is not None:
        model = preset.model_config
    else:
        raise click.UsageError("--embodiment needs --model-config FILE (or use a preset: --config NAME)")
    if preset is not None and preset.family != model.family:
        raise InputError(
            f"preset {preset.name!r} is for family {preset.family!r}, but the model config is {model.family!r}"
        )

    fields = read_config_file(train_config_file) if train_config_file else {}
    if exp_name is not None:
        fields["exp_name"] = exp_name
    if "exp_name" not in fields:
        raise click.UsageError("name the run: --exp-name NAME (or exp_name in --train-config)")
    train_config = structure(apply_overrides(fields, assignments), TrainConfig)

    backend = get_backend(backend_name or default_backend())
    if model.family not in backend.families:
        raise InputError(f"backend {backend.name!r} implements {list(backend.families)}, not {model.family!r}")
    name = preset.name if preset else model.family
    exp_dir = ckpt.experiment_dir(train_config, name)
    created = missing_folders(exp_dir)
    # Fail before reading the dataset; run_training then continues from whatever is left.
    ckpt.prepare_experiment_dir(exp_dir, resume=resume, overwrite=overwrite)
    if overwrite and exp_dir not in created:
        created.insert(0, exp_dir)  # the old folder is gone: the one there now is this run's
    with removed_on_failure(exp_dir, created):
        tokenizer = tokenizer or (preset.tokenizer if preset else None)
        tokenizer_path = maybe_download(tokenizer) if tokenizer and is_url(tokenizer) else tokenizer
        if fast_tokenizer is not None and not is_url(fast_tokenizer) and not Path(fast_tokenizer).is_dir():
            raise InputError(f"--fast-tokenizer should be a directory or URL of a FAST tokenizer, got {fast_tokenizer}")
        dataset = LeRobotDataset(dataset_root, action_horizon=model.action_horizon)
        recipe = DataRecipe(
            get_embodiment(embodiment_name),
            model,
            preset=preset,
            tasks=dataset.tasks,
            default_prompt=default_prompt,
            tokenizer=tokenizer_path,
            fast_tokenizer=fast_tokenizer,
        )
        stats_file = ckpt.experiment_norm_stats_path(exp_dir)
        if norm_stats is not None and is_url(norm_stats):
            url = norm_stats if norm_stats.endswith(".json") else f"{norm_stats.rstrip('/')}/{NORM_STATS_FILE}"
            stats = load_norm_stats(maybe_download(url))
        elif norm_stats is not None:
            stats = load_norm_stats(Path(norm_stats))
        elif stats_file.is_file():
            stats = load_norm_stats(stats_file)
            logger.info("using the experiment's norm stats %s", stats_file)
        else:
            with tqdm(total=len(dataset), desc="norm stats", unit="frames", file=sys.stderr) as bar:
                stats = compute_norm_stats(dataset, stats_transforms(recipe), progress=bar.update)

        starts = train_config.episode_starts
        samples = EpisodeStartOversampling(dataset, starts.frames, starts.repeats) if starts else dataset
        loader = create_data_loader(
            samples,
            training_transforms(recipe, stats),
            train_config.batch_size,
            seed=train_config.seed,
            num_workers=train_config.num_workers,
        )
        with loader:
            return run_training(
                backend,
                loader,
                model,
                train_config,
                name=name,
                norm_stats=stats,
                base_checkpoint=base_checkpoint,
                resume=True,
                model_assets=model_assets(tokenizer_path, fast_tokenizer),
                tensorboard=tensorboard,
                wandb=wandb,
            )
