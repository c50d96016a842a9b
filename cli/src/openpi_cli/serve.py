"""``pi run``: run policies. ``pi run serve`` serves one to robots over websockets.

The policy comes from a preset (``--config``), from a checkpoint with an embodiment
(``--checkpoint`` and ``--embodiment``), or from the bundled demo checkpoint
(``--demo``); :func:`openpi_core.launch.load_policy` assembles it. The server
(:mod:`openpi_core.serving`) warms it up, then answers until SIGTERM or Ctrl-C and
exits 0 after answering the requests in flight.
"""

import logging
from typing import TYPE_CHECKING

import click

from openpi_core.wire import API_KEY_ENV

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
@click.option("--api-key", envvar=API_KEY_ENV, help=f"Require this key from clients (env {API_KEY_ENV}).")
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
    api_key: str | None,
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
        server = PolicyServer(policy, ServerConfig(host=host, port=port, api_key=api_key, max_batch=max_batch))
        server.run()
    except OpenpiError as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from error


def load_policy(
    *,
    config_name: str | None,
    checkpoint: str | None,
    embodiment: str | None,
    backend: str | None,
    dtype: str | None = None,
    num_steps: int | None = None,
    default_prompt: str | None = None,
    norm_stats: str | None = None,
    fast_tokenizer: str | None = None,
    demo: bool = False,
) -> "Policy":
    """:func:`openpi_core.launch.load_policy` for a command: the demo warning goes to stderr.

    Raises:
        click.UsageError: the options name no policy, or ``--demo`` comes with another source.
        OpenpiError: the backend is not installed, or the policy could not be assembled.
    """
    from openpi_core import launch

    try:
        return launch.load_policy(
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
            announce=lambda message: click.echo(message, err=True),
        )
    except launch.PolicySourceError as error:
        raise click.UsageError(str(error)) from error
