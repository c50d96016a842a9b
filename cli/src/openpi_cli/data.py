"""``pi data``: prepare training data (``pi data convert``: raw recordings -> LeRobot v3.0)."""

import json
from pathlib import Path

import click

from openpi_cli.progress import progress_bar, progress_option
from openpi_core.data.convert import DEFAULT_FPS, FORMATS, ROBOMIMIC_MAPPINGS, RobomimicMapping, convert_dataset
from openpi_core.data.lerobot import LeRobotDataset
from openpi_core.data.writer import VIDEO_CODECS, VideoSettings
from openpi_core.errors import OpenpiError
from openpi_core.plugins import get_embodiment


@click.group()
def data() -> None:
    """Prepare training data."""


@data.command("convert")
@click.option("--format", "format_", type=click.Choice(FORMATS), required=True, help="What SRC holds.")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--embodiment", required=True, help="Robot whose keys the recordings use (see `pi embodiments`).")
@click.option("--task", help="Task text (the prompt) of every episode. Default: the one the source stores.")
@click.option(
    "--fps",
    type=click.IntRange(min=1),
    help=f"Recording rate. Default: {', '.join(f'{k} {v}' for k, v in DEFAULT_FPS.items())}; required for npz.",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="KEY=SRC[,SRC...]",
    help="robomimic: robot key made of these HDF5 datasets under data/demo_N, concatenated "
    f"(repeat for each key). Defaults exist for: {', '.join(sorted(ROBOMIMIC_MAPPINGS))}.",
)
@click.option("--rotate-180/--no-rotate-180", default=None, help="robomimic: turn camera frames upside down.")
@click.option("--codec", type=click.Choice(VIDEO_CODECS), default="h264", show_default=True, help="Video codec.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@progress_option
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout (shape below).")
def convert(
    format_: str,
    src: Path,
    out: Path,
    embodiment: str,
    task: str | None,
    fps: int | None,
    maps: tuple[str, ...],
    rotate_180: bool | None,
    codec: str,
    overwrite: bool,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Convert the recordings SRC into the LeRobot v3.0 dataset OUT.

    SRC is a robomimic HDF5 file (data/demo_N/obs/*, actions), a folder of ALOHA
    episode HDF5 files (/observations/qpos, /observations/images/<camera>, /action),
    or a folder of .npz episodes whose arrays are named by the robot's keys.

    \b
    --json prints {"dataset": OUT, "version", "episodes", "frames", "fps", "tasks": [...],
    "cameras": [...]}.
    """
    try:
        robot = get_embodiment(embodiment)
        mapping = _mapping(robot.name, maps, rotate_180) if format_ == "robomimic" else None
        with progress_bar(progress, desc="converting", unit="episode") as bar:
            convert_dataset(
                format_,
                src,
                out,
                embodiment=robot,
                task=task,
                fps=fps,
                mapping=mapping,
                video=VideoSettings(codec=codec),
                overwrite=overwrite,
                progress=lambda _: bar.update(),
            )
        dataset = LeRobotDataset(out)
    except OpenpiError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        written = {
            "dataset": str(out),
            "version": dataset.version,
            "episodes": dataset.num_episodes,
            "frames": len(dataset),
            "fps": dataset.fps,
            "tasks": list(dataset.tasks.values()),
            "cameras": list(dataset.camera_keys),
        }
        click.echo(json.dumps(written, indent=2))
        return
    click.echo(
        f"wrote {dataset.num_episodes} episodes ({len(dataset)} frames at {dataset.fps:g} fps, "
        f"{len(dataset.tasks)} tasks) as LeRobot {dataset.version} to {out}"
    )


def _mapping(embodiment: str, maps: tuple[str, ...], rotate_180: bool | None) -> RobomimicMapping | None:
    default = ROBOMIMIC_MAPPINGS.get(embodiment)
    if not maps and rotate_180 is None:
        return default
    keys = dict(default.keys) if default else {}
    for entry in maps:
        key, sep, sources = entry.partition("=")
        if not sep or not key or not sources:
            raise click.BadParameter(f"expected KEY=SRC[,SRC...], got {entry!r}", param_hint="--map")
        keys[key] = tuple(source.strip() for source in sources.split(","))
    rotate = rotate_180 if rotate_180 is not None else bool(default and default.rotate_images_180)
    return RobomimicMapping(keys, rotate_images_180=rotate)
