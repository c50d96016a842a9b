"""``pi convert``: turn a π0/π0.5 checkpoint of any supported format into another."""

import json
from pathlib import Path

import click

from openpi_cli.progress import progress_bar, progress_option
from openpi_core.checkpoints import load_checkpoint, save_checkpoint
from openpi_core.errors import OpenpiError
from openpi_core.models.config import Pi0Config
from openpi_core.models.pi0_weights import count_parameters, pi0_weight_schema
from openpi_core.plugins import get_checkpoint_format
from openpi_core.serialization import structure


@click.command()
@click.argument("src")
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--to",
    "to",
    default="native",
    show_default=True,
    help="Output format: native, openpi-torch, openpi-jax, or one a plugin adds (see `pi plugins`).",
)
@click.option(
    "--config-json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file with the model config (an unstructured Pi0Config). Default: the config stored "
    "with SRC, else one inferred from its tensor shapes.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16"]),
    help="Storage dtype of DST. Default: bfloat16 if every SRC tensor is, else float32.",
)
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
@progress_option
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout (shape below).")
def convert(
    src: str,
    dst: Path,
    to: str,
    config_json: Path | None,
    dtype: str | None,
    overwrite: bool,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Convert the checkpoint SRC into DST (a directory) in another format.

    SRC is a native directory, an openpi Orbax params/ directory (or one holding
    params/), an openpi-PyTorch / LeRobot model.safetensors (or its directory), a
    bare .safetensors file, or a URL to one (http(s)://, gs://, file://).

    Progress bars count tensors read and written.

    \b
    --json prints {"src", "dst", "format", "family", "dtype", "tensors", "parameters"};
    "dtype" is the --dtype asked for, null when DST keeps SRC's.
    """
    try:
        get_checkpoint_format(to)  # fail before reading gigabytes
        config = _read_config(config_json) if config_json else None
        with progress_bar(progress, desc=f"reading {src}", unit="tensor") as bar:
            config, params = load_checkpoint(src, config, progress=lambda _: bar.update())
        with progress_bar(progress, total=len(params), desc=f"writing {to}", unit="tensor") as bar:
            save_checkpoint(
                dst, config, params, to=to, dtype=dtype, overwrite=overwrite, progress=lambda _: bar.update()
            )
    except OpenpiError as error:
        raise click.ClickException(str(error)) from error
    scalars = count_parameters(pi0_weight_schema(config))
    if as_json:
        written = {
            "src": src,
            "dst": str(dst),
            "format": to,
            "family": config.family,
            "dtype": dtype,
            "tensors": len(params),
            "parameters": scalars,
        }
        click.echo(json.dumps(written, indent=2))
        return
    click.echo(f"wrote {config.family} weights ({len(params)} tensors, {scalars:,} parameters) as {to} to {dst}")


def _read_config(path: Path) -> Pi0Config:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise click.ClickException(f"cannot read the config JSON {path}: {error}") from error
    return structure(data, Pi0Config)
