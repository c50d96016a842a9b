"""What serving costs on top of the model: the wire and websocket overhead, and batching's throughput.

(a) Overhead: a robot sends a three-camera 224x224 uint8 observation (plus a [14]
    state and a prompt) over loopback to a server whose stand-in policy validates the
    shapes in ``prepare`` and returns a constant [50, 14] chunk from ``run`` at no
    cost. Reported: the median round trip over ``--requests`` requests, and the
    median cost of packing and unpacking that observation alone.
(b) Throughput: 1, 4 and 16 concurrent robots (one thread and one connection each)
    against a stand-in whose ``run`` costs a fixed 20 ms per call whatever the batch
    size, as a GPU model roughly does, with batching on (``max_batch`` 16) and off.
    With ``--torch-model`` the same runs use the tiny π0 of the reference data
    (random weights, sizes from ``--reference``) on the torch backend instead.

    python benchmarks/serving_overhead.py [--requests 300] [--seconds 3] [--torch-model]

The server runs in a process of its own (this script, with ``--serve``), the robots
are threads of this one; both share the machine's cores, so on a small machine the
figures are a pessimistic bound for a robot on its own computer. Prints markdown tables.
"""

import argparse
import contextlib
import importlib.util
import logging
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from openpi_core import wire
from openpi_core.client import WebsocketClientPolicy
from openpi_core.errors import InputError
from openpi_core.serving import PolicyServer, ServerConfig

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
IMAGE_SHAPE = (224, 224, 3)
STATE_DIM = 14
CHUNK = np.zeros((50, STATE_DIM), np.float32)
FIXED_COST_S = 0.020
CLIENT_COUNTS = (1, 4, 16)


def robot_observation(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": {camera: rng.integers(0, 256, IMAGE_SHAPE, dtype=np.uint8) for camera in CAMERAS},
        "state": rng.standard_normal(STATE_DIM).astype(np.float32),
        "prompt": "pick up the red cube and put it in the bowl",
    }


def validate(observation: dict) -> dict:
    """The shape and dtype checks every policy's ``prepare`` does."""
    images = observation["images"]
    for camera in CAMERAS:
        image = images[camera]
        if image.shape != IMAGE_SHAPE or image.dtype != np.uint8:
            raise InputError(f"images[{camera!r}] should be uint8 {list(IMAGE_SHAPE)}, got {image.dtype} {image.shape}")
    state = observation["state"]
    if state.shape != (STATE_DIM,) or not np.isfinite(state).all():
        raise InputError(f"state should be finite [{STATE_DIM}], got {list(state.shape)}")
    return observation


class ZeroCostPolicy:
    """Validates in ``prepare``; ``run`` answers at once."""

    metadata = {"name": "zero-cost"}

    def prepare(self, observation: dict) -> dict:
        return validate(observation)

    def batch_key(self, prepared: dict) -> int:
        return 0

    def run(self, prepared: list[dict]) -> list[dict]:
        return [{"actions": CHUNK} for _ in prepared]


class FixedCostPolicy(ZeroCostPolicy):
    """Each ``run`` call costs :data:`FIXED_COST_S`, whatever its batch size."""

    metadata = {"name": "fixed-cost"}

    def run(self, prepared: list[dict]) -> list[dict]:
        time.sleep(FIXED_COST_S)
        return super().run(prepared)


class TinyTorchPolicy(ZeroCostPolicy):
    """The reference-size π0 on the torch backend, random weights, one ``sample_actions`` per batch."""

    metadata = {"name": "tiny-pi0-torch"}

    def __init__(self, reference: Path) -> None:
        from openpi_core.models.pi0_weights import pi0_weight_schema
        from openpi_core.observation import image_to_float
        from openpi_core.plugins import get_backend
        from openpi_core.reference import load_reference

        self.config = load_reference(reference).config
        rng = np.random.default_rng(0)
        params = {
            name: rng.standard_normal(shape, dtype=np.float32) * 0.02
            for name, shape in pi0_weight_schema(self.config).items()
        }
        self.model = get_backend("torch").load_model(params, self.config)
        self.tokens = rng.integers(1, self.config.vocab_size, self.config.max_token_len).astype(np.int32)
        self.to_float = image_to_float

    def prepare(self, observation: dict) -> dict:
        validate(observation)
        state = np.zeros(self.config.action_dim, np.float32)
        state[:STATE_DIM] = observation["state"]
        images = {
            key: self.to_float(observation["images"][camera])
            for key, camera in zip(self.config.image_keys, CAMERAS, strict=True)
        }
        return {"images": images, "state": state}

    def run(self, prepared: list[dict]) -> list[dict]:
        from openpi_core.observation import Observation

        batch = len(prepared)
        observation = Observation(
            images={key: np.stack([p["images"][key] for p in prepared]) for key in self.config.image_keys},
            image_masks={key: np.ones(batch, bool) for key in self.config.image_keys},
            state=np.stack([p["state"] for p in prepared]),
            tokenized_prompt=np.tile(self.tokens, (batch, 1)),
            tokenized_prompt_mask=np.ones((batch, self.tokens.size), bool),
        )
        actions = self.model.sample_actions(observation, num_steps=10, seed=0)
        return [{"actions": chunk[:, :STATE_DIM]} for chunk in actions]

    def warmup(self) -> None:
        self.run([self.prepare(robot_observation())])


