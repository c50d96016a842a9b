"""``pi norm-stats``: compute a config's normalization statistics from a LeRobot dataset."""

import json
from pathlib import Path

import click

from openpi_cli.progress import progress_bar, progress_option
from openpi_core.data.lerobot import LeRobotDataset
from openpi_core.data.norm_stats import compute_norm_stats, near_zero_warnings
from openpi_core.errors import OpenpiError
from openpi_core.plugins import get_config, get_embodiment
from openpi_core.specs import NamedConfig
from openpi_core.training.presets import DataRecipe, stats_transforms
from openpi_core.transforms import save_norm_stats

ASSETS_DIR = Path("assets")
"""Where norm stats go by default, as in openpi: ``assets/<config>/<asset id>/norm_stats.json``."""


@click.command("norm-stats")
@click.option("--config", "config_name", required=True, help="Named preset (see `pi configs`).")
@click.option("--dataset", "dataset_path", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--max-frames", type=click.IntRange(min=2), help="Use a random subset of this many frames.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --max-frames subset.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for norm_stats.json. Default: assets/<config>/<asset id> (the asset id of the "
    "config's published norm stats, else the dataset's folder name).",
)
@progress_option
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout (shape below).")
def norm_stats(
    config_name: str,
    dataset_path: Path,
    max_frames: int | None,
    seed: int,
    out: Path | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Compute a config's normalization stats from a LeRobot dataset.

    Streams once through the dataset at --dataset, through the config's repack,
    embodiment input transforms and data transforms (delta actions, if the config
    predicts them), and writes openpi's norm_stats.json of `state` and `actions`
    (over every step of each action chunk, as openpi does).

    Dimensions whose std or q99 - q01 is near zero are reported: normalizing them
    divides by almost nothing.

    \b
    --json prints {"config", "dataset", "path", "frames",
    "norm_stats": {"state"|"actions": {"mean", "std", "q01", "q99"}} (the file's content),
    "warnings": {KEY: message}}.
    """
    try:
        config = get_config(config_name)
        embodiment = get_embodiment(config.embodiment)
        dataset = LeRobotDataset(dataset_path, action_horizon=config.model_config.action_horizon, decode_cameras=False)
        recipe = DataRecipe(embodiment, config.model_config, preset=config, tasks=dataset.tasks)
        transforms = stats_transforms(recipe)
        total = len(dataset) if max_frames is None else min(max_frames, len(dataset))
        with progress_bar(progress, total=total, desc="computing norm stats", unit="frame") as bar:
            stats = compute_norm_stats(dataset, transforms, max_frames=max_frames, seed=seed, progress=bar.update)
        warnings = near_zero_warnings(stats)
        for message in warnings.values():
            click.echo(f"warning: {message}", err=True)
        path = save_norm_stats(stats, out if out is not None else default_output(config, dataset_path))
    except OpenpiError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        written = {
            "config": config.name,
            "dataset": str(dataset_path),
            "path": str(path),
            "frames": total,
            "norm_stats": json.loads(path.read_text())["norm_stats"],
            "warnings": warnings,
        }
        click.echo(json.dumps(written, indent=2))
        return
    click.echo(f"wrote norm stats of {', '.join(stats)} over {total} frames to {path}")


def default_output(config: NamedConfig, dataset_path: Path) -> Path:
    """``assets/<config>/<asset id>``: the config's :attr:`~openpi_core.specs.NamedConfig.asset_id`,
    else the dataset folder's name."""
    return ASSETS_DIR / config.name / (config.asset_id or dataset_path.resolve().name)
