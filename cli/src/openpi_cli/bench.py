"""``pi bench``: latency of ``sample_actions`` per backend, family, dtype and model size.

Prefix and per-step costs are separated without looking inside a backend. A π0/π0.5
chunk sampled with ``N`` denoising steps costs ``prefix + N * step``. A π0-FAST chunk of
``N`` decoded tokens costs ``prefix + (N - 1) * step``: the first token comes from the
prefill's last logits, each later one from one decoding pass. Timing ``N = 1`` and
``N = K`` (``K`` the family's chunk length, :data:`CHUNK_STEPS`) therefore gives both,
and ``chunk_ms`` is the measured ``N = K`` latency. Every figure of one run comes from
the same process and machine, so compare them as ratios.
"""

import json
import platform
import resource
import statistics
import time
from typing import Any

import click
import numpy as np

from openpi_core.models.config import (
    GEMMA_VARIANTS,
    PALIGEMMA_VOCAB_SIZE,
    GemmaConfig,
    Pi0Config,
    Pi0FASTConfig,
    SiglipConfig,
)
from openpi_core.models.pi0_weights import count_parameters, pi0_fast_weight_schema, pi0_weight_schema
from openpi_core.observation import PI0_FAST_IMAGE_KEYS, PI0_IMAGE_KEYS, Observation
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
"""``tiny`` is the reference-data size, ``mid`` fits a laptop CPU, ``full`` is π0 as
published. π0-FAST takes the same sizes without the action expert."""

FAMILIES = ("pi0", "pi05", "pi0_fast")

FAST_CHUNK_TOKENS = 50
"""Tokens π0-FAST decodes for one DROID action chunk: openpi's ``pi0_fast_droid`` (8
action dimensions, 10 steps, the universal FAST+ tokenizer).

The decoded answer is ``"Action: "`` (a few PaliGemma tokens), the chunk's FAST tokens,
``"|"`` and ``<eos>`` (see :mod:`openpi_core.fast.prompt`). The FAST paper (Pertsch et al.
2025, arXiv:2501.09747, its discussion of inference speed) puts a chunk at "typically
30-60 action tokens", against 10 denoising steps for π0. 50 lies in that range and
includes the four or so framing tokens around the FAST tokens.
"""

CHUNK_STEPS = {"pi0": 10, "pi05": 10, "pi0_fast": FAST_CHUNK_TOKENS}
"""Steps of one chunk: denoising steps for π0/π0.5 (openpi's default), decoded tokens for π0-FAST."""


def bench_config(size: str, family: str, dtype: str, cameras: int = 3) -> Pi0Config | Pi0FASTConfig:
    """The model config of one row. It reads the first ``cameras`` of the family's cameras.

    π0-FAST gets DROID's action shape (8 dimensions, 10 steps) and an ``eos_token``
    outside the vocabulary: greedy decoding with random weights then never stops early,
    so every call decodes exactly the number of tokens asked for.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {list(FAMILIES)}")
    fields = dict(SIZES[size])
    if family == "pi0_fast":
        fields.pop("action_expert", None)
        vocab_size = fields.pop("vocab_size", PALIGEMMA_VOCAB_SIZE)
        return Pi0FASTConfig(
            dtype=dtype,
            vocab_size=vocab_size,
            eos_token=vocab_size,
            action_dim=8,
            action_horizon=10,
            image_keys=PI0_FAST_IMAGE_KEYS[:cameras],
            **fields,
        )
    return Pi0Config(pi05=family == "pi05", dtype=dtype, image_keys=PI0_IMAGE_KEYS[:cameras], **fields)


def weight_schema(config: Pi0Config | Pi0FASTConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape for either family."""
    return pi0_fast_weight_schema(config) if isinstance(config, Pi0FASTConfig) else pi0_weight_schema(config)