def median_ms(function: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


@contextlib.contextmanager
def server_process(policy: str, max_batch: int, reference: Path) -> Iterator[int]:
    """A server for ``policy`` in a process of its own (as on a real robot setup); yields its port."""
    command = [
        sys.executable,
        __file__,
        "--serve",
        policy,
        "--max-batch",
        str(max_batch),
        "--reference",
        str(reference),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:
            if match := re.search(r"serving on ws://[^:]+:(\d+)", line):
                break
        else:
            raise RuntimeError(f"the server process exited with {process.wait()}")
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep its pipe drained
        yield int(match.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def batch_totals(port: int) -> tuple[float, float]:
    """``policy.run`` calls and the items they held so far, from the server's ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("openpi_batch_size_"))
    return float(values["openpi_batch_size_count"]), float(values["openpi_batch_size_sum"])


def measure_overhead(requests: int, reference: Path) -> list[tuple[str, str]]:
    observation = robot_observation()
    packed = wire.pack(observation)
    rows = [
        ("observation size", f"{len(packed) / 1e3:.0f} kB"),
        ("pack (median)", f"{median_ms(lambda: wire.pack(observation), requests):.3f} ms"),
        ("unpack (median)", f"{median_ms(lambda: wire.unpack(packed), requests):.3f} ms"),
    ]
    times, server_ms = [], []
    with server_process("zero", 1, reference) as port, WebsocketClientPolicy(port=port) as robot:
        for _ in range(20):
            robot.infer(observation)
        for _ in range(requests):
            start = time.perf_counter()
            answer = robot.infer(observation)
            times.append((time.perf_counter() - start) * 1e3)
            server_ms.append(answer["server_timing"]["prev_total_ms"])
    times.sort()
    rows.append((f"round trip, median of {requests}", f"{statistics.median(times):.2f} ms"))
    rows.append(("round trip, 90th percentile", f"{times[int(0.9 * len(times))]:.2f} ms"))
    rows.append(("of which in the server (arrival to answer sent), median", f"{statistics.median(server_ms):.2f} ms"))
    return rows


def measure_throughput(policy: str, clients: int, max_batch: int, seconds: float, reference: Path) -> dict[str, float]:
    """Requests per second of ``clients`` robots, each asking again as soon as answered."""
    observation = robot_observation()
    with server_process(policy, max_batch, reference) as port:
        robots = [WebsocketClientPolicy(port=port, request_timeout_s=None) for _ in range(clients)]
        for robot in robots:
            robot.infer(observation)
        runs_before, items_before = batch_totals(port)
        barrier = threading.Barrier(clients + 1)
        latencies: list[list[float]] = [[] for _ in range(clients)]
        deadline = time.perf_counter() + 3600.0

        def robot_loop(i: int) -> None:
            barrier.wait()
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                robots[i].infer(observation)
                latencies[i].append(time.perf_counter() - start)

        threads = [threading.Thread(target=robot_loop, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        start = time.perf_counter()
        deadline = start + seconds
        barrier.wait()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        runs_after, items_after = batch_totals(port)
        for robot in robots:
            robot.close()
    done = [latency for per_robot in latencies for latency in per_robot]
    runs = runs_after - runs_before
    return {
        "requests_per_s": len(done) / elapsed,
        "mean_batch": (items_after - items_before) / runs if runs else float("nan"),
        "median_latency_ms": statistics.median(done) * 1e3,
    }


def throughput_table(policy: str, seconds: float, reference: Path) -> str:
    lines = [
        "| robots | batching | requests/s | mean batch | median latency ms |",
        "|---|---|---|---|---|",
    ]
    for clients in CLIENT_COUNTS:
        for label, max_batch in (("off (max_batch 1)", 1), ("on (max_batch 16)", 16)):
            row = measure_throughput(policy, clients, max_batch, seconds, reference)
            lines.append(
                f"| {clients} | {label} | {row['requests_per_s']:.1f} | {row['mean_batch']:.2f} "
                f"| {row['median_latency_ms']:.1f} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


POLICIES: dict[str, Callable[[Path], Any]] = {
    "zero": lambda reference: ZeroCostPolicy(),
    "fixed": lambda reference: FixedCostPolicy(),
    "torch": TinyTorchPolicy,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="round trips for the overhead median (>= 200)")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    parser.add_argument("--torch-model", action="store_true", help="also run (b) with the tiny π0 on torch")
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "reference" / "pi0",
        help="reference directory whose manifest gives the tiny π0's sizes",
    )
    parser.add_argument("--serve", choices=sorted(POLICIES), help=argparse.SUPPRESS)
    parser.add_argument("--max-batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:  # the server process started by server_process()
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        config = ServerConfig(port=0, api_key=None, max_batch=args.max_batch)
        PolicyServer(POLICIES[args.serve](args.reference), config).run()
        return

    print("## (a) Overhead: three 224x224 uint8 cameras, zero-cost policy, loopback\n")
    print("| measure | value |\n|---|---|")
    for name, value in measure_overhead(args.requests, args.reference):
        print(f"| {name} | {value} |")
    print(f"\n## (b) Throughput: run costs a fixed {FIXED_COST_S * 1e3:.0f} ms per call\n")
    print(throughput_table("fixed", args.seconds, args.reference))
    if args.torch_model:
        if importlib.util.find_spec("openpi_backend_torch") is None:
            print("\n(openpi_backend_torch is not installed: no torch model run)")
            return
        print("\n## (b') Throughput: tiny π0 (reference sizes) on torch, CPU, 10 steps\n")
        print(throughput_table("torch", args.seconds, args.reference))


if __name__ == "__main__":
    main()
