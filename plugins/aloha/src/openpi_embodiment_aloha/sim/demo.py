"""The ``aloha-sim`` demo that ``pi demo`` runs: the bundled small π0 drives the simulated ALOHA.

The policy of the ``pi0_aloha_sim_small`` preset (trained on scripted transfer-cube
demonstrations, checkpoint in ``sim/checkpoint/``) is served on a loopback websocket in
this process, and the simulator asks it for action chunks through the websocket
client, as a robot would. Nothing is downloaded. The plugin registers :data:`DEMO`
through ``openpi_register_demos``; MuJoCo is imported only when the demo runs.
"""

import json
from typing import Any

from openpi_core.specs import Demo, DemoOptions, DemoResult

CONFIG = "pi0_aloha_sim_small"
"""The preset the demo serves."""

TASK = "transfer-cube"

SIM_EXTRA_HINT = 'pip install "openpi-embodiment-aloha[sim]"'


def missing() -> str | None:
    """None when the simulator imports, else what to install."""
    try:
        import openpi_embodiment_aloha.sim.evaluate  # noqa: F401
    except ImportError as error:
        return f"the ALOHA simulator is not installed ({error}); {SIM_EXTRA_HINT}"
    return None


def run(options: DemoOptions) -> DemoResult:
    """Serve :data:`CONFIG` on loopback and run ``options.episodes`` episodes of :data:`TASK` through the client.

    ``data`` is the evaluation's results (:meth:`~openpi_embodiment_aloha.sim.evaluate.EvalResults.to_json`).
    """
    from openpi_core.launch import serve_locally
    from openpi_core.policy import create_policy
    from openpi_embodiment_aloha.sim.env import AlohaSimEnv
    from openpi_embodiment_aloha.sim.evaluate import chunk_fn, evaluate
    from openpi_embodiment_aloha.sim.progress import episode_bars

    policy = create_policy(CONFIG, backend=options.backend)
    meta: dict[str, Any] = dict(policy.metadata)
    where = f"; videos go to {options.video_dir}" if options.video_dir is not None else ""
    options.echo(
        f"pi demo: {CONFIG} ({meta['family']}, backend {meta['backend']}) drives the simulated ALOHA "
        f"on {TASK} through a loopback websocket{where}"
    )
    env = AlohaSimEnv(TASK)
    with (
        serve_locally(policy) as client,
        episode_bars(options.episodes, env.max_steps, f"pi demo {TASK}", options.progress) as (on_episode, on_step),
    ):
        results = evaluate(
            chunk_fn(client),
            env,
            episodes=options.episodes,
            video_dir=options.video_dir,
            progress=on_episode,
            on_step=on_step,
            on_reset=client.reset,
            policy_info={"config": CONFIG, **meta},
        )
    return DemoResult(summary=results.summary(), data=json.loads(results.to_json()))


DEMO = Demo(
    name="aloha-sim",
    description=f"the trained small π0 ({CONFIG}) on {TASK} in the ALOHA simulator",
    run=run,
    missing=missing,
)