def random_params(config: Pi0Config | Pi0FASTConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Small random float32 weights; benchmarks care about shapes, not values."""
    rng = np.random.default_rng(seed)
    return {
        name: (rng.standard_normal(shape, dtype=np.float32) * 0.02) for name, shape in weight_schema(config).items()
    }


def random_observation(config: Pi0Config | Pi0FASTConfig, batch_size: int, cameras: int, seed: int = 1) -> Observation:
    """Random images for the first ``cameras`` of ``config.image_keys`` and a prompt of
    ``config.max_token_len`` tokens, half of them valid. π0-FAST also gets all-zero
    ``token_ar_mask`` (one bidirectional prefix, as at inference before ``"Action: "``)."""
    rng = np.random.default_rng(seed)
    height, width = config.vision.image_size
    keys = config.image_keys[:cameras]
    prompt_length = config.max_token_len
    prompt_shape = (batch_size, prompt_length)
    return Observation(
        images={k: rng.uniform(-1, 1, (batch_size, height, width, 3)).astype(np.float32) for k in keys},
        image_masks={k: np.ones(batch_size, bool) for k in keys},
        state=rng.standard_normal((batch_size, config.action_dim)).astype(np.float32),
        tokenized_prompt=rng.integers(1, config.vocab_size, prompt_shape).astype(np.int32),
        tokenized_prompt_mask=np.tile(np.arange(prompt_length) < prompt_length // 2, (batch_size, 1)),
        token_ar_mask=np.zeros(prompt_shape, np.int32) if isinstance(config, Pi0FASTConfig) else None,
    )


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _passes(family: str, steps: int) -> int:
    """Step-sized passes in a chunk of ``steps``: π0-FAST's first token needs none."""
    return steps - 1 if family == "pi0_fast" else steps


def measure(
    backend: str,
    size: str,
    family: str,
    dtype: str,
    cameras: int,
    batch_size: int,
    repeats: int,
    compile_model: bool = False,
) -> dict[str, Any]:
    """One row of the benchmark: latencies in milliseconds, peak RSS in MiB.

    ``compile_model`` calls the model's ``compile()`` where it has one (torch), so the first
    call includes compilation. π0-FAST rows are checked to decode the full chunk and add
    ``tokens_per_s``.
    """
    config = bench_config(size, family, dtype, cameras)
    model = get_backend(backend).load_model(random_params(config), config)
    compiled = bool(compile_model and hasattr(model, "compile"))
    if compiled:
        model.compile()
    observation = random_observation(config, batch_size, cameras)
    noise = None
    if isinstance(config, Pi0Config):
        noise = np.random.default_rng(2).standard_normal(
            (batch_size, config.action_horizon, config.action_dim), dtype=np.float32
        )
    step_counts = (1, CHUNK_STEPS[family])

    def sample(steps: int) -> None:
        model.sample_actions(observation, noise=noise, num_steps=steps)

    start = time.perf_counter()
    sample(step_counts[1])
    first_call = time.perf_counter() - start
    sample(step_counts[0])
    latency = {steps: _median_seconds(lambda s=steps: sample(s), repeats) for steps in step_counts}
    passes = {steps: _passes(family, steps) for steps in step_counts}
    step = (latency[step_counts[1]] - latency[step_counts[0]]) / (passes[step_counts[1]] - passes[step_counts[0]])
    prefix = latency[step_counts[0]] - passes[step_counts[0]] * step
    row = {
        "backend": backend,
        "size": size,
        "family": family,
        "dtype": dtype,
        "cameras": cameras,
        "batch": batch_size,
        "compiled": compiled,
        "params_m": count_parameters(weight_schema(config)) / 1e6,
        "first_call_ms": first_call * 1e3,
        "chunk_steps": step_counts[1],
        "chunk_ms": latency[step_counts[1]] * 1e3,
        "prefix_ms": prefix * 1e3,
        "step_ms": step * 1e3,
        "step_over_prefix": step / prefix if prefix > 0 else float("nan"),
        "tokens_per_s": None,
        "fast_over_pi0": None,
    }
    if family == "pi0_fast":
        tokens, _ = model.decode(observation, step_counts[1])
        if tokens.shape[1] != step_counts[1]:
            raise click.ClickException(
                f"{backend} π0-FAST stopped after {tokens.shape[1]} of {step_counts[1]} tokens; "
                "its figures would not describe a full chunk"
            )
        row["tokens_per_s"] = 1e3 / row["step_ms"] if row["step_ms"] > 0 else float("nan")
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def add_fast_over_pi0(rows: list[dict[str, Any]]) -> None:
    """Set ``fast_over_pi0`` (π0-FAST chunk_ms / π0 chunk_ms) on every π0-FAST row that
    has a π0 row of the same backend, size, dtype, cameras, batch and compilation."""

    def key(row: dict[str, Any]) -> tuple:
        return tuple(row[c] for c in ("backend", "size", "dtype", "cameras", "batch", "compiled"))

    pi0 = {key(row): row for row in rows if row["family"] == "pi0"}
    for row in rows:
        if row["family"] == "pi0_fast" and key(row) in pi0:
            row["fast_over_pi0"] = row["chunk_ms"] / pi0[key(row)]["chunk_ms"]


COLUMNS = (
    "backend",
    "size",
    "family",
    "dtype",
    "params_m",
    "first_call_ms",
    "chunk_steps",
    "chunk_ms",
    "prefix_ms",
    "step_ms",
    "step_over_prefix",
    "tokens_per_s",
    "fast_over_pi0",
    "peak_rss_mib",
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_rows(rows: list[dict[str, Any]]) -> str:
    cells = [list(COLUMNS)] + [[_cell(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in cells)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@click.command()
@click.option("--backends", default="jax,torch", show_default=True, help="Comma-separated backends.")
@click.option("--size", "sizes", default="tiny", show_default=True, help="Comma-separated: tiny, mid, full.")
@click.option(
    "--family",
    "families",
    default="pi0",
    show_default=True,
    help=f"Comma-separated: {', '.join(FAMILIES)}. A pi0_fast chunk is {FAST_CHUNK_TOKENS} decoded tokens.",
)
@click.option("--dtype", "dtypes", default="float32", show_default=True, help="Comma-separated: float32, bfloat16.")
@click.option("--cameras", default=3, show_default=True, type=click.IntRange(1, 3))
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1))
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1))
@click.option(
    "--compile/--no-compile",
    "compile_",
    default=False,
    show_default=True,
    help="Call model.compile() where the model has it (torch: torch.compile of the denoising or "
    "decoding step); first_call_ms then includes compilation. JAX always compiles with jit.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the rows as JSON.")
