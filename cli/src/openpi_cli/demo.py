"""``pi demo``: the whole serving path on this computer, with a bundled checkpoint.

When a plugin registers a demo (``openpi_register_demos``) that can run, ``pi demo`` runs
it: with ``openpi-embodiment-aloha[sim]`` installed, that is the trained small π0 of the
``pi0_aloha_sim_small`` preset, served on a loopback port in this process and driving
the simulated robot through the websocket client. Otherwise (or with ``--no-sim``) the
random-weight π0 of :data:`openpi_core.launch.DEMO_CHECKPOINT` answers observations in
the format of openpi's ALOHA-sim example, and latency percentiles are printed. Nothing
is downloaded.
"""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from openpi_cli.progress import progress_bar, progress_option
from openpi_core.launch import demo_policy

PERCENTILES = (50, 90, 99)
_OBSERVATION_POOL = 8
LATENCY_SOURCES = {
    "round_trip": "client round trip",
    "server": "server (server_timing.infer_ms)",
    "policy": "model call (policy_timing.infer_ms)",
}
"""The latencies ``pi demo --no-sim`` measures: key in ``--json``'s ``latency_ms`` -> row of the table."""

SIM_HINT = 'pip install "openpi-embodiment-aloha[sim]"'


def aloha_sim_observation(rng: np.random.Generator) -> dict[str, Any]:
    """One observation as openpi's ``examples/aloha_sim`` sends it: the top camera as
    uint8 ``[3, 224, 224]`` and the 14 joint positions as float64, no prompt."""
    state = rng.uniform(-1.0, 1.0, 14)
    state[[6, 13]] = rng.uniform(0.0, 1.0, 2)
    return {"images": {"cam_high": rng.integers(0, 256, (3, 224, 224), dtype=np.uint8)}, "state": state}


