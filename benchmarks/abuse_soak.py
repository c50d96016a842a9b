"""An abuse soak against ``pi run serve --demo`` on loopback: does a well-behaved robot
stay served, and does the server's memory stay bounded, while others misbehave?

The server runs as its own process (``python -m openpi_cli run serve --demo``). A good
robot first measures its round trip alone, then keeps asking while, at the same time:

- pipelining: connections each send frames of almost ``max_message_bytes`` without
  reading any answer, then hang up;
- abandoned requests: robots send one observation each and hang up at once;
- malformed frames: garbage, deep nesting, huge dtype strings, empty images, a state of
  3e38, thousands of junk keys, text frames; each must get a one-line error and 1008;
- slow clients: robots that send an observation and never read the answer;
- a connection flood: more connections than ``--max-connections``.

The good robot runs in a process of its own (so the attackers' threads do not hold its
interpreter lock); the attacks run one kind at a time, in bursts ``--pause-s`` apart for
``--phase-s`` seconds (a burst of abandoned requests is 20 robots at once), and the
whole series ``--rounds`` times. It prints the
attacks tried, how the server answered them, the server's resident memory before, at the
peak, after each round and at the end, and the good robot's p50/p99 round trip during
each kind of attack against alone. Every loop is bounded in count and time, and only 127.0.0.1 is contacted.

    python benchmarks/abuse_soak.py [--rounds 3] [--backend jax] [--json results.json]
"""

import argparse
import contextlib
import json
import multiprocessing
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable

import msgpack
import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from openpi_core import wire
from openpi_core.client import WebsocketClientPolicy
from openpi_core.client.websocket_client import ServerError

HOST = "127.0.0.1"
TIMEOUT_S = 30.0
MAX_CONNECTIONS = 32


def observation(seed: int = 0) -> dict:
    """An ALOHA-sim observation as openpi's example client sends it (one 224x224 camera)."""
    rng = np.random.default_rng(seed)
    return {
        "images": {"cam_high": rng.integers(0, 256, (3, 224, 224), dtype=np.uint8)},
        "state": rng.standard_normal(14).astype(np.float32) * 0.1,
    }


def malformed_frames() -> dict[str, bytes | str]:
    nested: dict = {"leaf": 1}
    for _ in range(1000):
        nested = {"a": nested}
    good = observation()
    return {
        "garbage": b"\xc1\xff\x00garbage",
        "deep nesting": msgpack.packb(nested),
        "huge dtype string": msgpack.packb(
            {"state": {b"__ndarray__": True, b"data": b"", b"dtype": "f" * 100_000, b"shape": [0]}}
        ),
        "empty image": wire.pack({**good, "images": {"cam_high": np.zeros((3, 0, 0), np.uint8)}}),
        "state 3e38": wire.pack({**good, "state": np.full(14, 3e38, np.float32)}),
        "state 1e300 (float64)": wire.pack({**good, "state": np.full(14, 1e300)}),
        "junk keys": wire.pack({f"junk_{i}_{'x' * 24}": 0 for i in range(60_000)}),
        "text frame": "hello",
        "not a map": wire.pack([1, 2, 3]),
        "NaN state": wire.pack({**good, "state": np.full(14, np.nan, np.float32)}),
    }