def bench(backends, sizes, families, dtypes, cameras, batch_size, repeats, compile_, json_path) -> None:
    """Time sample_actions: whole chunk, prefix, and each denoising step or decoded token.

    With pi0 and pi0_fast in one run, fast_over_pi0 is the π0-FAST chunk over the π0
    chunk of the same backend, size and dtype.
    """
    for size in _split(sizes):
        if size not in SIZES:
            raise click.BadParameter(f"unknown size {size!r}; expected one of {sorted(SIZES)}", param_hint="--size")
    for family in _split(families):
        if family not in FAMILIES:
            raise click.BadParameter(
                f"unknown family {family!r}; expected one of {list(FAMILIES)}", param_hint="--family"
            )
    rows = []
    for backend in _split(backends):
        for size in _split(sizes):
            for family in _split(families):
                for dtype in _split(dtypes):
                    rows.append(measure(backend, size, family, dtype, cameras, batch_size, repeats, compile_))
                    click.echo(format_rows(rows[-1:]).splitlines()[-1], err=True)
    add_fast_over_pi0(rows)
    click.echo(
        f"# {platform.processor() or platform.machine()}, {cameras} cameras, batch {batch_size}, "
        f"median of {repeats}{', torch.compile' if compile_ else ''}; times in ms"
    )
    click.echo(format_rows(rows))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=2)
