"""``pi demo``: the whole serving path on this computer, with a bundled checkpoint.

With the ALOHA simulator installed, the trained small π0 of the ``pi0_aloha_sim_small``
preset is served on an ephemeral loopback port in this process and drives the
simulated robot through the websocket client; each episode is written as an MP4.
Otherwise (or with ``--no-sim``) the random-weight π0 in ``demo_checkpoint/`` (see its
README) answers observations in the format of openpi's ALOHA-sim example, and latency
percentiles are printed. Nothing is downloaded.
"""

import asyncio
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "demo_checkpoint"
"""The bundled tiny π0 checkpoint (random weights)."""

DEMO_EMBODIMENT = "aloha"
DEMO_PROMPT = "Transfer cube"
"""What the demo policy uses when an observation has no prompt (the ALOHA-sim client sends none)."""

PERCENTILES = (50, 90, 99)
_OBSERVATION_POOL = 8


def demo_policy(
    backend: str | None = None, *, default_prompt: str | None = None, dtype: str | None = None, num_steps: int = 10
) -> Any:
    """The demo checkpoint as an ALOHA :class:`~openpi_core.policy.Policy`.

    ``default_prompt`` defaults to :data:`DEMO_PROMPT`, ``backend`` to
    :func:`openpi_core.policy.default_backend`, ``dtype`` to the checkpoint's float32.
    """
    from openpi_core.policy import create_policy

    return create_policy(
        checkpoint=DEMO_CHECKPOINT,
        embodiment=DEMO_EMBODIMENT,
        backend=backend,
        dtype=dtype,
        num_steps=num_steps,
        default_prompt=default_prompt or DEMO_PROMPT,
    )


def aloha_sim_observation(rng: np.random.Generator) -> dict[str, Any]:
    """One observation as openpi's ``examples/aloha_sim`` sends it: the top camera as
    uint8 ``[3, 224, 224]`` and the 14 joint positions as float64, no prompt."""
    state = rng.uniform(-1.0, 1.0, 14)
    state[[6, 13]] = rng.uniform(0.0, 1.0, 2)
    return {"images": {"cam_high": rng.integers(0, 256, (3, 224, 224), dtype=np.uint8)}, "state": state}


SIM_DEMO_CONFIG = "pi0_aloha_sim_small"
"""The preset ``pi demo`` runs in the simulator: a small π0 trained on scripted transfer-cube demonstrations."""


def _sim_installed() -> bool:
    try:
        import openpi_embodiment_aloha.sim.evaluate  # noqa: F401
    except ImportError:
        return False
    return True


@click.command()
@click.option("--backend", default=None, help="jax or torch (default: torch when installed, else jax).")
@click.option(
    "--sim/--no-sim",
    default=None,
    help="Run the trained small π0 closed loop in the ALOHA simulator (the default when "
    "openpi-embodiment-aloha[sim] is installed), or only measure the serving path with random weights.",
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
    "--requests", "num_requests", type=click.IntRange(min=1), default=200, show_default=True, help="Requests to send."
)
def demo(backend: str | None, sim: bool | None, episodes: int, video_dir: Path, num_requests: int) -> None:
    """Serve a bundled policy locally: in the ALOHA simulator, or to measure latency.

    With the simulator (pip install "openpi-embodiment-aloha[sim]"), the small π0 of
    the pi0_aloha_sim_small preset, trained on scripted transfer-cube demonstrations,
    is served on a loopback websocket and drives the simulated robot; each episode is
    written as an MP4. Without it (or with --no-sim), a tiny π0 with RANDOM weights
    answers ALOHA observations and the latency of the serving path is measured.
    """
    from openpi_core.errors import OpenpiError

    if sim is None:
        sim = _sim_installed()
    if sim:
        try:
            _sim_demo(backend, episodes, video_dir)
        except OpenpiError as error:
            raise click.ClickException(f"{type(error).__name__}: {error}") from error
        return
    click.echo("pi demo: RANDOM DEMO WEIGHTS, the actions are meaningless; this measures the serving path only")
    try:
        policy = demo_policy(backend)
        meta = policy.metadata
        click.echo(
            f"policy: {meta['family']} tiny, backend {meta['backend']}, {meta['dtype']}, {meta['num_steps']} flow "
            f"steps, actions [{meta['action_horizon']}, {meta['action_dim']}], embodiment {meta['embodiment']}"
        )
        click.echo(
            f"client: {num_requests} requests in the ALOHA-sim format (cam_high 3x224x224 uint8, state [14], "
            f"no prompt) over a loopback websocket"
        )
        timings = asyncio.run(_serve_and_query(policy, num_requests))
    except OpenpiError as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from error
    click.echo("")
    click.echo(_latency_table(timings))