class Soak:
    def __init__(self, port: int, max_message_bytes: int) -> None:
        self.uri = f"ws://{HOST}:{port}"
        self.max_message_bytes = max_message_bytes
        self.tried: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.frame = wire.pack(observation())

    def count(self, attack: str, outcome: str) -> None:
        with self.lock:
            self.tried[attack] += 1
            self.outcomes[f"{attack}: {outcome}"] += 1

    def open(self) -> ClientConnection:
        connection = connect(self.uri, compression=None, max_size=None, open_timeout=TIMEOUT_S).__enter__()
        connection.recv(timeout=TIMEOUT_S)  # metadata
        return connection

    def pipelining(self, connections: int = 6, frames: int = 15) -> None:
        padding = self.max_message_bytes - len(self.frame) - 1024
        big = wire.pack({**observation(), "padding": np.zeros(padding, np.uint8)})

        def one() -> None:
            with contextlib.suppress(OSError, ConnectionClosed, InvalidStatus, TimeoutError):
                connection = self.open()
                sent = 0
                for _ in range(frames):
                    sender = threading.Thread(target=connection.send, args=(big,), daemon=True)
                    sender.start()
                    sender.join(1.0)  # once the server stops reading, sending blocks, as it should
                    if sender.is_alive():
                        break
                    sent += 1
                connection.socket.shutdown(socket.SHUT_RDWR)  # hang up without a closing handshake
                self.count("pipelining", f"{sent} of {frames} frames accepted before the server stopped reading")

        run_threads(one, connections)

    def abandoned(self, robots: int = 20) -> None:
        def one() -> None:
            with contextlib.suppress(OSError, ConnectionClosed, InvalidStatus, TimeoutError), self.open() as connection:
                connection.send(self.frame)
            self.count("abandoned request", "sent, then hung up")

        run_threads(one, robots)

    def malformed(self) -> None:
        for name, frame in malformed_frames().items():
            try:
                with self.open() as connection:
                    connection.send(frame)
                    text = connection.recv(timeout=TIMEOUT_S)
                    with contextlib.suppress(ConnectionClosed, TimeoutError):
                        connection.recv(timeout=TIMEOUT_S)
                    code = connection.close_code
                ok = isinstance(text, str) and "\n" not in text and len(text.encode()) <= 1024
                self.count("malformed", f"{name}: {'one-line error' if ok else 'UNEXPECTED ANSWER'}, close {code}")
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                self.count("malformed", f"{name}: closed {code}")

    def slow(self, robots: int = 4, hold_s: float = 5.0) -> None:
        def one() -> None:
            with contextlib.suppress(OSError, ConnectionClosed, InvalidStatus, TimeoutError), self.open() as connection:
                connection.send(self.frame)
                time.sleep(hold_s)  # never reads the answer
            self.count("slow client", f"sent, did not read for {hold_s:.0f} s")

        run_threads(one, robots)

    def flood(self, extra: int = 8) -> None:
        opened: list[ClientConnection] = []
        try:
            for _ in range(MAX_CONNECTIONS + extra):
                try:
                    opened.append(self.open())
                    self.count("connection flood", "admitted")
                except InvalidStatus as refused:
                    self.count("connection flood", f"refused HTTP {refused.response.status_code}")
                except (OSError, TimeoutError) as error:
                    self.count("connection flood", f"failed {type(error).__name__}")
            time.sleep(1.0)
        finally:
            for connection in opened:
                connection.close()


def run_threads(target: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=target, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S * 2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wait_ready(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=2).status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError("the server did not get ready in 300 s")


def latencies(
    client: WebsocketClientPolicy, count: int, stop: threading.Event | None = None, refusals: Counter | None = None
) -> list[float]:
    """Round trips in ms; a refusal (busy, 1013) is counted in ``refusals`` and the robot asks again."""
    observed = []
    for index in range(count):
        if stop is not None and stop.is_set():
            break
        start = time.perf_counter()
        try:
            actions = client.infer(observation(index))["actions"]
        except ServerError as error:
            if refusals is None:
                raise
            refusals[f"close {error.code}: {str(error)[:60]}"] += 1
            continue
        assert np.isfinite(actions).all()
        observed.append((time.perf_counter() - start) * 1000.0)
    return observed


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "n": len(ordered),
    }


