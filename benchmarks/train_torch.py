"""Time the torch trainer's step on the tiny π0/π0.5 config: steps/s and peak memory.

Peak memory is the process's peak RSS on the CPU and ``torch.cuda.max_memory_allocated``
on a GPU (RSS is the process's peak so far: rows run in order, so a CPU row reports
at least the rows before it). Each row is one (family, precision, gradient checkpointing, LoRA) setting; the
first ``--warmup`` steps are not timed.

    python benchmarks/train_torch.py --batch 8 --steps 30 [--device cuda] [--threads 1] [--json out.json]
"""

import argparse
import json
import platform
import resource
import sys
import time


def peak_memory_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def bench(family, precision, checkpointing, lora, args) -> dict:
    import torch

    from openpi_backend_torch import TorchBackend
    from openpi_conformance.fixtures import seeded_actions, seeded_observation, seeded_params, tiny_pi0_config
    from openpi_core.models.api import draw_noise, draw_time
    from openpi_core.models.pi0_weights import pi0_weight_schema
    from openpi_core.training.config import GEMMA_300M_LORA, TrainConfig
    from openpi_core.training.lora import init_lora

    config = tiny_pi0_config(family)
    train = TrainConfig(
        exp_name="bench",
        precision=precision,
        gradient_checkpointing=checkpointing,
        llm_lora=GEMMA_300M_LORA if lora else None,
    )
    params = seeded_params(config)
    params.update(init_lora(pi0_weight_schema(config), train, seed=0))
    trainer = TorchBackend().create_trainer(config, train, params, device=args.device)
    device = trainer.world.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    observation, actions = seeded_observation(config, args.batch), seeded_actions(config, args.batch)
    for step in range(args.warmup):
        trainer.step(observation, actions, draw_noise(step, actions.shape), draw_time(step, args.batch), 1e-4)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for step in range(args.steps):
        trainer.step(observation, actions, draw_noise(step, actions.shape), draw_time(step, args.batch), 1e-4)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "family": family,
        "precision": precision,
        "gradient_checkpointing": checkpointing,
        "llm_lora": lora,
        "batch": args.batch,
        "steps_per_s": round(args.steps / seconds, 2),
        "peak_memory_mib": round(peak_memory_mib(device), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: OpenMP spin-waiting slows tiny models on busy CPUs)",
    )
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for family in ("pi0", "pi05"):
        for precision, checkpointing, lora in [
            ("float32", False, False),
            ("bfloat16", False, False),
            ("float32", True, False),
            ("float32", False, True),
        ]:
            row = bench(family, precision, checkpointing, lora, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        header = {
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "note": "peak memory is per process and cumulative across rows on the CPU (ru_maxrss)",
        }
        with open(args.json, "w") as f:
            json.dump({"setup": header, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