async def _serve_and_query(policy: Any, num_requests: int) -> dict[str, list[float]]:
    from openpi_core.serving.server import PolicyServer, ServerConfig

    server = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0, api_key=None))
    await server.start()
    try:
        await server.wait_ready()
        return await asyncio.to_thread(_query, server.port, num_requests, policy.metadata["action_horizon"])
    finally:
        await server.stop()


def _query(port: int, num_requests: int, horizon: int) -> dict[str, list[float]]:
    """Send ``num_requests`` observations one after another; latencies in ms per source."""
    from tqdm import tqdm

    from openpi_core.client.websocket_client import WebsocketClientPolicy
    from openpi_core.errors import OpenpiError

    rng = np.random.default_rng(0)
    observations = [aloha_sim_observation(rng) for _ in range(_OBSERVATION_POOL)]
    timings: dict[str, list[float]] = {"round_trip": [], "server": [], "policy": []}
    with WebsocketClientPolicy("127.0.0.1", port, wait_timeout_s=30.0) as client:
        for index in tqdm(range(num_requests), desc="pi demo", unit="req", disable=None):
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
    return timings


def _latency_table(timings: dict[str, list[float]]) -> str:
    rows = (
        ("client round trip", "round_trip"),
        ("server (server_timing.infer_ms)", "server"),
        ("model call (policy_timing.infer_ms)", "policy"),
    )
    heads = [f"p{p}" for p in PERCENTILES] + ["max"]
    lines = [f"{'latency, ms':<38}" + "".join(f"{head:>9}" for head in heads)]
    for label, key in rows:
        values = np.asarray(timings[key])
        figures = [*np.percentile(values, PERCENTILES), values.max()]
        lines.append(f"{label:<38}" + "".join(f"{figure:>9.1f}" for figure in figures))
    return "\n".join(lines)


def _sim_demo(backend: str | None, episodes: int, video_dir: Path) -> None:
    """The trained sim policy, served on loopback, driving the simulator for ``episodes`` episodes."""
    if not _sim_installed():
        raise click.ClickException('the simulator needs: pip install "openpi-embodiment-aloha[sim]" (or use --no-sim)')
    from openpi_core.client.websocket_client import WebsocketClientPolicy
    from openpi_core.policy import create_policy
    from openpi_core.serving.server import BackgroundServer, ServerConfig
    from openpi_embodiment_aloha.sim.env import AlohaSimEnv
    from openpi_embodiment_aloha.sim.evaluate import chunk_fn, evaluate

    policy = create_policy(SIM_DEMO_CONFIG, backend=backend)
    meta = policy.metadata
    click.echo(
        f"pi demo: {SIM_DEMO_CONFIG} ({meta['family']}, backend {meta['backend']}) drives the simulated ALOHA "
        f"on transfer-cube through a loopback websocket; videos go to {video_dir}"
    )
    with (
        BackgroundServer(policy, ServerConfig(port=0, api_key=None)) as background,
        WebsocketClientPolicy("127.0.0.1", background.server.port, wait_timeout_s=60.0) as client,
    ):
        results = evaluate(
            chunk_fn(client),
            AlohaSimEnv("transfer-cube"),
            episodes=episodes,
            video_dir=video_dir,
            on_reset=client.reset,
            policy_info={"config": SIM_DEMO_CONFIG, **meta},
        )
    click.echo(results.summary())