def good_robot(port: int, stop, results) -> None:
    """A well-behaved robot in a process of its own: ``(finish time, round trip ms)`` per answer."""
    client = WebsocketClientPolicy(HOST, port, wait_timeout_s=60)
    refusals: Counter[str] = Counter()
    latencies(client, 10)  # warm
    timeline = []
    index = 0
    while not stop.is_set():
        start = time.perf_counter()
        try:
            actions = client.infer(observation(index))["actions"]
        except ServerError as error:
            refusals[f"close {error.code}: {str(error)[:60]}"] += 1
            continue
        assert np.isfinite(actions).all()
        timeline.append((time.monotonic(), (time.perf_counter() - start) * 1000.0))
        index += 1
    client.close()
    results.put((timeline, dict(refusals)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="how often every attack is repeated")
    parser.add_argument("--alone-s", type=float, default=10.0, help="how long the good robot is measured alone")
    parser.add_argument("--phase-s", type=float, default=8.0, help="how long each kind of attack goes on per round")
    parser.add_argument("--pause-s", type=float, default=1.0, help="the pause between two bursts of one attack")
    parser.add_argument("--settle-s", type=float, default=5.0, help="the pause between two kinds of attack")
    parser.add_argument(
        "--attacks", type=lambda text: text.split(","), default=[], help="only these attacks (comma-separated names)"
    )
    parser.add_argument("--backend", default=None, help="the server's backend (default: pi's default)")
    parser.add_argument("--json", dest="json_path", help="also write the results here")
    args = parser.parse_args()

    port = free_port()
    command = [sys.executable, "-m", "openpi_cli", "run", "serve", "--demo", "--port", str(port)]
    command += ["--max-connections", str(MAX_CONNECTIONS)]
    if args.backend:
        command += ["--backend", args.backend]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    context = multiprocessing.get_context("spawn")
    stop, queue = context.Event(), context.Queue()
    robot = context.Process(target=good_robot, args=(port, stop, queue))
    windows: list[tuple[str, float, float]] = []
    rss_by_round = []
    try:
        wait_ready(port, server)
        robot.start()
        time.sleep(2.0)  # connected and warm
        start = time.monotonic()
        time.sleep(args.alone_s)
        windows.append(("alone", start, time.monotonic()))
        rss_before = rss_mib(server.pid)
        peak = [rss_before]
        watching = threading.Event()

        def watch_memory() -> None:
            while not watching.is_set():
                peak[0] = max(peak[0], rss_mib(server.pid))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_memory, daemon=True)
        watcher.start()
        soak = Soak(port, wire.DEFAULT_MAX_MESSAGE_BYTES)
        phases = {
            "pipelining": soak.pipelining,
            "abandoned requests": soak.abandoned,
            "malformed frames": soak.malformed,
            "slow clients": soak.slow,
            "connection flood": soak.flood,
        }
        unknown = set(args.attacks) - set(phases)
        if unknown:
            raise SystemExit(f"unknown attacks {sorted(unknown)}; choose from {sorted(phases)}")
        for _ in range(args.rounds):
            for name, attack in phases.items():
                if args.attacks and name not in args.attacks:
                    continue
                start = time.monotonic()
                while time.monotonic() - start < args.phase_s:
                    attack()
                    time.sleep(args.pause_s)
                windows.append((name, start, time.monotonic()))
                time.sleep(args.settle_s)  # the backlog of one attack is not charged to the next
            time.sleep(2.0)
            rss_by_round.append(round(rss_mib(server.pid), 1))
        watching.set()
        stop.set()
        timeline, refusals = queue.get(timeout=TIMEOUT_S * 4)
        robot.join(TIMEOUT_S)
        rss_after = rss_mib(server.pid)
    finally:
        stop.set()
        server.terminate()
        server.wait(60)
        if robot.is_alive():
            robot.terminate()

    by_phase: dict[str, list[float]] = {}
    for name, begin, end in windows:
        by_phase.setdefault(name, []).extend(ms for at, ms in timeline if begin <= at <= end)
    alone_p50 = statistics.median(by_phase["alone"])
    results = {
        "attacks_tried": sum(soak.tried.values()),
        "by_attack": dict(soak.tried),
        "outcomes": dict(sorted(soak.outcomes.items())),
        "server_rss_mib": {
            "before": round(rss_before, 1),
            "peak": round(peak[0], 1),
            "after_each_round": rss_by_round,
            "after": round(rss_after, 1),
        },
        "good_robot": {
            name: {**percentiles(values), "p50_over_alone": round(statistics.median(values) / alone_p50, 2)}
            for name, values in by_phase.items()
            if values
        },
        "good_robot_refusals": refusals,
        "server_exit_code": server.returncode,
    }
    print(json.dumps(results, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as out:
            json.dump(results, out, indent=2)
    return 0 if server.returncode == 0 and not refusals else 1


if __name__ == "__main__":
    sys.exit(main())
