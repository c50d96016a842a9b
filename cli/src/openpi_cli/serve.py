"""``pi run``: run policies. ``pi run serve`` serves one to robots over websockets.

The policy comes from a preset (``--config``), from a checkpoint with an embodiment
(``--checkpoint`` and ``--embodiment``), or from the bundled demo checkpoint
(``--demo``); :func:`openpi_core.launch.load_policy` assembles it. The server
(:mod:`openpi_core.serving`) warms it up, then answers until SIGTERM or Ctrl-C and
exits 0 after answering the requests in flight.
"""

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from openpi_core.wire import API_KEY_ENV, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUEUE

if TYPE_CHECKING:
    from openpi_core.policy import Policy

DTYPES = ("float32", "bfloat16")


@click.group()
def run() -> None:
    """Run policies: serve one to robots, and more (see the subcommands)."""


@run.command()
@click.option("--config", "config_name", metavar="NAME", help="A preset (see `pi configs`), e.g. pi0_aloha_sim.")
@click.option(
    "--checkpoint",
    metavar="PATH_OR_URL",
    help="Checkpoint folder, file or URL (gs://, hf://, https://, file://); default: the preset's.",
)
@click.option("--embodiment", metavar="NAME", help="The robot, for a checkpoint without a preset (e.g. aloha).")
@click.option("--backend", metavar="NAME", help="jax or torch (default: torch when installed, else jax).")
@click.option("--dtype", type=click.Choice(DTYPES), help="Compute dtype (default: the checkpoint's config).")
@click.option(
    "--num-steps",
    type=click.IntRange(min=1),
    help="Flow-matching steps (π0/π0.5; default 10) or most decoded tokens (π0-FAST; default the config's).",
)
@click.option("--default-prompt", metavar="TEXT", help="Prompt for observations without one; wins over the preset's.")
@click.option(
    "--norm-stats",
    metavar="PATH_OR_URL",
    help="norm_stats.json or its folder (default: <checkpoint>/assets/<asset id>/, <checkpoint>/, the preset's).",
)
@click.option(
    "--fast-tokenizer",
    metavar="DIR_OR_URL",
    help="π0-FAST action tokenizer (default: the checkpoint's assets/fast_tokenizer/, else physical-intelligence/fast).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface; 0.0.0.0 admits the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option(
    "--max-batch", type=click.IntRange(min=1), default=1, show_default=True, help="Observations per model call."
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    help="Robots connected at once; more are refused at the handshake (HTTP 503, clients retry).",
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_QUEUE,
    show_default=True,
    help="Requests waiting for the model at once; more are refused with close code 1013 (busy, retry).",
)
@click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    help=f"Require this key from clients. Prefer the env variable {API_KEY_ENV} or --api-key-file: "
    "a key on the command line is visible to every user of this computer.",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the key clients must send from this file (its first line).",
)
@click.option("--demo", is_flag=True, help="Serve the bundled random-weight demo checkpoint with the aloha embodiment.")
def serve(
    config_name: str | None,
    checkpoint: str | None,
    embodiment: str | None,
    backend: str | None,
    dtype: str | None,
    num_steps: int | None,
    default_prompt: str | None,
    norm_stats: str | None,
    fast_tokenizer: str | None,
    host: str,
    port: int,
    max_batch: int,
    max_connections: int,
    max_queue: int,
    api_key: str | None,
    api_key_file: Path | None,
    demo: bool,
) -> None:
    """Serve a policy over websockets until SIGTERM or Ctrl-C.

    A prompt comes, first found, from the observation, --default-prompt, then the preset.

    \b
    pi run serve --demo
    pi run serve --config pi0_aloha_sim
    pi run serve --config pi05_aloha --checkpoint ./my_finetuned_checkpoint --dtype bfloat16
    pi run serve --checkpoint ./ckpt --embodiment aloha --default-prompt "fold the towel"
    """
    from openpi_core.errors import OpenpiError
    from openpi_core.serving.server import PolicyServer, ServerConfig

    logging.getLogger("openpi_core").setLevel(logging.INFO)
    api_key = _api_key(api_key, api_key_file)
    try:
        policy = load_policy(
            config_name=config_name,
            checkpoint=checkpoint,
            embodiment=embodiment,
            backend=backend,
            dtype=dtype,
            num_steps=num_steps,
            default_prompt=default_prompt,
            norm_stats=norm_stats,
            fast_tokenizer=fast_tokenizer,
            demo=demo,
        )
        config = ServerConfig(
            host=host,
            port=port,
            api_key=api_key,
            max_batch=max_batch,
            max_connections=max_connections,
            max_queue=max_queue,
        )
        server = PolicyServer(policy, config)
        server.run()
    except OpenpiError as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from error


def _api_key(api_key: str | None, api_key_file: Path | None) -> str | None:
    """The key from ``--api-key-file``, ``--api-key`` or the environment; warns when it was typed on the command line."""
    source = click.get_current_context().get_parameter_source("api_key")
    if api_key_file is not None:
        if source is ParameterSource.COMMANDLINE:
            raise click.UsageError("give the API key once: --api-key or --api-key-file, not both")
        try:
            lines = api_key_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise click.BadParameter(
                f"cannot read {str(api_key_file)!r}: {error}", param_hint="--api-key-file"
            ) from error
        key = lines[0].strip() if lines else ""
        if not key:
            raise click.BadParameter(
                f"{str(api_key_file)!r} holds no key on its first line", param_hint="--api-key-file"
            )
        return key
    if source is ParameterSource.COMMANDLINE:
        click.echo(
            f"warning: --api-key on the command line is visible to every user of this computer (ps); "
            f"set {API_KEY_ENV} or use --api-key-file instead",
            err=True,
        )
    return api_key


def load_policy(**options: Any) -> "Policy":
    """:func:`openpi_core.launch.load_policy` with ``options`` for a command: the demo warning goes to stderr.

    Raises:
        click.UsageError: the options name no policy, or ``--demo`` comes with another source.
        OpenpiError: the backend is not installed, or the policy could not be assembled.
    """
    from openpi_core import launch

    try:
        return launch.load_policy(**options, announce=lambda message: click.echo(message, err=True))
    except launch.PolicySourceError as error:
        raise click.UsageError(str(error)) from error
