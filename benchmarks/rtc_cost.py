"""What real-time chunking's guidance costs per chunk, as a ratio to plain sampling.

For each backend, model size and family (float32, batch 1, three 224x224 cameras,
horizon 50, 10 denoising steps, random weights: ``pi bench``'s configs), the same
observation and noise are sampled plainly and with a prefix (``inference_delay`` 5,
``execution_horizon`` 25). Plain and guided calls alternate, after one warm-up call of
each (compilation), so drift on a shared machine hits both alike. Reported: the median
chunk of each and their ratio, and one denoising step of each, from the difference
between 10-step and 1-step chunks (as ``pi bench`` splits it). A guided step runs the
denoiser forward and its vector-Jacobian product backward; the prefix (SigLIP and the
LLM) runs once either way, so the chunk ratio is below the step ratio.

    python benchmarks/rtc_cost.py [--backends jax,torch] [--sizes tiny,mid] [--repeats 7]

torch runs with one intra-op thread unless ``--torch-threads`` says otherwise: on a small
shared machine its spinning threads otherwise dominate the timings.
"""

import argparse
import statistics
import time

import numpy as np

from openpi_cli.bench import bench_config, random_observation, random_params
from openpi_core.plugins import get_backend

STEPS = 10
DELAY, EXECUTION_HORIZON = 5, 25


def _seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(backend: str, size: str, family: str, repeats: int) -> dict:
    config = bench_config(size, family, "float32")
    model = get_backend(backend).load_model(random_params(config), config)
    observation = random_observation(config, batch_size=1, cameras=3)
    rng = np.random.default_rng(2)
    shape = (1, config.action_horizon, config.action_dim)
    noise = rng.standard_normal(shape, dtype=np.float32)
    prefix = rng.standard_normal(shape, dtype=np.float32)

    def plain(steps: int) -> None:
        model.sample_actions(observation, noise=noise, num_steps=steps)

    def guided(steps: int) -> None:
        model.sample_actions(
            observation,
            noise=noise,
            num_steps=steps,
            prefix_actions=prefix,
            inference_delay=DELAY,
            execution_horizon=EXECUTION_HORIZON,
        )

    calls = [
        (name, function, steps) for steps in (1, STEPS) for name, function in (("plain", plain), ("guided", guided))
    ]
    for _, function, steps in calls:
        function(steps)
    seconds: dict[tuple[str, int], list[float]] = {(name, steps): [] for name, _, steps in calls}
    for _ in range(repeats):
        for name, function, steps in calls:
            seconds[name, steps].append(_seconds(lambda f=function, n=steps: f(n)))
    ms = {key: statistics.median(values) * 1e3 for key, values in seconds.items()}
    plain_step = (ms["plain", STEPS] - ms["plain", 1]) / (STEPS - 1)
    guided_step = (ms["guided", STEPS] - ms["guided", 1]) / (STEPS - 1)
    return {
        "plain_ms": ms["plain", STEPS],
        "guided_ms": ms["guided", STEPS],
        "ratio": ms["guided", STEPS] / ms["plain", STEPS],
        "plain_step_ms": plain_step,
        "guided_step_ms": guided_step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="jax,torch")
    parser.add_argument("--sizes", default="tiny,mid")
    parser.add_argument("--families", default="pi0,pi05")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    backends = args.backends.split(",")
    if "torch" in backends:
        import torch

        torch.set_num_threads(args.torch_threads)
    print(
        "| backend | size | family | plain chunk ms | guided chunk ms | guided / plain chunk | plain step ms | guided step ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for backend in backends:
        for size in args.sizes.split(","):
            for family in args.families.split(","):
                row = measure(backend, size, family, args.repeats)
                print(
                    f"| {backend} | {size} | {family} | {row['plain_ms']:.0f} | {row['guided_ms']:.0f} "
                    f"| {row['ratio']:.2f}x | {row['plain_step_ms']:.1f} | {row['guided_step_ms']:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
