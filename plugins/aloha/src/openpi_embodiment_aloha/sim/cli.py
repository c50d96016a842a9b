"""``pi run eval aloha-sim`` (evaluate a policy) and ``pi data aloha-sim`` (record demonstrations) in the ALOHA simulator.

:func:`register` adds both to the ``pi`` command (the plugin's ``openpi_register_commands``).
The ``eval`` group under ``pi run`` is shared: another embodiment adds its own simulator
next to ``aloha-sim``. MuJoCo and gym-aloha are imported inside the commands, so
``pi`` works without the ``sim`` extra; the commands then say what to install.
"""

import contextlib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

SIM_EXTRA_HINT = 'pip install "openpi-embodiment-aloha[sim]"'
TASKS = ("transfer-cube", "insertion")
"""The simulated tasks (:data:`openpi_embodiment_aloha.sim.env.TASKS`, repeated here to keep MuJoCo out of ``pi``)."""
EXECUTION_MODES = ("sync", "async", "rtc")
""":data:`openpi_core.client.realtime.MODES`, repeated here to keep ``pi --help`` light."""


def register(cli: click.Group) -> None:
    """Add ``aloha-sim`` to ``pi run eval`` (creating that group if no plugin did) and to ``pi data``."""
    run = cli.commands["run"]
    if "eval" not in run.commands:
        run.add_command(eval_group)
    run.commands["eval"].add_command(eval_aloha_sim)
    cli.commands["data"].add_command(data_aloha_sim)


@click.group("eval")
def eval_group() -> None:
    """Evaluate policies closed loop in simulators, one subcommand per simulated robot."""


def _import_sim(module: str) -> Any:
    """``openpi_embodiment_aloha.sim.<module>``, or a click error that names the missing extra."""
    if sys.platform.startswith("linux"):
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; set MUJOCO_GL=osmesa to choose another
    try:
        return importlib.import_module(f"openpi_embodiment_aloha.sim.{module}")
    except ImportError as error:
        raise click.ClickException(f"the ALOHA simulator is not installed ({error}); {SIM_EXTRA_HINT}") from error


@click.command("aloha-sim")
@click.option("--task", type=click.Choice(TASKS), default="transfer-cube", show_default=True, help="Simulated task.")
@click.option("--episodes", type=click.IntRange(min=1), default=50, show_default=True, help="Episodes to run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Episode i starts from seed + i.")
@click.option(
    "--replan-steps",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Steps from a chunk's first action to the next request.",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Simulated inference latency: the simulator keeps stepping at 50 Hz while a chunk is computed.",
)
@click.option(
    "--execution",
    type=click.Choice(EXECUTION_MODES),
    default="sync",
    show_default=True,
    help="sync: hold the last action while a chunk is computed; async: keep executing, switch when it arrives; "
    "rtc: also send the leftover and the delay (real-time chunking).",
)
@click.option(
    "--render",
    type=click.Choice(("fast", "faithful")),
    default="fast",
    show_default=True,
    help="fast: the camera drawn at the model's 224x224; faithful: gym-aloha's 480x640 image.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Results JSON file (required unless --json)."
)
@click.option("--video-dir", type=click.Path(file_okay=False, path_type=Path), help="Write an MP4 per episode here.")
@click.option("--server", metavar="ws://HOST:PORT", help="A policy server (`pi run serve`); API key: $OPENPI_API_KEY.")
@click.option("--config", "config_name", metavar="NAME", help="In-process policy: a preset, e.g. pi0_aloha_sim.")
@click.option("--checkpoint", metavar="PATH_OR_URL", help="In-process policy: checkpoint (default: the preset's).")
@click.option("--backend", metavar="NAME", help="In-process policy: jax or torch (default: torch when installed).")
@click.option(
    "--num-steps",
    type=click.IntRange(min=1),
    help="In-process policy: flow-matching steps per chunk (default: the model's, 10 for π0).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars (episodes, and steps of the current one) with ETAs on stderr "
    "(default: only when stderr is a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results (what --out holds) as JSON on stdout.")
