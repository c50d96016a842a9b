"""``pi bench``: latency of ``sample_actions`` per backend, dtype and model size.

Prefix and per-step costs are separated without looking inside a backend: a chunk
sampled with ``N`` steps costs ``prefix + N * step``, so timing ``N = 1`` and
``N = 10`` gives both. Every figure of one run comes from the same process and
machine, so compare them as ratios.
"""

import json
import platform
import resource
import statistics
import time
from typing import Any

import click
import numpy as np

from openpi_core.models.config import GEMMA_VARIANTS, GemmaConfig, Pi0Config, SiglipConfig
from openpi_core.models.pi0_weights import count_parameters, pi0_weight_schema
from openpi_core.observation import Observation
from openpi_core.plugins import get_backend

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "llm": GEMMA_VARIANTS["dummy"],
        "action_expert": GEMMA_VARIANTS["dummy"],
        "vision": SiglipConfig(width=32, depth=2, mlp_dim=128, num_heads=2),
        "vocab_size": 1024,
    },
    "mid": {
        "llm": GemmaConfig(width=512, depth=6, mlp_dim=2048, num_heads=8, num_kv_heads=1, head_dim=64),
        "action_expert": GemmaConfig(width=256, depth=6, mlp_dim=1024, num_heads=8, num_kv_heads=1, head_dim=64),
        "vision": SiglipConfig(width=256, depth=6, mlp_dim=1024, num_heads=4),
        "vocab_size": 32_000,
    },
    "full": {},
}
"""``tiny`` is the reference-data size, ``mid`` fits a laptop CPU, ``full`` is π0 as published."""

STEP_COUNTS = (1, 10)


def bench_config(size: str, family: str, dtype: str) -> Pi0Config:
    return Pi0Config(pi05=family == "pi05", dtype=dtype, **SIZES[size])


def random_params(config: Pi0Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Small random float32 weights; benchmarks care about shapes, not values."""
    rng = np.random.default_rng(seed)
    return {
        name: (rng.standard_normal(shape, dtype=np.float32) * 0.02) for name, shape in pi0_weight_schema(config).items()
    }


def random_observation(config: Pi0Config, batch_size: int, cameras: int, seed: int = 1) -> Observation:
    rng = np.random.default_rng(seed)
    height, width = config.vision.image_size
    keys = config.image_keys[:cameras]
    prompt_length = config.max_token_len
    return Observation(
        images={k: rng.uniform(-1, 1, (batch_size, height, width, 3)).astype(np.float32) for k in keys},
        image_masks={k: np.ones(batch_size, bool) for k in keys},
        state=rng.standard_normal((batch_size, config.action_dim)).astype(np.float32),
        tokenized_prompt=rng.integers(1, config.vocab_size, (batch_size, prompt_length)).astype(np.int32),
        tokenized_prompt_mask=np.broadcast_to(
            np.arange(prompt_length) < prompt_length // 2, (batch_size, prompt_length)
        ),
    )


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    backend: str, size: str, family: str, dtype: str, cameras: int, batch_size: int, repeats: int
) -> dict[str, Any]:
    """One row of the benchmark: latencies in milliseconds, peak RSS in MiB."""
    config = bench_config(size, family, dtype)
    model = get_backend(backend).load_model(random_params(config), config)
    observation = random_observation(config, batch_size, cameras)
    noise = np.random.default_rng(2).standard_normal(
        (batch_size, config.action_horizon, config.action_dim), dtype=np.float32
    )
    start = time.perf_counter()
    model.sample_actions(observation, noise=noise, num_steps=STEP_COUNTS[1])
    first_call = time.perf_counter() - start
    model.sample_actions(observation, noise=noise, num_steps=STEP_COUNTS[0])
    latency = {
        steps: _median_seconds(lambda s=steps: model.sample_actions(observation, noise=noise, num_steps=s), repeats)
        for steps in STEP_COUNTS
    }
    step = (latency[STEP_COUNTS[1]] - latency[STEP_COUNTS[0]]) / (STEP_COUNTS[1] - STEP_COUNTS[0])
    prefix = latency[STEP_COUNTS[0]] - step
    return {
        "backend": backend,
        "size": size,
        "family": family,
        "dtype": dtype,
        "cameras": cameras,
        "batch": batch_size,
        "params_m": count_parameters(pi0_weight_schema(config)) / 1e6,
        "first_call_ms": first_call * 1e3,
        "chunk_ms": latency[STEP_COUNTS[1]] * 1e3,
        "prefix_ms": prefix * 1e3,
        "step_ms": step * 1e3,
        "step_over_prefix": step / prefix if prefix > 0 else float("nan"),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


COLUMNS = (
    "backend",
    "size",
    "family",
    "dtype",
    "params_m",
    "first_call_ms",
    "chunk_ms",
    "prefix_ms",
    "step_ms",
    "step_over_prefix",
    "peak_rss_mib",
)


def format_rows(rows: list[dict[str, Any]]) -> str:
    cells = [list(COLUMNS)] + [
        [f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS] for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in cells)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@click.command()
@click.option("--backends", default="jax,torch", show_default=True, help="Comma-separated backends.")
@click.option("--size", "sizes", default="tiny", show_default=True, help="Comma-separated: tiny, mid, full.")
@click.option("--family", "families", default="pi0", show_default=True, help="Comma-separated: pi0, pi05.")
@click.option("--dtype", "dtypes", default="float32", show_default=True, help="Comma-separated: float32, bfloat16.")
@click.option("--cameras", default=3, show_default=True, type=click.IntRange(1, 3))
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1))
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the rows as JSON.")
def bench(backends, sizes, families, dtypes, cameras, batch_size, repeats, json_path) -> None:
    """Time sample_actions: whole chunk, prefix, and each denoising step."""
    for size in _split(sizes):
        if size not in SIZES:
            raise click.BadParameter(f"unknown size {size!r}; expected one of {sorted(SIZES)}", param_hint="--size")
    rows = []
    for backend in _split(backends):
        for size in _split(sizes):
            for family in _split(families):
                for dtype in _split(dtypes):
                    rows.append(measure(backend, size, family, dtype, cameras, batch_size, repeats))
                    click.echo(format_rows(rows[-1:]).splitlines()[-1], err=True)
    click.echo(
        f"# {platform.processor() or platform.machine()}, {cameras} cameras, batch {batch_size}, "
        f"median of {repeats}; times in ms"
    )
    click.echo(format_rows(rows))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=2)
