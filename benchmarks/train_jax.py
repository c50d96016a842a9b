"""Training throughput of the JAX backend: steps per second and peak memory.

Each row (model size × family × precision × LoRA) runs in a fresh process, so peak
memory is that row's own: the process's peak RSS, and on an accelerator the device's
peak bytes in use. The first step (tracing and compilation) is timed apart from the
steady state, which is the median of ``--repeats`` blocks of ``--steps`` steps.

    python3 benchmarks/train_jax.py          # test and tiny sizes, π0 and π0.5, both precisions
    python3 benchmarks/train_jax.py --size mid --family pi05 --lora --json rows.json

Sizes are ``pi bench``'s (:data:`openpi_cli.bench.SIZES`: ``tiny`` is the reference-data
model with 224×224 images, ``mid`` fits a laptop) and ``test``, the tests' tiny model
with 56×56 images (:func:`openpi_conformance.fixtures.tiny_pi0_config`); weights are random.
"""

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import attrs
import numpy as np


def measure(size: str, family: str, precision: str, lora: bool, batch_size: int, steps: int, repeats: int) -> dict:
    """One row: compile time, steady-state steps/s and peak memory of the JAX trainer."""
    import jax

    from openpi_backend_jax.training import JaxTrainer
    from openpi_cli.bench import bench_config, random_observation, random_params
    from openpi_conformance.fixtures import tiny_pi0_config
    from openpi_core.models.api import draw_noise, draw_time
    from openpi_core.models.pi0_weights import count_parameters, pi0_weight_schema
    from openpi_core.observation import Observation
    from openpi_core.training.config import GEMMA_2B_LORA, GEMMA_300M_LORA, TrainConfig

    config = tiny_pi0_config(family) if size == "test" else bench_config(size, family, "float32")
    train = TrainConfig(exp_name="bench", batch_size=batch_size, precision=precision)
    if lora:
        train = attrs.evolve(train, llm_lora=GEMMA_2B_LORA, expert_lora=GEMMA_300M_LORA)
    trainer = JaxTrainer(config, train, random_params(config))
    one = random_observation(config, 1, cameras=3)
    observation = Observation(
        images={key: np.repeat(image, batch_size, axis=0) for key, image in one.images.items()},
        image_masks={key: np.repeat(mask, batch_size) for key, mask in one.image_masks.items()},
        state=np.random.default_rng(4).standard_normal((batch_size, config.action_dim), dtype=np.float32),
        tokenized_prompt=np.repeat(one.tokenized_prompt, batch_size, axis=0),
        tokenized_prompt_mask=np.repeat(one.tokenized_prompt_mask, batch_size, axis=0),
    )
    shape = (batch_size, config.action_horizon, config.action_dim)
    actions = np.random.default_rng(3).standard_normal(shape, dtype=np.float32)

    def step(i: int) -> dict:
        return trainer.step(observation, actions, draw_noise(i, shape), draw_time(i, batch_size), 1e-4)

    start = time.perf_counter()
    step(0)
    first = time.perf_counter() - start
    blocks = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(steps):
            info = step(1 + r * steps + i)
        blocks.append((time.perf_counter() - start) / steps)
    seconds = statistics.median(blocks)
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    return {
        "backend": "jax",
        "device": f"{device.platform}:{device.device_kind}",
        "devices": jax.device_count(),
        "machine": platform.processor() or platform.machine(),
        "size": size,
        "family": family,
        "precision": precision,
        "lora": lora,
        "batch": batch_size,
        "params_m": count_parameters(pi0_weight_schema(config)) / 1e6,
        "trained_m": sum(v.size for k, v in trainer.state_dict().items() if k.startswith("opt/mu/")) / 1e6,
        "first_step_s": first,
        "step_ms": seconds * 1e3,
        "steps_per_s": 1.0 / seconds,
        "samples_per_s": batch_size / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mib": stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None,
        "final_loss": info["loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="test,tiny", help="comma-separated: test, tiny, mid, full")
    parser.add_argument("--family", default="pi0,pi05", help="comma-separated: pi0, pi05")
    parser.add_argument("--precision", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters on both experts (openpi's ranks)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks; the median counts")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--row", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.row:
        row = measure(args.size, args.family, args.precision, args.lora, args.batch_size, args.steps, args.repeats)
        print(json.dumps(row))
        return
    rows = []
    for size in args.size.split(","):
        for family in args.family.split(","):
            for precision in args.precision.split(","):
                command = [sys.executable, __file__, "--row", "--size", size, "--family", family]
                command += ["--precision", precision, "--batch-size", str(args.batch_size)]
                command += ["--steps", str(args.steps), "--repeats", str(args.repeats)] + ["--lora"] * args.lora
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                row = rows[-1]
                print(
                    f"{size:5} {family:5} {precision:9} lora={row['lora']!s:5} batch={row['batch']}: "
                    f"{row['steps_per_s']:.2f} steps/s ({row['step_ms']:.1f} ms), first step {row['first_step_s']:.1f} s, "
                    f"peak RSS {row['peak_rss_mib']:.0f} MiB"
                    + ("" if row["peak_device_mib"] is None else f", peak device {row['peak_device_mib']:.0f} MiB"),
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