def eval_aloha_sim(
    task: str,
    episodes: int,
    seed: int,
    replan_steps: int,
    latency_ms: float,
    execution: str,
    render: str,
    out: Path,
    video_dir: Path | None,
    server: str | None,
    config_name: str | None,
    checkpoint: str | None,
    backend: str | None,
    num_steps: int | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Run a policy closed loop in the ALOHA simulator and write its success rate to --out.

    The policy is a server (--server) or loaded here (--config and/or --checkpoint).
    An episode succeeds when it ends with the task's top reward (4).

    With --latency-ms the inference takes that long in simulation time
    (latency / 20 ms control steps), and --execution says what the robot does
    meanwhile.

    \b
    pi run eval aloha-sim --server ws://127.0.0.1:8000 --episodes 50 --out results.json
    pi run eval aloha-sim --config pi0_aloha_sim --backend jax --episodes 10 --out results.json --video-dir videos
    pi run eval aloha-sim --config pi0_aloha_sim_small --latency-ms 200 --execution rtc --json

    \b
    The results (--out, and stdout with --json) are one JSON object:
      {"task", "prompt", "replan_steps", "execution", "latency_ms", "render", "image_size": [H, W] or null,
       "episodes": [{"seed", "steps", "max_reward", "final_reward", "success", "inferences",
                     "duration_s", "success_time_s", "held_steps", "boundary_change_mean",
                     "boundary_change_max", "within_change_mean", "within_change_max", "video"}],
       "mean_latency_ms", "policy": {...what was evaluated}, "boundary_change_mean",
       "boundary_change_max", "within_change_mean", "within_change_max",
       "mean_success_time_s", "success_rate"}
    Changes are max |a_t - a_(t-1)| over the 14 dims, at chunk boundaries and within chunks.
    """
    from openpi_core.errors import OpenpiError
    from openpi_embodiment_aloha.sim.progress import episode_bars

    in_process = {"--config": config_name, "--checkpoint": checkpoint, "--backend": backend, "--num-steps": num_steps}
    if server is not None and any(in_process.values()):
        given = ", ".join(flag for flag, value in in_process.items() if value)
        raise click.UsageError(f"--server evaluates a served policy; drop {given}")
    if server is None and config_name is None and checkpoint is None:
        raise click.UsageError("say which policy: --server ws://HOST:PORT, or --config NAME and/or --checkpoint PATH")
    if out is None and not as_json:
        raise click.UsageError("say where the results go: --out FILE, or --json for stdout")
    env_module = _import_sim("env")
    evaluate_module = _import_sim("evaluate")

    try:
        with contextlib.ExitStack() as stack:
            if server is not None:
                policy, info, on_reset = _client(server)
                stack.enter_context(policy)
            else:
                policy, info = _in_process(config_name, checkpoint, backend, num_steps)
                on_reset = None
            env = env_module.AlohaSimEnv(task, render=render)
            bars = episode_bars(episodes, env.max_steps, f"aloha-sim {task}", progress)
            on_episode, on_step = stack.enter_context(bars)
            results = evaluate_module.evaluate(
                evaluate_module.chunk_fn(policy),
                env,
                episodes=episodes,
                seed=seed,
                replan_steps=replan_steps,
                video_dir=video_dir,
                progress=on_episode,
                latency_ms=latency_ms,
                execution=execution,
                on_step=on_step,
                on_reset=on_reset,
                policy_info=info,
            )
    except OpenpiError as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from error
    if out is not None:
        results.write(out)
    if as_json:
        click.echo(results.to_json())
        return
    click.echo(results.summary())
    click.echo(f"wrote {out}")


def _client(server: str) -> tuple[Any, dict[str, Any], Any]:
    """The websocket client of ``server``, its description for the results, and its ``reset``."""
    from openpi_core.client import WebsocketClientPolicy

    client = WebsocketClientPolicy(server, None, wait_timeout_s=60.0)
    return client, {"server": server, **client.get_server_metadata()}, client.reset


def _in_process(
    config_name: str | None, checkpoint: str | None, backend: str | None, num_steps: int | None
) -> tuple[Any, dict]:
    """The policy loaded as ``pi run serve`` loads it (ALOHA when no preset names the robot), and its metadata."""
    from openpi_core.launch import PolicySourceError, load_policy
    from openpi_core.plugins import get_config

    if config_name is not None and get_config(config_name).embodiment != "aloha":
        raise click.UsageError(
            f"preset {config_name!r} is for the {get_config(config_name).embodiment} robot, not aloha"
        )
    try:
        policy = load_policy(
            config_name=config_name,
            checkpoint=checkpoint,
            embodiment=None if config_name else "aloha",
            backend=backend,
            num_steps=num_steps,
        )
    except PolicySourceError as error:
        raise click.UsageError(str(error)) from error
    return policy, {**policy.metadata, "checkpoint": checkpoint}


@click.command("aloha-sim")
@click.option("--task", type=click.Choice(TASKS), default="transfer-cube", show_default=True, help="Simulated task.")
@click.option("--episodes", type=click.IntRange(min=1), default=50, show_default=True, help="Successful episodes.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="The dataset folder to write."
)
@click.option("--seed", type=int, default=0, show_default=True, help="First seed; failed seeds are skipped.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar over the episodes with an ETA on stderr (default: only when stderr is a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout (shape below).")
def data_aloha_sim(
    task: str, episodes: int, out: Path, seed: int, overwrite: bool, progress: bool | None, as_json: bool
) -> None:
    """Record the scripted expert in the ALOHA simulator as a LeRobot v3.0 dataset.

    Only successful episodes are kept; failed seeds are skipped and counted. The
    dataset trains as it is: pi run train --embodiment aloha --dataset OUT ...

    \b
    --json prints: {"dataset": OUT, "task", "episodes": N, "frames": N,
                    "seeds": [kept seeds], "discarded_seeds": [failed seeds]}
    """
    from tqdm import tqdm

    from openpi_core.errors import OpenpiError

    record_module = _import_sim("record")
    failed: list[int] = []
    disable = None if progress is None else not progress
    try:
        with tqdm(total=episodes, desc=f"recording {task}", unit="episode", disable=disable) as bar:

            def progress(episode_seed: int, kept: bool) -> None:
                if kept:
                    bar.update()
                else:
                    failed.append(episode_seed)
                    bar.set_postfix(discarded=len(failed))

            recording = record_module.record_dataset(
                task, episodes, out, seed=seed, progress=progress, overwrite=overwrite
            )
    except OpenpiError as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from error
    discarded = recording.discarded_seeds
    if as_json:
        summary = {
            "dataset": str(recording.root),
            "task": task,
            "episodes": len(recording.seeds),
            "frames": recording.frames,
            "seeds": list(recording.seeds),
            "discarded_seeds": list(discarded),
        }
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(
        f"wrote {len(recording.seeds)} episodes ({recording.frames} frames) of {task} to {recording.root}; "
        f"discarded {len(discarded)} failed seed{'s' if len(discarded) != 1 else ''}"
        + (f" {list(discarded)}" if discarded else "")
    )