@click.command()
@click.option("--backend", default=None, help="jax or torch (default: torch when installed, else jax).")
@click.option(
    "--sim/--no-sim",
    default=None,
    help="Run a plugin's simulator demo (the default when one can run; with openpi-embodiment-aloha[sim]: the "
    "trained small π0 in the ALOHA simulator), or only measure the serving path with random weights.",
)
@click.option("--episodes", type=click.IntRange(min=1), default=3, show_default=True, help="--sim: episodes to run.")
@click.option(
    "--video-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("pi-demo-videos"),
    show_default=True,
    help="--sim: where each episode's MP4 goes.",
)
@click.option(
    "--requests",
    "num_requests",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="--no-sim: requests to send.",
)
@progress_option
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout (shape below).")
def demo(
    backend: str | None,
    sim: bool | None,
    episodes: int,
    video_dir: Path,
    num_requests: int,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Serve a bundled policy locally: in a simulator, or to measure latency.

    With the ALOHA simulator (pip install "openpi-embodiment-aloha[sim]"), the small π0
    of the pi0_aloha_sim_small preset, trained on scripted transfer-cube demonstrations,
    is served on a loopback websocket and drives the simulated robot; each episode is
    written as an MP4 and a success table is printed. Without it (or with --no-sim), a
    tiny π0 with RANDOM weights answers 200 ALOHA observations and the latency
    percentiles of the serving path are printed.

    \b
    --json prints one object instead of the tables:
      simulator: {"mode": "sim", "demo": NAME, "results": {"success_rate", "episodes": [...], ...}}
      latency:   {"mode": "latency", "policy": {...}, "requests": N,
                  "latency_ms": {"round_trip"|"server"|"policy": {"p50", "p90", "p99", "max"}}}
    """
    from openpi_core.errors import OpenpiError
    from openpi_core.specs import DemoOptions

    echo: Callable[[str], None] = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    chosen = _choose_demo(sim)
    try:
        if chosen is not None:
            options = DemoOptions(backend=backend, episodes=episodes, video_dir=video_dir, progress=progress, echo=echo)
            outcome = chosen.run(options)
            output = {"mode": "sim", "demo": chosen.name, "results": dict(outcome.data)}
            text = outcome.summary
        else:
            output, text = _latency_demo(backend, num_requests, progress, echo)
    except OpenpiError as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from error
    click.echo(json.dumps(output, indent=2) if as_json else text)


def _choose_demo(sim: bool | None) -> Any:
    """The first registered demo that can run; None for the latency demo.

    Raises:
        click.ClickException: ``--sim`` was asked for and no demo can run (the message says what to install).
    """
    from openpi_core.plugins import get_plugin_manager

    if sim is False:
        return None
    demos = [entry.item for _, entry in sorted(get_plugin_manager().registry("demo").entries.items())]
    reasons = []
    for candidate in demos:
        reason = candidate.missing()
        if reason is None:
            return candidate
        reasons.append(f"{candidate.name}: {reason}")
    if sim is None:
        return None
    detail = "; ".join(reasons) if reasons else f"no simulator demo is installed; {SIM_HINT}"
    raise click.ClickException(f"{detail} (or use --no-sim)")


def _latency_demo(
    backend: str | None, num_requests: int, progress: bool | None, echo: Callable[[str], None]
) -> tuple[dict[str, Any], str]:
    """Serve the random-weight demo checkpoint on loopback and time ``num_requests`` requests: (JSON, table)."""
    from openpi_core.launch import serve_locally

    echo("pi demo: RANDOM DEMO WEIGHTS, the actions are meaningless; this measures the serving path only")
    policy = demo_policy(backend)
    meta = policy.metadata
    echo(
        f"policy: {meta['family']} tiny, backend {meta['backend']}, {meta['dtype']}, {meta['num_steps']} flow "
        f"steps, actions [{meta['action_horizon']}, {meta['action_dim']}], embodiment {meta['embodiment']}"
    )
    echo(
        f"client: {num_requests} requests in the ALOHA-sim format (cam_high 3x224x224 uint8, state [14], "
        f"no prompt) over a loopback websocket"
    )
    with serve_locally(policy, wait_timeout_s=30.0) as client:
        timings = _query(client, num_requests, meta["action_horizon"], progress)
    summary = {key: _percentiles(values) for key, values in timings.items()}
    output = {"mode": "latency", "policy": dict(meta), "requests": num_requests, "latency_ms": summary}
    return output, "\n" + _latency_table(summary)


def _query(client: Any, num_requests: int, horizon: int, progress: bool | None) -> dict[str, list[float]]:
    """Send ``num_requests`` observations one after another; latencies in ms per source."""
    from openpi_core.errors import OpenpiError

    rng = np.random.default_rng(0)
    observations = [aloha_sim_observation(rng) for _ in range(_OBSERVATION_POOL)]
    timings: dict[str, list[float]] = {key: [] for key in LATENCY_SOURCES}
    with progress_bar(progress, total=num_requests, desc="pi demo requests", unit="req") as bar:
        for index in range(num_requests):
            start = time.perf_counter()
            answer = client.infer(observations[index % _OBSERVATION_POOL])
            timings["round_trip"].append((time.perf_counter() - start) * 1000.0)
            actions = np.asarray(answer["actions"])
            if actions.shape != (horizon, 14):
                raise OpenpiError(
                    f"the server answered actions of shape {list(actions.shape)}; expected [{horizon}, 14]"
                )
            timings["server"].append(float(answer["server_timing"]["infer_ms"]))
            timings["policy"].append(float(answer["policy_timing"]["infer_ms"]))
            bar.update()
    return timings


def _percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    figures = {f"p{p}": float(value) for p, value in zip(PERCENTILES, np.percentile(array, PERCENTILES), strict=True)}
    return {**figures, "max": float(array.max())}


def _latency_table(summary: dict[str, dict[str, float]]) -> str:
    heads = [f"p{p}" for p in PERCENTILES] + ["max"]
    lines = [f"{'latency, ms':<38}" + "".join(f"{head:>9}" for head in heads)]
    for key, label in LATENCY_SOURCES.items():
        lines.append(f"{label:<38}" + "".join(f"{summary[key][head]:>9.1f}" for head in heads))
    return "\n".join(lines)
